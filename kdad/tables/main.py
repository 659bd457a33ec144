"""Main tables: the compared methods (``ablation_of`` empty) per dataset and protocol.

``main_<dataset>_<protocol>``         image AUROC per category and the dataset mean
``main_<dataset>_<protocol>_pixel``   pixel AUROC, AU-PRO, the paper's pixel metric, pixel AP, F1-max
``metrics_<dataset>_<protocol>``      every metric computed, dataset-level means (methods as rows)
``summary``                           dataset-level image AUROC for every dataset and protocol (README)

Layout: methods are rows and categories columns ("mean" first), unless there are more categories
than methods, then the table is transposed (categories as rows).  The paper's number, where it
exists, is the first row (or column); MKD's own rows follow, then the other methods by their
dataset mean, best first.
"""

from __future__ import annotations

import pandas as pd

from kdad.tables.results import (
    IMAGE_METRICS,
    METRIC_LABELS,
    PIXEL_METRICS,
    dataset_label,
    datasets,
    departures,
    main_rows,
    ordered,
    protocols,
    run_caption,
    seed_phrase,
    slug,
)
from kdad.tables.summary import PAPER_CATEGORY_COUNT, PAPER_LABEL, bold_best, dataset_level, paper_lookup, per_category
from kdad.tables.writer import DASH, Table, fmt_mean_std, fmt_num

__all__ = ["main_tables", "summary_table"]

MEAN = "mean"


def _cell(rec: pd.Series) -> str:
    return fmt_mean_std(rec["mean"], rec["std"], int(rec["n"]))


def _series_order(dl: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """MKD's variants first, then the others by dataset mean (best first), then any without a mean."""
    means = dl.set_index("variant")["mean"] if len(dl) else pd.Series(dtype=float)
    method = rows.groupby("variant")["method"].first()
    variants = ordered(rows["variant"])
    return sorted(variants, key=lambda v: (method.get(v) != "mkd", -means.get(v, float("-inf"))))


def _grid(rows: pd.DataFrame, metrics: list[str], paper: pd.DataFrame, dataset: str, protocol: str):
    """Long form of a category table: one record per (metric, series, column) with text and value."""
    cats = ordered(rows["category"])
    recs, tidy, notes = [], [], set()
    for metric in metrics:
        pc = per_category(rows, metric)
        dl = dataset_level(rows, metric)
        if pc.empty:
            continue
        p = paper_lookup(paper, dataset, protocol, metric)
        if len(p) and set(p.index) & set(cats + ["mean"]):
            for col in [MEAN, *cats]:
                key = "mean" if col == MEAN else col
                if key in p.index:
                    r = p.loc[key]
                    text = fmt_num(r["value"]) if pd.notna(r["value"]) else DASH
                    if r["verified"] != "yes":
                        text += " ‡"
                        notes.add("‡ a widely cited value for MKD, not checked against the paper itself.")
                    if pd.isna(r["value"]) and r["note"]:
                        notes.add(f"MKD (paper) {key}: {r['note']}.")
                    if key == "mean" and PAPER_CATEGORY_COUNT.get(dataset, len(cats)) > len(cats):
                        notes.add(f"{PAPER_LABEL}'s mean is over all {PAPER_CATEGORY_COUNT[dataset]} categories of "
                                  f"the dataset, ours over the {len(cats)} run here.")
                    recs.append(dict(metric=metric, series=PAPER_LABEL, column=col, text=text,
                                     value=float("nan"), paper=True))
                    tidy.append(dict(metric=metric, variant="paper", category=key, mean=r["value"], std=None,
                                     min=None, max=None, n=None, n_categories=None, source=r["source"]))
        for v in _series_order(dl, rows[rows[metric].notna()]):
            sv = pc[pc["variant"] == v].set_index("category")
            if sv.empty:
                continue
            d = dl[dl["variant"] == v]
            if len(d):
                r = d.iloc[0]
                text = _cell(r)
                if int(r["n_categories"]) < len(cats):
                    text += " †"
                    notes.add(f"† mean over fewer than the {len(cats)} categories shown (only categories "
                              "every seed ran enter the mean).")
                recs.append(dict(metric=metric, series=v, column=MEAN, text=text, value=r["mean"], paper=False))
                tidy.append(dict(metric=metric, variant=v, category="mean", **r[["mean", "std", "min", "max", "n",
                                                                                  "n_categories"]].to_dict()))
            else:
                recs.append(dict(metric=metric, series=v, column=MEAN, text=DASH, value=float("nan"), paper=False))
            for c in cats:
                if c in sv.index:
                    r = sv.loc[c]
                    recs.append(dict(metric=metric, series=v, column=c, text=_cell(r), value=r["mean"],
                                     paper=False))
                    tidy.append(dict(metric=metric, variant=v, category=c, **r[["mean", "std", "min", "max",
                                                                                 "n"]].to_dict(), n_categories=1))
                else:
                    recs.append(dict(metric=metric, series=v, column=c, text=DASH, value=float("nan"), paper=False))
    return pd.DataFrame(recs), pd.DataFrame(tidy), sorted(notes), cats


def _layout(recs: pd.DataFrame, cats: list[str], multi_metric: bool):
    """Pivot the long form into (frame, bold): methods as rows unless that makes more columns."""
    recs = recs.copy()
    recs["mlabel"] = recs["metric"].map(lambda m: METRIC_LABELS.get(m, m))
    series = list(dict.fromkeys(zip(recs["mlabel"], recs["series"])))
    columns = [MEAN, *cats]
    transpose = len(columns) > len(series)
    recs["best"] = False
    ours = recs[~recs["paper"]]
    for (_, col), g in ours.groupby(["metric", "column"]):
        vals = g["value"].round(1).dropna()
        if len(vals) >= 2:
            recs.loc[vals.index[vals == vals.max()], "best"] = True
    if not transpose:
        idx = ["mlabel", "series"] if multi_metric else ["series"]
        frame = recs.pivot(index=idx, columns="column", values="text")
        bold = recs.pivot(index=idx, columns="column", values="best")
        order = pd.MultiIndex.from_tuples(series) if multi_metric else pd.Index([s for _, s in series])
        frame, bold = frame.reindex(index=order, columns=columns), bold.reindex(index=order, columns=columns)
        frame.index.names = ["metric", "method"] if multi_metric else ["method"]
        frame.columns = [f"mean ({len(cats)} cat.)" if c == MEAN else c for c in columns]
    else:
        recs["head"] = [f"{m}: {s}" if multi_metric else s for m, s in zip(recs["mlabel"], recs["series"])]
        heads = list(dict.fromkeys(recs["head"]))
        frame = recs.pivot(index="column", columns="head", values="text").reindex(index=cats + [MEAN], columns=heads)
        bold = recs.pivot(index="column", columns="head", values="best").reindex(index=cats + [MEAN], columns=heads)
        frame.index.name = "category"
    return frame.fillna(DASH), bold.fillna(False).astype(bool), transpose


def _table(name, caption, rows, metrics, paper, dataset, protocol, extra_notes=()):
    recs, tidy, notes, cats = _grid(rows, metrics, paper, dataset, protocol)
    if recs.empty:
        return None
    frame, bold, transposed = _layout(recs, cats, len(metrics) > 1 or metrics[0] != "image_auroc")
    tidy.insert(0, "protocol", protocol)
    tidy.insert(0, "dataset", dataset)
    where = "row" if transposed else "column"
    notes = [f"Best of our runs per {where} in bold; cells are mean ± std over seeds (a value without ± is a "
             "single seed); \"mean\" is the per-seed mean over categories, described over seeds.",
             *notes, *extra_notes]
    if PAPER_LABEL in set(recs["series"]):
        notes.insert(1, f"{PAPER_LABEL}: the number the MKD paper reports (kdad/reference/paper_numbers.csv); "
                        "our runs may differ from the paper's in expert, epochs and image size (see Run).")
    return Table(name, caption, frame, tidy, bold, notes, kind="main")


def main_tables(runs: pd.DataFrame, paper: pd.DataFrame) -> list[Table]:
    """Every main, pixel and metrics table, per dataset and protocol that has compared methods."""
    tables = []
    main = main_rows(runs)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            base = f"{dataset_label(dataset)}, {protocol}"
            run = f"Run: {run_caption(rows)}."
            stem = f"main_{slug(dataset)}_{slug(protocol)}"
            differ = [d for d in (departures(rows),) if d]
            t = _table(stem, f"{base}: image AUROC (%). {run}", rows, ["image_auroc"], paper, dataset, protocol,
                       differ)
            if t is not None:
                tables.append(t)
            pix = [m for m in PIXEL_METRICS if m in rows and rows[m].notna().any()]
            if pix:
                loc = rows[rows[pix].notna().any(axis=1)]
                t = _table(stem + "_pixel", f"{base}: localisation metrics (%), methods that produce anomaly "
                           f"maps. Run: {run_caption(loc)}.", loc, pix, paper, dataset, protocol,
                           ["pixel AUROC, AP and F1-max count every pixel of every test image; AU-PRO is the "
                            "normalised area under the per-region-overlap curve up to 30 % FPR; the paper pixel "
                            "metric is the MKD paper's own ROC-AUC on defective images only (1000 thresholds, "
                            "3×3 opening).", *differ])
                if t is not None:
                    tables.append(t)
            t = metrics_table(rows, paper, dataset, protocol, f"metrics_{slug(dataset)}_{slug(protocol)}", run)
            if t is not None:
                tables.append(t)
    return tables


def metrics_table(rows, paper, dataset, protocol, name, run) -> Table | None:
    """Methods × every computed metric, dataset-level mean ± std over seeds (only with ≥ 2 metrics)."""
    metrics = [m for m in (*IMAGE_METRICS, *PIXEL_METRICS) if m in rows and rows[m].notna().any()]
    if len(metrics) < 2:
        return None
    recs, tidy = [], []
    for m in metrics:
        dl = dataset_level(rows, m)
        p = paper_lookup(paper, dataset, protocol, m)
        if "mean" in p.index and pd.notna(p.loc["mean", "value"]):
            r = p.loc["mean"]
            recs.append(dict(series=PAPER_LABEL, metric=m, text=fmt_num(r["value"]) +
                             ("" if r["verified"] == "yes" else " ‡"), value=float("nan")))
            tidy.append(dict(variant="paper", metric=m, mean=r["value"]))
        for _, r in dl.iterrows():
            recs.append(dict(series=r["variant"], metric=m, text=_cell(r), value=r["mean"]))
            tidy.append(dict(variant=r["variant"], metric=m, **r[["mean", "std", "min", "max", "n",
                                                                  "n_categories"]].to_dict()))
    if not recs:
        return None
    recs = pd.DataFrame(recs)
    order = ([PAPER_LABEL] if PAPER_LABEL in set(recs["series"]) else []) + _series_order(
        dataset_level(rows, "image_auroc"), rows)
    order = [s for s in order if s in set(recs["series"])]
    frame = recs.pivot(index="series", columns="metric", values="text").reindex(index=order, columns=metrics)
    values = recs.pivot(index="series", columns="metric", values="value").reindex(index=order, columns=metrics)
    frame.columns = [METRIC_LABELS[m] for m in metrics]
    values.columns = frame.columns
    frame.index.name = "method"
    tidy = pd.DataFrame(tidy)
    tidy.insert(0, "protocol", protocol)
    tidy.insert(0, "dataset", dataset)
    notes = ["Dataset level: per-seed mean over the categories every seed ran, mean ± std over seeds; best per "
             "column in bold. AP and F1-max depend on the share of anomalous test images: compare them within "
             "a column only."]
    return Table(name, f"{dataset_label(dataset)}, {protocol}: every computed metric (%). {run}",
                 frame.fillna(DASH), tidy, bold_best(values), notes, kind="metrics")


def summary_table(runs: pd.DataFrame, paper: pd.DataFrame) -> Table | None:
    """``summary``: one column per (dataset, protocol), methods as rows, dataset-level image AUROC.

    The paper's number is the first row; MKD's variants follow, then the other methods by their mean
    rank over the columns they ran in.
    """
    main = main_rows(runs)
    cols, recs, tidy, seeds = [], [], [], set()
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            dl = dataset_level(rows, "image_auroc")
            if dl.empty:
                continue
            col = f"{dataset_label(dataset)}, {protocol}"
            cols.append(col)
            seeds |= set(rows["seed"])
            p = paper_lookup(paper, dataset, protocol, "image_auroc")
            if "mean" in p.index:
                r = p.loc["mean"]
                text = fmt_num(r["value"]) if pd.notna(r["value"]) else DASH
                text += "" if r["verified"] == "yes" else " ‡"
                recs.append(dict(series=PAPER_LABEL, column=col, text=text, value=float("nan")))
            ranks = dl.set_index("variant")["mean"].rank(ascending=False)
            method = rows.groupby("variant")["method"].first()
            for _, r in dl.iterrows():
                recs.append(dict(series=r["variant"], column=col, text=_cell(r), value=r["mean"],
                                 rank=ranks[r["variant"]], mkd=method[r["variant"]] == "mkd"))
                tidy.append(dict(dataset=dataset, protocol=protocol, variant=r["variant"],
                                 **r[["mean", "std", "min", "max", "n", "n_categories"]].to_dict()))
    if not recs:
        return None
    recs = pd.DataFrame(recs)
    ours = recs[recs["series"] != PAPER_LABEL]
    avg_rank = ours.groupby("series")["rank"].mean()
    is_mkd = ours.groupby("series")["mkd"].first()
    order = sorted(avg_rank.index, key=lambda s: (not is_mkd[s], avg_rank[s]))
    if PAPER_LABEL in set(recs["series"]):
        order = [PAPER_LABEL, *order]
    frame = recs.pivot(index="series", columns="column", values="text").reindex(index=order, columns=cols)
    values = recs.pivot(index="series", columns="column", values="value").reindex(index=order, columns=cols)
    frame.index.name = "method"
    notes = ["Per-seed mean over the categories every seed ran, mean ± std over seeds; best per column in bold. "
             "Methods other than MKD are sorted by their mean rank over the columns they ran in."]
    if PAPER_LABEL in set(recs["series"]):
        notes.append(f"{PAPER_LABEL}: the dataset mean the MKD paper reports (‡: a widely cited value, not "
                     "checked against the paper); our runs may use a smaller expert, fewer epochs and images.")
    return Table("summary", f"Image AUROC (%) per dataset and protocol, compared methods; {seed_phrase(seeds)}.",
                 frame.fillna(DASH), pd.DataFrame(tidy), bold_best(values), notes, kind="summary")
