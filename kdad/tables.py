"""Paper-style tables from the tidy result files (DESIGN.md, "Results").

Reads ``results/runs.csv``, ``results/defects.csv`` and ``results/localization.csv`` (any may be
missing or hold only some datasets) and writes, for every table whose data exists, ``<name>.md``,
``<name>.tex`` and ``<name>.csv`` under the output folder:

==============================  =============================================================
``main_<dataset>_<protocol>``   image AUROC per category × method (main entries), + "mean" row
``main_<d>_<p>_pixel``          pixel AUROC / AU-PRO / the paper's pixel metric, when computed
``paper_comparison``            the paper's MKD numbers beside ours, Δ = ours − paper, 95 % CI
``ablation_<dataset>``          MKD variants × protocol, Δ and Wilcoxon p against ``mkd``
``localization_<dataset>``      the paper's Table 1 shape: localisation method × Gaussian blur
``defects_<dataset>``           per defect kind × method
``ranks``                       average ranks, Friedman p-value, Nemenyi critical difference
``speed``                       training time, throughput and memory per method
==============================  =============================================================

plus ``README_TABLE.md`` (compact dataset-level table for the README) and ``index.md``.

Conventions
-----------
* AUROC-type values are fractions in the result files and percentages (1 decimal) in tables.
* A cell is "mean ± std" over seeds (sample std, ddof = 1); a single seed shows the mean alone and the
  caption says so.  A method that was not run on a row shows "–": absent, never zero.
* A dataset-level "mean" is formed per seed over the categories every seed ran, then described over
  seeds (:func:`kdad.stats.category_mean_per_seed`); "†" marks a mean over fewer categories than the
  table's rows.
* "Main" entries are the rows whose ``variant`` equals their ``method`` (the config's main entry of a
  method); other variants are ablations and appear only in ``ablation_<dataset>`` and the figures.
* The CSV of a table holds the numbers (mean, std, n, …) in tidy form; mean rows live only here in
  report/, never in results/.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kdad.stats import (
    bootstrap_ci,
    category_mean_per_seed,
    friedman_nemenyi,
    mean_std,
    wilcoxon_vs_reference,
)

__all__ = [
    "METRIC_LABELS",
    "PAPER_NUMBERS",
    "Results",
    "Table",
    "load_paper_numbers",
    "load_results",
    "main_rows",
    "rank_analysis",
    "render_all",
    "render_report",
    "write_index",
    "write_table",
]

PAPER_NUMBERS = Path(__file__).parent / "reference" / "paper_numbers.csv"

# canonical order of datasets and protocols in the report; unknown names follow, sorted
DATASET_ORDER = ("mnist", "mnist5k", "fashion_mnist", "cifar10", "mvtec_ad", "textures", "oct",
                 "head_ct", "brain_mri")
DATASET_LABELS = {"mnist": "MNIST", "mnist5k": "MNIST-5k (subset)", "fashion_mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10", "mvtec_ad": "MVTec AD", "textures": "Textures (synthetic defects)",
                  "oct": "Retinal OCT", "head_ct": "HeadCT", "brain_mri": "BrainMRI"}
PROTOCOL_ORDER = ("one-class", "multi-class")
LOCALIZATION_ORDER = ("gradients", "smooth_grad", "guided_backprop", "integrated_gradients")
METRIC_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AU-PRO",
                 "paper_pixel_metric": "paper pixel metric"}
PIXEL_METRICS = ("pixel_auroc", "aupro", "paper_pixel_metric")

# number of categories behind the paper's dataset means, to say how much of it a run covered
PAPER_CATEGORY_COUNT = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "mvtec_ad": 15}

REQUIRED = {
    "runs": ("dataset", "protocol", "category", "method", "variant", "seed", "image_auroc"),
    "defects": ("dataset", "protocol", "category", "defect", "method", "variant", "seed", "image_auroc"),
    "localization": ("dataset", "protocol", "category", "method", "variant", "seed", "localization",
                     "blur"),
}
DASH = "–"


# --------------------------------------------------------------------------------------- loading
@dataclass
class Results:
    """The tidy result files; a file that does not exist (or has no rows) is ``None``."""

    runs: pd.DataFrame | None = None
    defects: pd.DataFrame | None = None
    localization: pd.DataFrame | None = None


def _read(path: Path, kind: str) -> pd.DataFrame | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    df = pd.read_csv(path, dtype={"category": str, "defect": str})
    if df.empty:
        return None
    missing = [c for c in REQUIRED[kind] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected at least {list(REQUIRED[kind])}")
    return df


def load_results(results_dir: Path | str) -> Results:
    """Read the result files that exist under ``results_dir``; check their required columns."""
    d = Path(results_dir)
    return Results(runs=_read(d / "runs.csv", "runs"), defects=_read(d / "defects.csv", "defects"),
                   localization=_read(d / "localization.csv", "localization"))


def load_paper_numbers(path: Path | str = PAPER_NUMBERS) -> pd.DataFrame:
    """The paper's numbers (``kdad/reference/paper_numbers.csv``, filled from PAPER.md only).

    Columns: dataset, protocol, category ("mean" = dataset mean), method, metric, value (percent;
    empty where the sources give no single number, see ``note``), source, verified (yes/no),
    localization and blur (set only for the rows of the paper's Table 1, which compare localisation
    methods without / with Gaussian blur; empty otherwise), note.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["value"] = pd.to_numeric(df["value"].replace("", np.nan))
    return df


def _as_bool(series: pd.Series) -> pd.Series:
    if series.dtype == bool:
        return series
    mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    return series.astype(str).str.strip().str.lower().map(mapping)


ABLATION_PREFIX = "mkd-"


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the compared methods: every variant except MKD's ablations (``mkd-…``), so a
    baseline's feature variant (``ocsvm-expert``) is a column of its own."""
    return df[~df["variant"].astype(str).str.startswith(ABLATION_PREFIX)]


# --------------------------------------------------------------------------------------- ordering
def _natural_key(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text)))


def _ordered(values: Iterable[str], canonical: Sequence[str] = ()) -> list[str]:
    values = list(dict.fromkeys(str(v) for v in values))
    first = [v for v in canonical if v in values]
    return first + sorted((v for v in values if v not in canonical), key=_natural_key)


def _variant_order(variants: Iterable[str]) -> list[str]:
    """``mkd`` first, then other MKD variants, then the rest, each alphabetically."""
    vs = list(dict.fromkeys(str(v) for v in variants))
    return sorted(vs, key=lambda v: (v != "mkd", not v.startswith("mkd"), _natural_key(v)))


# --------------------------------------------------------------------------------------- formatting
def fmt_pct(x: float, digits: int = 1) -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_mean_std(mean: float, std: float, n: int | None = None) -> str:
    """``"92.5 ± 3.5"``; the mean alone when there is one value (``n == 1`` or std NaN)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    if n == 1 or std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f}"


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _seed_phrase(seeds: Iterable) -> str:
    s = sorted({int(x) for x in seeds if pd.notna(x)})
    return f"{len(s)} seed{'s' if len(s) != 1 else ''} ({', '.join(map(str, s))})"


def run_caption(rows: pd.DataFrame) -> str:
    """What was run, from the rows themselves: seeds, epochs and expert per variant, size, data.

    E.g. ``"2 seeds (0, 1); mkd: 15 epochs, expert vgg16; 32×32; ≤1000 training images per run"``.
    """
    parts = []
    seeds_by_variant = {v: tuple(sorted(set(g["seed"].dropna().astype(int))))
                        for v, g in rows.groupby("variant")}
    if len(set(seeds_by_variant.values())) <= 1:
        parts.append(_seed_phrase(rows["seed"]))
    else:
        by_seeds: dict[tuple, list[str]] = {}
        for v in _variant_order(seeds_by_variant):
            by_seeds.setdefault(seeds_by_variant[v], []).append(v)
        parts.append("; ".join(f"{_seed_phrase(s)} for {', '.join(vs)}" for s, vs in by_seeds.items()))
    by_bits: dict[str, list[str]] = {}
    for v in _variant_order(rows["variant"].unique()):
        g = rows[rows["variant"] == v]
        bits = []
        if "epochs" in g:
            ep = sorted({int(e) for e in pd.to_numeric(g["epochs"], errors="coerce").dropna() if e > 0})
            if ep:
                bits.append(f"{'/'.join(map(str, ep))} epochs")
        if "expert" in g:
            ex = sorted({str(e) for e in g["expert"].dropna() if str(e).strip()})
            if ex:
                bits.append("expert " + "/".join(ex))
        if bits:
            by_bits.setdefault(", ".join(bits), []).append(v)
    for bits, vs in by_bits.items():
        parts.append(f"{', '.join(vs)}: {bits}")
    if "image_size" in rows:
        sizes = sorted({int(s) for s in pd.to_numeric(rows["image_size"], errors="coerce").dropna()})
        if sizes:
            parts.append(", ".join(f"{s}×{s}" for s in sizes))
    if "train_images" in rows:
        n = pd.to_numeric(rows["train_images"], errors="coerce").dropna()
        if len(n):
            lo, hi = int(n.min()), int(n.max())
            parts.append(f"{hi} training images per run" if lo == hi else f"≤{hi} training images per run")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------- writing
@dataclass
class Table:
    """One rendered table.

    ``frame`` holds display strings (its index levels become the leading columns), ``bold`` a
    same-shaped boolean frame (or None), ``data`` the tidy numbers written to the CSV.
    """

    name: str
    caption: str
    frame: pd.DataFrame
    data: pd.DataFrame
    bold: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


_TEX_REPLACE = [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"),
                ("^", r"\textasciicircum{}")]
_TEX_UNICODE = {"±": r"$\pm$", "Δ": r"$\Delta$", "×": r"$\times$", "≤": r"$\leq$", "≥": r"$\geq$",
                "–": "--", "−": "$-$", "≈": r"$\approx$", "σ": r"$\sigma$", "†": r"$^\dagger$",
                "λ": r"$\lambda$", "α": r"$\alpha$", "χ": r"$\chi$", "²": r"$^2$", "→": r"$\to$",
                "·": r"$\cdot$"}


def tex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        rep = next((r for c, r in _TEX_REPLACE if c == ch), None)
        out.append(rep if rep is not None else _TEX_UNICODE.get(ch, ch))
    return "".join(out)


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


def _flat(table: Table) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    frame = table.frame
    names = [str(n) if n is not None else "" for n in frame.index.names]
    header = names + [str(c) for c in frame.columns]
    rows, bold = [], []
    for i, (idx, row) in enumerate(frame.iterrows()):
        idx = idx if isinstance(idx, tuple) else (idx,)
        rows.append([str(x) for x in idx] + [str(x) for x in row.tolist()])
        b = table.bold.iloc[i].tolist() if table.bold is not None else [False] * len(row)
        bold.append([False] * len(idx) + [bool(x) for x in b])
    return header, rows, bold


def _markdown(table: Table) -> str:
    header, rows, bold = _flat(table)
    lines = [f"**{_md_escape(table.name)}** — {table.caption}", "",
             "| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(["---"] * len(header[:len(table.frame.index.names)])
                            + ["--:"] * (len(header) - len(table.frame.index.names))) + "|"]
    for cells, b in zip(rows, bold):
        lines.append("| " + " | ".join(f"**{_md_escape(c)}**" if bb and c != DASH else _md_escape(c)
                                       for c, bb in zip(cells, b)) + " |")
    if table.notes:
        lines.append("")
        lines.extend(f"- {n}" for n in table.notes)
    return "\n".join(lines) + "\n"


def _latex(table: Table) -> str:
    header, rows, bold = _flat(table)
    n_idx = len(table.frame.index.names)
    spec = "l" * n_idx + "r" * (len(header) - n_idx)
    lines = ["% generated by kdad.tables; do not edit", r"\begin{table}[t]", r"\centering",
             r"\caption{" + tex_escape(table.caption) + "}",
             r"\label{tab:" + table.name.replace("_", "-") + "}",
             r"\begin{tabular}{" + spec + "}", r"\hline",
             " & ".join(tex_escape(h) for h in header) + r" \\", r"\hline"]
    for cells, b in zip(rows, bold):
        lines.append(" & ".join(r"\textbf{" + tex_escape(c) + "}" if bb and c != DASH else tex_escape(c)
                                for c, bb in zip(cells, b)) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    for n in table.notes:
        lines.append(r"\par\footnotesize " + tex_escape(n))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, out_dir: Path) -> list[Path]:
    """Write ``<name>.md``, ``<name>.tex`` and ``<name>.csv``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, tex, csv = (out_dir / f"{table.name}{ext}" for ext in (".md", ".tex", ".csv"))
    md.write_text(_markdown(table), encoding="utf-8")
    tex.write_text(_latex(table), encoding="utf-8")
    table.data.to_csv(csv, index=False)
    return [md, tex, csv]


# --------------------------------------------------------------------------------------- helpers
def _bold_best(means: pd.DataFrame, groups: Sequence[Sequence[str]] | None = None) -> pd.DataFrame:
    """True where a cell's (rounded) mean is the row's best within its column group (higher wins).

    Ties at the displayed precision are all bold; a group with fewer than two values bolds nothing.
    """
    bold = pd.DataFrame(False, index=means.index, columns=means.columns)
    groups = groups or [list(means.columns)]
    rounded = means.astype(float).round(1)
    for cols in groups:
        sub = rounded[list(cols)]
        for idx, row in sub.iterrows():
            vals = row.dropna()
            if len(vals) >= 2:
                bold.loc[idx, vals.index[vals == vals.max()]] = True
    return bold


def _summaries(df: pd.DataFrame, value: str, col: str) -> pd.DataFrame:
    """Per category × ``col`` and a "mean" row per ``col``: mean, std, n (seeds), in percent."""
    per_cat = mean_std(df, ["category", col], value)
    per_cat["n_categories"] = 1
    sl = category_mean_per_seed(df, value, [col])
    mean_row = mean_std(sl, [col], value)
    ncat = sl.groupby(col)["n_categories"].first()
    mean_row["n_categories"] = mean_row[col].map(ncat)
    mean_row["category"] = "mean"
    out = pd.concat([per_cat, mean_row], ignore_index=True)
    out["mean"] = out["mean"].astype(float) * 100
    out["std"] = out["std"].astype(float) * 100
    out["metric"] = value
    return out


def _matrix(df: pd.DataFrame, metrics: Sequence[str], variants: Sequence[str], categories: Sequence[str],
            single_label: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Category × (metric, variant) display, bold mask, tidy numbers, notes."""
    display, means, groups, tidy, notes = {}, {}, [], [], []
    rows = list(categories) + ["mean"]
    dagger = False
    for metric in metrics:
        s = _summaries(df, metric, "variant")
        if s.empty:
            continue
        tidy.append(s)
        group = []
        for v in variants:
            label = v if single_label else f"{METRIC_LABELS.get(metric, metric)}: {v}"
            sv = s[s["variant"] == v].set_index("category")
            cells, vals = [], []
            for r in rows:
                if r in sv.index:
                    rec = sv.loc[r]
                    txt = fmt_mean_std(rec["mean"], rec["std"], int(rec["n"]))
                    if r == "mean" and int(rec["n_categories"]) < len(categories):
                        txt += " †"
                        dagger = True
                    cells.append(txt)
                    vals.append(rec["mean"])
                else:
                    cells.append(DASH)
                    vals.append(np.nan)
            if all(c == DASH for c in cells):
                continue
            display[label], means[label] = cells, vals
            group.append(label)
        if group:
            groups.append(group)
    frame = pd.DataFrame(display, index=pd.Index(rows, name="category"))
    mean_frame = pd.DataFrame(means, index=frame.index)
    bold = _bold_best(mean_frame, groups) if groups else pd.DataFrame(False, index=frame.index,
                                                                      columns=frame.columns)
    if dagger:
        notes.append(f"† mean over fewer than the {len(categories)} categories of this table "
                     "(only categories every seed ran enter the mean).")
    data = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame()
    return frame, bold, data, notes


def _spread_note(rows: pd.DataFrame) -> str:
    n = rows.groupby(["category", "variant"])["seed"].nunique()
    if len(n) and n.max() <= 1:
        return "single seed: no spread can be shown"
    return "mean ± std over seeds"


# --------------------------------------------------------------------------------------- tables
def main_tables(runs: pd.DataFrame) -> list[Table]:
    """``main_<dataset>_<protocol>`` (image AUROC) and ``..._pixel`` (pixel metrics, if any)."""
    tables = []
    main = main_rows(runs)
    for dataset in _ordered(main["dataset"], DATASET_ORDER):
        for protocol in _ordered(main.loc[main["dataset"] == dataset, "protocol"], PROTOCOL_ORDER):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            variants = _variant_order(rows["variant"].unique())
            categories = _ordered(rows["category"].unique())
            name = f"main_{dataset}_{protocol.replace('-', '_')}"
            what = run_caption(rows)
            label = DATASET_LABELS.get(dataset, dataset)
            frame, bold, data, notes = _matrix(rows, ["image_auroc"], variants, categories, True)
            if len(data) and (data["n"] == 1).any() and (data["n"] > 1).any():
                notes.append("A value without ± comes from a single seed.")
            if frame.shape[1]:
                data.insert(0, "protocol", protocol)
                data.insert(0, "dataset", dataset)
                tables.append(Table(name, f"{label}, {protocol}: image AUROC (%), {_spread_note(rows)}; "
                                          f"best per row in bold. Run: {what}.", frame, data, bold, notes))
            pix = [m for m in PIXEL_METRICS if m in rows and rows[m].notna().any()]
            if pix:
                frame, bold, data, notes = _matrix(rows, pix, variants, categories, False)
                if frame.shape[1]:
                    data.insert(0, "protocol", protocol)
                    data.insert(0, "dataset", dataset)
                    notes = notes + ["pixel AUROC and AU-PRO (FPR ≤ 0.3) are the standard MVTec metrics "
                                     "over all test images; the paper pixel metric is the paper's legacy "
                                     "ROC-AUC on defective images only (PAPER.md)."]
                    tables.append(Table(name + "_pixel", f"{label}, {protocol}: localisation metrics (%), "
                                        f"{_spread_note(rows)}; best per row and metric in bold. Run: {what}.",
                                        frame, data, bold, notes))
    return tables


def _ours(values: pd.Series) -> dict:
    v = values.dropna().to_numpy(dtype=float) * 100
    lo, hi = bootstrap_ci(v)
    return {"ours_mean": float(v.mean()) if v.size else math.nan,
            "ours_std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "ci_low": lo, "ci_high": hi, "n_seeds": int(v.size)}


def paper_comparison(results: Results, paper: pd.DataFrame) -> Table | None:
    """The paper's MKD numbers beside ours (method ``mkd``, variant ``mkd``, one-class).

    Δ = ours − paper in percentage points; the 95 % interval is a percentile bootstrap of our mean
    over seeds (per-seed category means for "mean" rows).  Rows with a ``localization`` compare
    against localization.csv (the paper's Table 1), the others against runs.csv.
    """
    recs = []
    runs = results.runs
    loc = results.localization
    for _, p in paper.iterrows():
        if p["method"] != "mkd":
            continue
        if p["localization"]:
            if loc is None:
                continue
            src = loc[(loc["method"] == "mkd") & (loc["variant"] == "mkd") & (loc["dataset"] == p["dataset"])
                      & (loc["protocol"] == p["protocol"]) & (loc["localization"] == p["localization"])
                      & (_as_bool(loc["blur"]) == (p["blur"] == "yes"))]
        else:
            if runs is None:
                continue
            src = runs[(runs["method"] == "mkd") & (runs["variant"] == "mkd") & (runs["dataset"] == p["dataset"])
                       & (runs["protocol"] == p["protocol"])]
        metric = p["metric"]
        if src.empty or metric not in src or src[metric].isna().all():
            continue
        ncat = math.nan
        if p["category"] == "mean":
            sl = category_mean_per_seed(src, metric, [])
            if sl.empty:
                continue
            ours = _ours(sl[metric])
            ncat = int(sl["n_categories"].iloc[0])
        else:
            sel = src[src["category"] == p["category"]]
            if sel[metric].isna().all():
                continue
            ours = _ours(sel[metric])
        paper_value = p["value"]
        expert = "/".join(sorted({str(e) for e in src.get("expert", pd.Series(dtype=str)).dropna()}))
        recs.append({"dataset": p["dataset"], "protocol": p["protocol"], "category": p["category"],
                     "metric": metric, "localization": p["localization"], "blur": p["blur"],
                     "paper": paper_value, **ours,
                     "delta": ours["ours_mean"] - paper_value if pd.notna(paper_value) else math.nan,
                     "n_categories": ncat, "expert": expert, "verified": p["verified"],
                     "source": p["source"], "paper_note": p["note"]})
    if not recs:
        return None
    data = pd.DataFrame(recs)
    disp = []
    for _, r in data.iterrows():
        paper_txt = fmt_pct(r["paper"], 2) if pd.notna(r["paper"]) else (r["paper_note"] or DASH)
        if r["verified"] != "yes":
            paper_txt += " (unverified)"
        cat = r["category"]
        if cat == "mean" and pd.notna(r["n_categories"]):
            total = PAPER_CATEGORY_COUNT.get(r["dataset"])
            cat = f"mean ({int(r['n_categories'])}/{total} cat.)" if total else f"mean ({int(r['n_categories'])} cat.)"
        metric = METRIC_LABELS.get(r["metric"], r["metric"])
        if r["localization"]:
            metric += f" [{r['localization']}, {'Gaussian' if r['blur'] == 'yes' else 'no blur'}]"
        disp.append({"dataset": r["dataset"], "category": cat, "metric": metric, "paper": paper_txt,
                     "ours": fmt_mean_std(r["ours_mean"], r["ours_std"], r["n_seeds"]),
                     "Δ": (f"{r['delta']:+.1f}" if pd.notna(r["delta"]) else DASH),
                     "95% CI (ours)": (f"[{r['ci_low']:.1f}, {r['ci_high']:.1f}]" if r["n_seeds"] > 1 else DASH),
                     "seeds": str(r["n_seeds"]), "expert": r["expert"] or DASH})
    frame = pd.DataFrame(disp).set_index(["dataset", "category", "metric"])
    notes = ["Δ = ours − paper (percentage points). 95% CI: percentile bootstrap of our mean over seeds "
             "(2000 resamples, seed 0); with few seeds it reflects seed noise only and is optimistic.",
             "mean (n/N cat.): our mean covers n of the paper's N categories; only n = N compares like "
             "with like.",
             "(unverified): the paper number is a widely cited value not checked against the paper (PAPER.md).",
             "Our runs may differ from the paper in expert, epochs and image size (see the main tables' "
             "captions); a gap is not by itself a failed reproduction."]
    return Table("paper_comparison", "MKD (one-class): numbers reported in the paper beside ours.",
                 frame, data, None, notes)


def ablation_tables(runs: pd.DataFrame) -> list[Table]:
    """``ablation_<dataset>``: MKD variants × protocol, Δ and Wilcoxon p against variant ``mkd``.

    AUROC = per-seed mean over categories, mean ± std over seeds.  Δ = mean of the paired
    differences (variant − mkd) over categories × seeds; p = two-sided Wilcoxon signed-rank test on
    the same pairs (:func:`kdad.stats.wilcoxon_vs_reference`).
    """
    tables = []
    mkd = runs[runs["variant"].astype(str).str.startswith("mkd")]
    for dataset in _ordered(mkd["dataset"], DATASET_ORDER):
        d = mkd[mkd["dataset"] == dataset]
        if d["variant"].nunique() < 2 or "mkd" not in set(d["variant"]):
            continue
        variants = _variant_order(d["variant"].unique())
        protocols = _ordered(d["protocol"], PROTOCOL_ORDER)
        recs, display, means, notes = [], {}, {}, set()
        for protocol in protocols:
            g = d[d["protocol"] == protocol]
            sl = category_mean_per_seed(g, "image_auroc", ["variant"])
            summ = mean_std(sl, ["variant"], "image_auroc").set_index("variant")
            ncat = sl.groupby("variant")["n_categories"].first()
            test = (wilcoxon_vs_reference(g, "mkd", "image_auroc").set_index("variant")
                    if "mkd" in set(g["variant"]) and g["variant"].nunique() > 1 else pd.DataFrame())
            col = {k: [] for k in ("AUROC", "Δ", "p", "n pairs")}
            mcol = []
            for v in variants:
                rec = {"dataset": dataset, "protocol": protocol, "variant": v}
                if v in summ.index:
                    s = summ.loc[v]
                    rec.update(mean=s["mean"] * 100, std=s["std"] * 100, n_seeds=int(s["n"]),
                               n_categories=int(ncat[v]))
                    col["AUROC"].append(fmt_mean_std(rec["mean"], rec["std"], rec["n_seeds"]))
                    mcol.append(rec["mean"])
                else:
                    col["AUROC"].append(DASH)
                    mcol.append(np.nan)
                if v != "mkd" and v in getattr(test, "index", []):
                    t = test.loc[v]
                    rec.update(delta=t["mean_diff"] * 100, median_delta=t["median_diff"] * 100,
                               wilcoxon_statistic=t["statistic"], p_value=t["p_value"], n_pairs=int(t["n"]),
                               note=t["note"])
                    col["Δ"].append(f"{rec['delta']:+.1f}" if t["n"] else DASH)
                    col["p"].append(fmt_p(t["p_value"]))
                    col["n pairs"].append(str(int(t["n"])))
                    if t["note"]:
                        notes.add(t["note"].split(":")[-1].strip())
                else:
                    col["Δ"].append(DASH if v != "mkd" else "ref.")
                    col["p"].append(DASH)
                    col["n pairs"].append(DASH)
                if len(rec) > 3:
                    recs.append(rec)
            prefix = f"{protocol} " if len(protocols) > 1 else ""
            for k, vals in col.items():
                display[prefix + k] = vals
            means[prefix + "AUROC"] = mcol
        frame = pd.DataFrame(display, index=pd.Index(variants, name="variant"))
        mean_frame = pd.DataFrame(means, index=frame.index)
        bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
        # best per protocol column (over variants), not per row
        for c in mean_frame.columns:
            vals = mean_frame[c].round(1).dropna()
            if len(vals) >= 2:
                bold.loc[vals.index[vals == vals.max()], c] = True
        tnotes = ["AUROC: image AUROC (%), per-seed mean over the categories every seed ran, mean ± std over "
                  "seeds. Δ: mean paired difference variant − mkd (pp) over categories × seeds; p: two-sided "
                  "Wilcoxon signed-rank test on those pairs; best AUROC per column in bold."]
        tnotes += [f"p shown as {DASH}: {n}" for n in sorted(notes)]
        tables.append(Table(f"ablation_{dataset}", f"{DATASET_LABELS.get(dataset, dataset)}: MKD ablations. "
                            f"Run: {run_caption(d)}.", frame, pd.DataFrame(recs), bold, tnotes))
    return tables


def localization_tables(loc: pd.DataFrame, paper: pd.DataFrame) -> list[Table]:
    """``localization_<dataset>`` in the shape of the paper's Table 1.

    Rows = localisation method (and protocol / variant / gradient path when several were run);
    columns = metric × (no blur, Gaussian).  Cells: per-seed mean over categories, mean ± std over
    seeds.  For mvtec_ad the paper's Table 1 values stand beside ours.
    """
    tables = []
    loc = loc.copy()
    loc["blur"] = _as_bool(loc["blur"])
    for dataset in _ordered(loc["dataset"], DATASET_ORDER):
        d = loc[loc["dataset"] == dataset].copy()
        keys = [k for k in ("protocol", "variant", "grad_through") if k in d and d[k].nunique() > 1]
        keys.append("localization")
        for k in keys:
            d[k] = d[k].astype(str)
        metrics = [m for m in ("paper_pixel_metric", "pixel_auroc", "aupro") if m in d and d[m].notna().any()]
        p = paper[(paper["dataset"] == dataset) & (paper["localization"] != "") & (paper["method"] == "mkd")]
        recs, row_keys = [], []
        for key, g in d.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            row_keys.append(key)
            for blur in (False, True):
                gb = g[g["blur"] == blur]
                for m in metrics:
                    sl = category_mean_per_seed(gb, m, [])
                    if sl.empty:
                        continue
                    s = mean_std(sl.assign(_k=0), ["_k"], m).iloc[0]
                    recs.append({**dict(zip(keys, key)), "blur": blur, "metric": m, "mean": s["mean"] * 100,
                                 "std": s["std"] * 100, "n_seeds": int(s["n"]),
                                 "n_categories": int(sl["n_categories"].iloc[0])})
            if "ms_per_image" in g and g["ms_per_image"].notna().any():
                recs.append({**dict(zip(keys, key)), "blur": np.nan, "metric": "ms_per_image",
                             "mean": float(g["ms_per_image"].mean()), "std": float(g["ms_per_image"].std(ddof=1)),
                             "n_seeds": int(g["seed"].nunique()), "n_categories": int(g["category"].nunique())})
        if not recs:
            continue
        data = pd.DataFrame(recs)
        locs = _ordered(data["localization"], LOCALIZATION_ORDER)
        order = sorted(row_keys, key=lambda k: (locs.index(k[-1]), tuple(_natural_key(x) for x in k[:-1])))
        display, means = {}, {}
        for m in metrics:
            for blur, blabel in ((False, "no blur"), (True, "Gaussian")):
                label = f"{METRIC_LABELS[m]}, {blabel}"
                cells, vals = [], []
                for k in order:
                    sel = data[(data["metric"] == m) & (data["blur"] == blur)
                               & np.logical_and.reduce([data[c] == x for c, x in zip(keys, k)])]
                    if len(sel):
                        r = sel.iloc[0]
                        cells.append(fmt_mean_std(r["mean"], r["std"], r["n_seeds"]))
                        vals.append(r["mean"])
                    else:
                        cells.append(DASH)
                        vals.append(np.nan)
                if all(c == DASH for c in cells):
                    continue
                display[label], means[label] = cells, vals
                if m == "paper_pixel_metric" and len(p):
                    pv = []
                    for k in order:
                        hit = p[(p["localization"] == k[-1]) & (p["blur"] == ("yes" if blur else "no"))
                                & (p["category"] == "mean")]
                        pv.append(fmt_pct(hit["value"].iloc[0], 2) if len(hit) else DASH)
                    display[f"paper (Table 1), {blabel}"] = pv
        ms = []
        for k in order:
            sel = data[(data["metric"] == "ms_per_image")
                       & np.logical_and.reduce([data[c] == x for c, x in zip(keys, k)])]
            ms.append(fmt_pct(sel["mean"].iloc[0]) if len(sel) else DASH)
        if any(x != DASH for x in ms):
            display["ms / image"] = ms
        index = (pd.MultiIndex.from_tuples(order, names=keys) if len(keys) > 1
                 else pd.Index([k[0] for k in order], name="localization"))
        frame = pd.DataFrame(display, index=index)
        bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
        mean_frame = pd.DataFrame(means, index=frame.index)
        for c in mean_frame.columns:
            vals = mean_frame[c].round(1).dropna()
            if len(vals) >= 2:
                bold.loc[vals.index[vals == vals.max()], c] = True
        notes = ["Cells: per-seed mean over categories, mean ± std over seeds (%), best per column in bold. "
                 "paper pixel metric: the paper's legacy ROC-AUC on defective images only (1000 thresholds, "
                 "3×3 opening); pixel AUROC / AU-PRO: standard, over all test images.",
                 "ms / image: mean time to compute one map, both blur settings together."]
        tables.append(Table(f"localization_{dataset}",
                            f"{DATASET_LABELS.get(dataset, dataset)}: localisation methods without / with "
                            f"Gaussian blur (σ = 4), as in the paper's Table 1. {_seed_phrase(d['seed'])}.",
                            frame, data, bold, notes))
    return tables


def defect_tables(defects: pd.DataFrame) -> list[Table]:
    """``defects_<dataset>``: per defect kind × method (main entries), image and pixel AUROC.

    Rows: (protocol,) category, defect kind; a defect kind found in several categories also gets an
    "all" row (per-seed mean over those categories).  Cells: mean ± std over seeds (%).
    """
    tables = []
    main = main_rows(defects)
    for dataset in _ordered(main["dataset"], DATASET_ORDER):
        d = main[main["dataset"] == dataset]
        metrics = [m for m in ("image_auroc", "pixel_auroc") if m in d and d[m].notna().any()]
        variants = _variant_order(d["variant"].unique())
        protocols = _ordered(d["protocol"], PROTOCOL_ORDER)
        recs = []
        for protocol in protocols:
            g = d[d["protocol"] == protocol]
            for m in metrics:
                s = mean_std(g, ["category", "defect", "variant"], m)
                s["protocol"], s["metric"] = protocol, m
                recs.append(s)
                shared = g.groupby("defect")["category"].nunique()
                for defect in shared.index[shared > 1]:
                    sl = category_mean_per_seed(g[g["defect"] == defect], m, ["variant"])
                    a = mean_std(sl, ["variant"], m)
                    a["category"], a["defect"], a["protocol"], a["metric"] = "all", defect, protocol, m
                    recs.append(a)
        data = pd.concat(recs, ignore_index=True)
        if data.empty:
            continue
        data["mean"] = data["mean"].astype(float) * 100
        data["std"] = data["std"].astype(float) * 100
        keys = (["protocol"] if len(protocols) > 1 else []) + ["category", "defect"]
        rowk = data[keys].drop_duplicates()
        cats = _ordered([c for c in rowk["category"] if c != "all"]) + ["all"]
        rowk = sorted(map(tuple, rowk.to_numpy()),
                      key=lambda k: tuple((cats.index(x) if c == "category" else _natural_key(x))
                                          if c != "protocol" else _ordered(protocols, PROTOCOL_ORDER).index(x)
                                          for c, x in zip(keys, k)))
        indexed = data.set_index(keys + ["metric", "variant"])
        display, means, groups = {}, {}, []
        for m in metrics:
            group = []
            for v in variants:
                label = f"{METRIC_LABELS[m]}: {v}"
                cells, vals = [], []
                for k in rowk:
                    key = (*k, m, v)
                    if key in indexed.index:
                        r = indexed.loc[key]
                        r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                        cells.append(fmt_mean_std(r["mean"], r["std"], int(r["n"])))
                        vals.append(r["mean"])
                    else:
                        cells.append(DASH)
                        vals.append(np.nan)
                if all(c == DASH for c in cells):
                    continue
                display[label], means[label] = cells, vals
                group.append(label)
            if group:
                groups.append(group)
        index = pd.MultiIndex.from_tuples(rowk, names=keys)
        frame = pd.DataFrame(display, index=index)
        bold = _bold_best(pd.DataFrame(means, index=index), groups)
        notes = ["Each defect kind: its test images against the good ones. \"all\": per-seed mean over the "
                 "categories that have this kind. Best per row and metric in bold."]
        tables.append(Table(f"defects_{dataset}", f"{DATASET_LABELS.get(dataset, dataset)}: results per defect "
                            f"kind (%), mean ± std over seeds; {_seed_phrase(d['seed'])}.", frame, data, bold, notes))
    return tables


def rank_analysis(runs: pd.DataFrame, value: str = "image_auroc"):
    """Friedman / Nemenyi over the main entries; returns ``(result, blocks description)``.

    Blocks are (dataset, protocol, category, seed) runs in which every method has a value.  When the
    methods share no such block (e.g. a deterministic baseline run with one seed only), blocks fall
    back to (dataset, protocol, category) with each method's values averaged over its seeds.
    """
    main = main_rows(runs)
    full = ("dataset", "protocol", "category", "seed")
    res = friedman_nemenyi(main, value, block_on=full, entity="variant")
    if res.k >= 2 and res.n_blocks > 0:
        return res, "(dataset, protocol, category, seed)"
    avg = main.groupby(["dataset", "protocol", "category", "variant"], as_index=False)[value].mean()
    res = friedman_nemenyi(avg, value, block_on=full[:3], entity="variant")
    return res, "(dataset, protocol, category), methods averaged over seeds"


def ranks_table(runs: pd.DataFrame) -> Table | None:
    res, blocks = rank_analysis(runs)
    if res.k < 2 or res.n_blocks == 0:
        return None
    data = pd.DataFrame({"variant": res.mean_ranks.index, "mean_rank": res.mean_ranks.to_numpy()})
    data["k"], data["n_blocks"], data["blocks_dropped"] = res.k, res.n_blocks, res.blocks_dropped
    data["friedman_chi2"], data["friedman_p"] = res.statistic, res.p_value
    data["nemenyi_q_0.05"], data["nemenyi_cd"] = res.q_alpha, res.cd
    frame = pd.DataFrame({"mean rank": [f"{r:.2f}" for r in res.mean_ranks]},
                         index=pd.Index(res.mean_ranks.index, name="method"))
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold.iloc[0, 0] = True
    fried = (f"Friedman χ² = {res.statistic:.2f}, p = {fmt_p(res.p_value)}" if not math.isnan(res.p_value)
             else f"Friedman test: {res.note}")
    caption = (f"Average rank of image AUROC (1 = best, ties averaged) over N = {res.n_blocks} blocks "
               f"{blocks} where all k = {res.k} methods ran; {fried}; Nemenyi critical difference "
               f"(α = 0.05, q = {res.q_alpha:.3f}) CD = {res.cd:.2f}.")
    notes = [f"{res.blocks_dropped} block(s) lacking at least one method were left out."] if res.blocks_dropped else []
    notes.append("Methods whose mean ranks differ by less than CD are not significantly different (Demšar 2006).")
    return Table("ranks", caption, frame, data, bold, notes)


def speed_table(runs: pd.DataFrame) -> Table | None:
    """``speed``: per dataset and method (main entries) mean training time, throughput, memory."""
    cols = {"train_seconds": "train s", "score_images_per_second": "score img/s",
            "map_images_per_second": "map img/s", "peak_rss_mb": "peak RSS MB"}
    present = [c for c in cols if c in runs and pd.to_numeric(runs[c], errors="coerce").notna().any()]
    if not present:
        return None
    main = main_rows(runs).copy()
    for c in present:
        main[c] = pd.to_numeric(main[c], errors="coerce")
    keys = ["dataset", "variant"] + (["image_size"] if "image_size" in main else [])
    data = main.groupby(keys, dropna=False).agg(runs=("seed", "size"), **{c: (c, "mean") for c in present}).reset_index()
    data["_d"] = data["dataset"].map(lambda x: _ordered(data["dataset"], DATASET_ORDER).index(x))
    data = data.sort_values(["_d", "variant"]).drop(columns="_d").reset_index(drop=True)
    frame = data.rename(columns={"variant": "method", "image_size": "size"}).copy()
    for c in present:
        digits = 0 if c in ("peak_rss_mb",) or frame[c].abs().max() >= 100 else 1
        frame[c] = frame[c].map(lambda x, d=digits: fmt_pct(x, d))
    frame["runs"] = frame["runs"].astype(str)
    idx = ["dataset", "method"] + (["size"] if "size" in frame else [])
    if "size" in frame:
        frame["size"] = frame["size"].map(lambda s: f"{int(s)}×{int(s)}" if pd.notna(s) else DASH)
    frame = frame.set_index(idx).rename(columns=cols)
    notes = ["Means over runs (categories × seeds). Times depend on the machine; compare rows of one run "
             "of the pipeline only."]
    return Table("speed", "Cost per method (main entries): training time per run, scoring and map throughput, "
                 "peak resident memory.", frame, data, None, notes)


def readme_table(tables: list[Table], paper: pd.DataFrame, report_dir: str = "report") -> str | None:
    """Markdown for the README: one row per dataset/protocol, the "mean" row of each main table."""
    recs = []
    for t in tables:
        if not t.name.startswith("main_") or t.name.endswith("_pixel"):
            continue
        d = t.data
        ds, pr = d["dataset"].iloc[0], d["protocol"].iloc[0]
        row = {"dataset": DATASET_LABELS.get(ds, ds), "protocol": pr}
        for col in t.frame.columns:
            row[col] = t.frame.loc["mean", col]
        p = paper[(paper["dataset"] == ds) & (paper["protocol"] == pr) & (paper["category"] == "mean")
                  & (paper["metric"] == "image_auroc") & (paper["method"] == "mkd") & (paper["localization"] == "")]
        if len(p):
            v = p["value"].iloc[0]
            row["MKD (paper)"] = (fmt_pct(v, 2) if pd.notna(v) else p["note"].iloc[0]) + \
                ("" if p["verified"].iloc[0] == "yes" else " (unverified)")
        recs.append(row)
    if not recs:
        return None
    df = pd.DataFrame(recs).fillna(DASH)
    cols = list(df.columns)
    lines = ["Image AUROC (%), mean over categories, mean ± std over seeds; full tables and run details in "
             f"[{report_dir}/index.md]({report_dir}/index.md).", "",
             "| " + " | ".join(cols) + " |", "|" + "|".join(["---", "---"] + ["--:"] * (len(cols) - 2)) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------- driver
def write_index(out_dir: Path, tables: Sequence[Path], figures: Sequence[Path] | None = None) -> Path:
    """``index.md`` linking every table (md, with its tex and csv) and figure, relative to out_dir."""
    out_dir = Path(out_dir)
    if figures is None:
        figures = sorted(out_dir.rglob("*.png"))
    lines = ["# kdad report", "", "## Tables", ""]
    mds = [p for p in tables if p.suffix == ".md" and p.name != "README_TABLE.md"]
    for p in mds:
        rel = p.relative_to(out_dir).as_posix()
        stem = rel[:-3]
        lines.append(f"- [{p.stem}]({rel}) ([tex]({stem}.tex), [csv]({stem}.csv))")
    if any(p.name == "README_TABLE.md" for p in tables):
        lines.append("- [README_TABLE](README_TABLE.md) (compact summary for the README)")
    if not mds:
        lines.append("No result files were found; nothing to tabulate.")
    lines += ["", "## Figures", ""]
    for p in figures:
        rel = Path(p).relative_to(out_dir).as_posix()
        lines.append(f"- [{Path(p).stem}]({rel})")
    if not figures:
        lines.append("None.")
    path = out_dir / "index.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_tables(results: Results, paper: pd.DataFrame | None = None) -> list[Table]:
    """Every table whose data exists, in report order."""
    paper = load_paper_numbers() if paper is None else paper
    tables: list[Table] = []
    if results.runs is not None:
        tables += main_tables(results.runs)
    pc = paper_comparison(results, paper)
    if pc is not None:
        tables.append(pc)
    if results.runs is not None:
        tables += ablation_tables(results.runs)
    if results.localization is not None:
        tables += localization_tables(results.localization, paper)
    if results.defects is not None:
        tables += defect_tables(results.defects)
    if results.runs is not None:
        for t in (ranks_table(results.runs), speed_table(results.runs)):
            if t is not None:
                tables.append(t)
    return tables


def render_all(results_dir: Path | str, out_dir: Path | str, figures: Sequence[Path] | None = None) -> list[Path]:
    """Write every table (md, tex, csv), ``README_TABLE.md`` and ``index.md``; return the paths.

    ``figures``: the figure files to link from the index (default: every PNG under ``out_dir``).
    Tables for datasets without results are not written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paper = load_paper_numbers()
    tables = build_tables(load_results(results_dir), paper)
    paths: list[Path] = []
    for t in tables:
        paths += write_table(t, out_dir)
    readme = readme_table(tables, paper, out_dir.name)
    if readme is not None:
        p = out_dir / "README_TABLE.md"
        p.write_text(readme, encoding="utf-8")
        paths.append(p)
    paths.append(write_index(out_dir, paths, figures))
    return paths


def render_report(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Figures into ``out_dir/figures``, then the tables and the index linking both."""
    from kdad.figures import render_figures

    out_dir = Path(out_dir)
    figures = render_figures(results_dir, out_dir / "figures")
    return figures + render_all(results_dir, out_dir, figures)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kdad.tables",
                                     description="Render report tables and figures from result CSVs.")
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tables-only", action="store_true", help="skip the figures")
    args = parser.parse_args(argv)
    paths = (render_all(args.results_dir, args.out_dir) if args.tables_only
             else render_report(args.results_dir, args.out_dir))
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
