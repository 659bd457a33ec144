"""``ablation_<dataset>``: variants run as ablations (``ablation_of``) beside their reference.

Groups follow ``ablation_of``; each ablation is labelled by the options in which it differs from
its reference (``opt.*`` columns), e.g. ``score_hints=3; train_hints=3``.  Per protocol: image
AUROC (per-seed mean over categories, mean ± std over seeds), Δ = the mean over categories of the
paired difference ablation − reference (each category's mean over the seeds both ran), and the
two-sided Wilcoxon signed-rank p over those per-category pairs, with n = the number of categories
beside it (:func:`kdad.stats.wilcoxon_vs_reference`).  Seeds are not pairs: they share a
category's data, and a re-scoring ablation shares the reference's very models; they give only the
within-category spread (the ``seed_sd`` column of the CSV).  Ablations that change only the anomaly map are
in the localisation table instead (their image scores are the reference's).
"""

from __future__ import annotations

import pandas as pd

from kdad.stats import WILCOXON_MIN_PAIRS, wilcoxon_vs_reference
from kdad.tables.results import (
    PIXEL_METRICS,
    AblationGroup,
    ablation_groups,
    dataset_label,
    ordered,
    protocols,
    run_caption,
    slug,
)
from kdad.tables.summary import dataset_level
from kdad.tables.writer import DASH, Table, fmt_mean_std, fmt_p

__all__ = ["ablation_tables", "table_members"]


def table_members(group: AblationGroup, runs: pd.DataFrame) -> list:
    """The group's ablations shown in the ablation table: all but map-only ones that have pixel
    metrics (those are the localisation table's)."""
    pix = [m for m in PIXEL_METRICS if m in runs]
    out = []
    for a in group.members:
        if a.localization_only and pix:
            rows = runs[(runs["dataset"] == group.dataset) & (runs["variant"] == a.variant)]
            if rows[pix].notna().any().any():
                continue
        out.append(a)
    return out


def ablation_tables(runs: pd.DataFrame) -> list[Table]:
    groups = [g for g in ablation_groups(runs) if table_members(g, runs)]
    tables = []
    for dataset in ordered([g.dataset for g in groups]):
        mine = [g for g in groups if g.dataset == dataset]
        d = runs[runs["dataset"] == dataset]
        names = [v for g in mine for v in [g.reference] + [a.variant for a in table_members(g, runs)]]
        rows_all = d[d["variant"].isin(names)]
        # protocols in which some ablation ran (the reference alone compares nothing)
        prots = protocols(rows_all[rows_all["ablation_of"] != ""])
        index, display, bold, tidy, notes = [], {}, {}, [], set()
        for g in mine:
            members = table_members(g, runs)
            keys = [(g.reference, g.reference, "reference")] + [(g.reference, a.variant, a.label) for a in members]
            index += keys
            for protocol in prots:
                prefix = f"{protocol} " if len(prots) > 1 else ""
                rows = d[(d["protocol"] == protocol) & d["variant"].isin([k[1] for k in keys])]
                dl = dataset_level(rows, "image_auroc")
                dl = dl.set_index("variant") if len(dl) else dl
                ref_ok = g.reference in set(rows["variant"]) and rows["variant"].nunique() > 1
                test = (wilcoxon_vs_reference(rows, g.reference).set_index("variant") if ref_ok
                        else pd.DataFrame())
                cols = {c: display.setdefault(prefix + c, []) for c in ("image AUROC", "Δ", "p (n categories)")}
                bcol = bold.setdefault(prefix + "image AUROC", [])
                means = []
                for _, variant, label in keys:
                    rec = {"dataset": dataset, "protocol": protocol, "reference": g.reference, "variant": variant,
                           "options_changed": label}
                    if variant in getattr(dl, "index", []):
                        r = dl.loc[variant]
                        cols["image AUROC"].append(fmt_mean_std(r["mean"], r["std"], int(r["n"])))
                        means.append(round(r["mean"], 1))
                        rec.update(mean=r["mean"], std=r["std"], n_seeds=int(r["n"]),
                                   n_categories=int(r["n_categories"]))
                    else:
                        cols["image AUROC"].append(DASH)
                        means.append(float("nan"))
                    if variant == g.reference:
                        cols["Δ"].append("ref." if variant in getattr(dl, "index", []) else DASH)
                        cols["p (n categories)"].append(DASH)
                    elif variant in getattr(test, "index", []):
                        t = test.loc[variant]
                        cols["Δ"].append(f"{t['mean_diff'] * 100:+.1f}" if t["n"] else DASH)
                        cols["p (n categories)"].append(f"{fmt_p(t['p_value'])} (n = {int(t['n'])})")
                        rec.update(delta=t["mean_diff"] * 100, median_delta=t["median_diff"] * 100,
                                   wilcoxon_statistic=t["statistic"], p_value=t["p_value"], n_pairs=int(t["n"]),
                                   pair_unit="category", seeds_per_pair=int(t["n_replicates"]),
                                   seed_sd=t["replicate_sd"] * 100, note=t["note"])
                        if t["note"]:
                            notes.add(t["note"].split(":")[-1].strip() if "zero" in t["note"] else
                                      f"fewer than {WILCOXON_MIN_PAIRS} non-zero pairs")
                    else:
                        cols["Δ"].append(DASH)
                        cols["p (n categories)"].append(DASH)
                    if len(rec) > 5:
                        tidy.append(rec)
                vals = pd.Series(means).dropna()
                best = vals.max() if len(vals) >= 2 else None
                bcol += [best is not None and m == best for m in means]
        frame = pd.DataFrame(display, index=pd.MultiIndex.from_tuples(
            index, names=["ablation of", "variant", "options changed"]))
        boldf = pd.DataFrame(False, index=frame.index, columns=frame.columns)
        for c, flags in bold.items():
            boldf[c] = flags
        tnotes = ["image AUROC (%): per-seed mean over the categories every seed ran, mean ± std over seeds. "
                  "Δ: mean over categories of the paired difference ablation − reference (percentage points), "
                  "each category's values averaged over the seeds both ran; p: two-sided Wilcoxon signed-rank "
                  "test over those per-category pairs; n: the number of categories (pairs). Seeds are not "
                  "pairs (they share a category's data and, for re-scoring ablations, its models). Best of each "
                  "group and protocol in bold.",
                  "options changed: the opt.* options in which the variant differs from its reference."]
        tnotes += [f"p shown as {DASH}: {n}." for n in sorted(notes)]
        label = {k[1]: (k[1] if k[2] == "reference" else f"{k[1]} {k[2]}" if k[2].startswith("(")
                        else f"{k[1]} ({k[2]})") for k in index}
        tables.append(Table(f"ablation_{slug(dataset)}",
                            f"{dataset_label(dataset)}: ablations against their reference. "
                            f"Run: {run_caption(rows_all, lambda v: label.get(v, v))}.",
                            frame, pd.DataFrame(tidy), boldf, tnotes, kind="ablation"))
    return tables
