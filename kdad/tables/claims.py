"""``README_CLAIMS.md``: the README's quantitative claims, regenerated from the result files.

Every statement is computed here from ``runs.csv``, nothing is typed by hand:

* each ablation against its reference (dataset, protocol): the two dataset-level means, Δ and the
  paired two-sided Wilcoxon signed-rank test over categories, with n (categories) beside p;
* per dataset and protocol, the compared MKD variant against the best other compared method (by
  dataset-level mean): the two means, Δ, and the same test over categories;
* per defect dataset and protocol, MKD against the best other localising method on pixel AUROC and
  AU-PRO; and each compared variant's multi-class result against its one-class one (paired per
  category, which is the same test set under both protocols there);
* the Friedman test and Nemenyi critical difference over (dataset, category) blocks, or why there is
  none (:mod:`kdad.tables.ranks`).

Tests compare the block between ``<!-- kdad:claims -->`` and ``<!-- /kdad:claims -->`` in README.md
with this text (and the ``kdad:table`` block with ``README_TABLE.md``).
"""

from __future__ import annotations

import math

import pandas as pd

from kdad.stats import wilcoxon_vs_reference
from kdad.tables.ablations import table_members
from kdad.tables.paper import mkd_variant
from kdad.tables.protocols import PAIRED
from kdad.tables.ranks import rank_analysis, tied_groups
from kdad.tables.results import METRIC_LABELS, ablation_groups, dataset_label, datasets, main_rows, protocols
from kdad.tables.summary import dataset_level
from kdad.tables.writer import fmt_mean_std, fmt_p

__all__ = ["claims_markdown"]


def _test_phrase(t: pd.Series) -> str:
    n = int(t["n"])
    if math.isnan(t["p_value"]):
        return f"no test ({t['note']}; n = {n} categories)"
    return f"Wilcoxon signed-rank over categories: p = {fmt_p(t['p_value'])}, n = {n} categories"


def _compare(rows: pd.DataFrame, a: str, b: str, metric: str = "image_auroc", entity: str = "variant",
             pair_on: tuple[str, ...] = ("dataset", "protocol", "category")) -> str | None:
    """``a`` against ``b`` (values of ``entity``) on ``rows``: both means, Δ = a − b and the paired
    test over categories (None without both)."""
    rows = rows[rows[entity].isin([a, b])].dropna(subset=[metric])
    dl = dataset_level(rows, metric, by=(entity,))
    if dl.empty or set(dl[entity]) != {a, b}:
        return None
    dl = dl.set_index(entity)
    t = wilcoxon_vs_reference(rows, b, value=metric, pair_on=pair_on, entity=entity).set_index(entity).loc[a]
    ma, mb = dl.loc[a], dl.loc[b]
    return (f"{a} {fmt_mean_std(ma['mean'], ma['std'], int(ma['n']))} vs {b} "
            f"{fmt_mean_std(mb['mean'], mb['std'], int(mb['n']))} ({METRIC_LABELS[metric]} %, mean ± std over "
            f"{int(min(ma['n'], mb['n']))} seed(s)); Δ = {t['mean_diff'] * 100:+.2f} points; {_test_phrase(t)}")


def _localisation(runs: pd.DataFrame) -> list[str]:
    """Per dataset and protocol with maps: MKD against the best other localising method, per pixel metric."""
    lines = []
    main = main_rows(runs)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            mkd = mkd_variant(runs, dataset, protocol)
            for metric in ("pixel_auroc", "aupro"):
                if mkd is None or metric not in rows or rows.loc[rows["variant"] == mkd, metric].isna().all():
                    continue
                others = rows[(rows["method"] != "mkd") & rows[metric].notna()]
                dl = dataset_level(others, metric)
                if dl.empty:
                    continue
                best = dl.sort_values(["mean", "variant"], ascending=[False, True]).iloc[0]["variant"]
                text = _compare(rows, mkd, best, metric)
                if text:
                    lines.append(f"- {dataset_label(dataset)}, {protocol}, {METRIC_LABELS[metric]}: {text}.")
    return lines


def _protocols(runs: pd.DataFrame) -> list[str]:
    """Multi-class against one-class for each compared variant that ran under both, on the defect sets
    (where a category is the same test set under both protocols)."""
    lines = []
    main = main_rows(runs)
    for dataset in [d for d in datasets(main) if d in PAIRED]:
        d = main[main["dataset"] == dataset]
        for variant in sorted(set(d["variant"])):
            rows = d[d["variant"] == variant]
            if set(rows["protocol"]) < {"one-class", "multi-class"}:
                continue
            for metric in ("image_auroc", "pixel_auroc"):
                if metric in rows and rows[metric].notna().any():
                    text = _compare(rows, "multi-class", "one-class", metric, entity="protocol",
                                    pair_on=("dataset", "variant", "category"))
                    if text:
                        lines.append(f"- {dataset_label(dataset)}, {variant}: {text}.")
    return lines


def _ablations(runs: pd.DataFrame) -> list[str]:
    lines = []
    for g in ablation_groups(runs):
        for a in table_members(g, runs):
            d = runs[(runs["dataset"] == g.dataset) & runs["variant"].isin([g.reference, a.variant])]
            for protocol in protocols(d):
                text = _compare(d[d["protocol"] == protocol], a.variant, g.reference)
                if text:
                    lines.append(f"- {dataset_label(g.dataset)}, {protocol}, ablation {a.variant} ({a.label}): {text}.")
    return lines


def _mkd_vs_best(runs: pd.DataFrame) -> list[str]:
    lines = []
    main = main_rows(runs)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            mkd = mkd_variant(runs, dataset, protocol)
            others = rows[rows["method"] != "mkd"]
            if mkd is None or others.empty:
                continue
            dl = dataset_level(others, "image_auroc")
            if dl.empty:
                continue
            best = dl.sort_values(["mean", "variant"], ascending=[False, True]).iloc[0]["variant"]
            text = _compare(rows, mkd, best)
            if text:
                lines.append(f"- {dataset_label(dataset)}, {protocol}, MKD against the best other method: {text}.")
    return lines


def claims_markdown(runs: pd.DataFrame) -> str:
    """The claims as Markdown (deterministic: the same runs give the same bytes)."""
    out = ["The README's numbers, regenerated by `kdad report` from the result files. p: two-sided Wilcoxon "
           "signed-rank test with one pair per category (each category's mean over the seeds both ran); n: "
           "the number of categories.", ""]
    abl = _ablations(runs)
    if abl:
        out += ["**Ablations** (ablation − reference):", "", *abl, ""]
    comp = _mkd_vs_best(runs)
    if comp:
        out += ["**MKD against the best other compared method** (MKD − other):", "", *comp, ""]
    loc = _localisation(runs)
    if loc:
        out += ["**Localisation: MKD against the best other localising method** (MKD − other; pooled pixel "
                "metrics over every test image):", "", *loc, ""]
    prot = _protocols(runs)
    if prot:
        out += ["**One model for all categories against one per category** (multi-class − one-class, defect "
                "sets):", "", *prot, ""]
    ra = rank_analysis(runs)
    if ra.ok:
        ranks = ", ".join(f"{m} {r:.2f}" for m, r in ra.result.mean_ranks.items())
        ties = "".join(f" Tied, no order between them: {', '.join(g)}." for g in tied_groups(ra.result.mean_ranks))
        out += ["**Ranks**: " + ra.describe() + f". Mean ranks: {ranks}.{ties}", ""]
    return "\n".join(out).rstrip() + "\n"
