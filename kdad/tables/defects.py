"""``defects_<dataset>_<protocol>`` (per defect kind) and ``levels_<dataset>_<protocol>`` (per
difficulty level) from ``results/defects.csv``, compared methods only.

A kind's row holds its images against all good images of the category (``level = all`` rows of
the file); a level's row holds that level's defective images (``defect = all`` rows).  A kind or
level found in several categories also gets an "all categories" row: the per-seed mean over those
categories, described over seeds.  Rows: metric, category, kind/level; columns: methods.
"""

from __future__ import annotations

import pandas as pd

from kdad.stats import category_mean_per_seed, mean_std
from kdad.tables.results import (
    METRIC_LABELS,
    dataset_label,
    datasets,
    main_rows,
    natural_key,
    ordered,
    protocols,
    seed_phrase,
    slug,
)
from kdad.tables.summary import bold_best
from kdad.tables.writer import DASH, Table, fmt_mean_std

__all__ = ["defect_tables"]

METRICS = ("image_auroc", "pixel_auroc", "aupro")
ALL_CATEGORIES = "all categories"


def _summaries(rows: pd.DataFrame, key: str, metric: str) -> pd.DataFrame:
    per = mean_std(rows, ["category", key, "variant"], metric)
    parts = [per]
    shared = rows.dropna(subset=[metric]).groupby(key)["category"].nunique()
    for value in shared.index[shared > 1]:
        sl = category_mean_per_seed(rows[rows[key] == value], metric, ["variant"])
        a = mean_std(sl, ["variant"], metric)
        a["category"], a[key] = ALL_CATEGORIES, value
        parts.append(a)
    out = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else per
    for c in ("mean", "std", "min", "max"):
        out[c] = out[c].astype(float) * 100
    out["metric"] = metric
    return out


def _table(rows: pd.DataFrame, key: str, dataset: str, protocol: str) -> Table | None:
    metrics = [m for m in METRICS if m in rows and rows[m].notna().any()]
    if not metrics:
        return None
    data = pd.concat([_summaries(rows, key, m) for m in metrics], ignore_index=True)
    if data.empty:
        return None
    variants = sorted(ordered(rows["variant"]), key=lambda v: v != "mkd")
    cats = ordered(c for c in data["category"] if c != ALL_CATEGORIES) + [ALL_CATEGORIES]
    values = sorted(set(data[key]), key=natural_key)
    index = [(METRIC_LABELS[m], c, v) for m in metrics for c in cats for v in values
             if ((data["metric"] == m) & (data["category"] == c) & (data[key] == v)).any()]
    by = data.set_index(["metric", "category", key, "variant"]).sort_index()
    label_to_metric = {METRIC_LABELS[m]: m for m in metrics}
    display = {v: [] for v in variants}
    means = {v: [] for v in variants}
    for ml, c, val in index:
        for v in variants:
            k = (label_to_metric[ml], c, val, v)
            if k in by.index:
                r = by.loc[k]
                r = r.iloc[0] if isinstance(r, pd.DataFrame) else r
                display[v].append(fmt_mean_std(r["mean"], r["std"], int(r["n"])))
                means[v].append(r["mean"])
            else:
                display[v].append(DASH)
                means[v].append(float("nan"))
    what = "defect kind" if key == "defect" else "difficulty level"
    mi = pd.MultiIndex.from_tuples(index, names=["metric", "category", what])
    frame = pd.DataFrame(display, index=mi)
    frame = frame.loc[:, [v for v in variants if (frame[v] != DASH).any()]]
    bold = bold_best(pd.DataFrame(means, index=mi)[frame.columns], axis=1)
    data.insert(0, "protocol", protocol)
    data.insert(0, "dataset", dataset)
    name = ("defects" if key == "defect" else "levels") + f"_{slug(dataset)}_{slug(protocol)}"
    if key == "defect":
        note = "Each defect kind: its test images against all good images of the category."
    else:
        note = "Each difficulty level: its defective test images (all kinds) against all good images of the category."
    notes = [note + f" \"{ALL_CATEGORIES}\": per-seed mean over the categories that have it, mean ± std over seeds. "
             "Best per row in bold."]
    caption = (f"{dataset_label(dataset)}, {protocol}: results per {what} (%), compared methods, "
               f"mean ± std over seeds; {seed_phrase(rows['seed'])}.")
    return Table(name, caption, frame, data, bold, notes, kind="defects")


def defect_tables(defects: pd.DataFrame) -> list[Table]:
    tables = []
    main = main_rows(defects)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            d = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            kinds = d[(d["level"] == "all") & (d["defect"] != "all")]
            levels = d[(d["defect"] == "all") & (d["level"] != "all")]
            for rows, key in ((kinds, "defect"), (levels, "level")):
                if len(rows):
                    t = _table(rows, key, dataset, protocol)
                    if t is not None:
                        tables.append(t)
    return tables
