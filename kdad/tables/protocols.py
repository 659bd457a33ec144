"""``protocols_<dataset>``: one-class beside multi-class, per method and category.

The finding the multi-class protocol exists for is how much one unified model loses against a model
per category. For every main variant (not an ablation) that ran under both protocols of a dataset,
the table shows each category's mean ± std over seeds under both, and the difference.

- Defect sets (textures, MVTec AD): the multi-class model is trained on the good images of all
  categories and scored per category, so each category is the same test set under both protocols:
  the difference is paired per category and tested with a two-sided Wilcoxon signed-rank test over
  the categories (n = categories; seeds are averaged within a category, never extra pairs).
- Semantic sets (MNIST, Fashion-MNIST, CIFAR-10): one-class "class c" means c is normal, multi-class
  "class c" means c is the anomaly (leave-one-class-out): different tasks on the same test images,
  so only the dataset-level means are compared and no per-category test is made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdad.stats import wilcoxon_vs_reference
from kdad.tables.results import METRIC_LABELS, dataset_label, datasets, ordered, run_caption, slug
from kdad.tables.summary import dataset_level, per_category
from kdad.tables.writer import DASH, Table, fmt_mean_std, fmt_num, fmt_p

__all__ = ["protocol_tables"]

#: datasets whose multi-class protocol scores the same test set per category as one-class
PAIRED = {"textures", "textures_dev", "mvtec_ad", "mvtec_folder"}
METRICS = ("image_auroc", "pixel_auroc")
DEFINITION = ("one-class: a model per category, trained on that category's normal images. multi-class: "
              "{what}.")


def _definition(dataset: str) -> str:
    if dataset in PAIRED:
        what = "one model trained on the normal images of every category, scored on each category's test set"
    else:
        what = ("leave one class out: a model per class trained on the other classes' images, that class "
                "anomalous")
    return DEFINITION.format(what=what)


def protocol_tables(runs: pd.DataFrame) -> list[Table]:
    tables = []
    main = runs[runs["ablation_of"].fillna("") == ""] if "ablation_of" in runs else runs
    for dataset in datasets(main):
        d = main[main["dataset"] == dataset]
        both = [v for v in ordered(d["variant"])
                if set(d.loc[d["variant"] == v, "protocol"]) >= {"one-class", "multi-class"}]
        if not both:
            continue
        for m in METRICS:
            t = _table(dataset, d[d["variant"].isin(both)], both, m)
            if t is not None:
                tables.append(t)
    return tables


def _table(dataset: str, rows: pd.DataFrame, variants: list[str], metric: str) -> Table | None:
    paired = dataset in PAIRED
    metrics = [metric] if metric in rows and rows[metric].notna().any() else []
    display: dict[str, list[str]] = {}
    tidy = []
    cats = ordered(rows["category"])
    index = [*cats, "mean over categories"] if paired else ["mean over categories"]
    for m in metrics:
        for v in variants:
            r = rows[rows["variant"] == v]
            if r[m].isna().all():
                continue
            pc = per_category(r, m, by=("protocol",)).set_index(["protocol", "category"])
            dl = dataset_level(r, m, by=("protocol",)).set_index("protocol")
            cols = {p: [] for p in ("one-class", "multi-class", "Δ (multi − one)")}
            for c in index:
                for p in ("one-class", "multi-class"):
                    src = dl.loc[p] if c == "mean over categories" and p in dl.index else (
                        pc.loc[(p, c)] if (p, c) in pc.index else None)
                    cols[p].append(fmt_mean_std(src["mean"], src["std"], int(src["n"])) if src is not None
                                   else DASH)
                    if src is not None:
                        tidy.append(dict(dataset=dataset, metric=m, variant=v, protocol=p, category=c,
                                         **src[["mean", "std", "n"]].to_dict()))
                one = dl.loc["one-class", "mean"] if c == "mean over categories" and "one-class" in dl.index else (
                    pc.loc[("one-class", c), "mean"] if ("one-class", c) in pc.index else np.nan)
                multi = dl.loc["multi-class", "mean"] if c == "mean over categories" and "multi-class" in dl.index \
                    else (pc.loc[("multi-class", c), "mean"] if ("multi-class", c) in pc.index else np.nan)
                cols["Δ (multi − one)"].append(fmt_num(multi - one, 1) if np.isfinite(multi - one) else DASH)
            if paired:
                test = wilcoxon_vs_reference(r.assign(protocol=r["protocol"]), "one-class", value=m,
                                             pair_on=("dataset", "variant", "category"), entity="protocol")
                hit = test[test["protocol"] == "multi-class"]
                p_text = (f"{fmt_p(hit['p_value'].iloc[0])} (n = {int(hit['n'].iloc[0])})" if len(hit) else DASH)
                cols["p (n categories)"] = [""] * (len(index) - 1) + [p_text]
                if len(hit):
                    tidy.append(dict(dataset=dataset, metric=m, variant=v, protocol="multi-class vs one-class",
                                     category="wilcoxon", p_value=hit["p_value"].iloc[0], n=int(hit["n"].iloc[0]),
                                     mean=hit["mean_diff"].iloc[0] * 100))
            for p, texts in cols.items():
                display[f"{v} · {p}"] = texts
    if not display:
        return None
    frame = pd.DataFrame(display, index=pd.Index(index, name="category"))
    notes = [f"Protocols: {_definition(dataset)}",
             "Cells: mean ± std over seeds (%); Δ: multi-class minus one-class, in points."]
    if paired:
        notes.append("p: two-sided Wilcoxon signed-rank test of the per-category differences (each category's "
                     "mean over seeds), n = categories.")
    else:
        notes.append("The two protocols pose different tasks per class (normal in one, anomalous in the other): "
                     "only the means over classes are compared, without a test.")
    caption = (f"{dataset_label(dataset)}, {METRIC_LABELS[metric]}: one-class against multi-class (how much one "
               f"model for all categories loses). Run: {run_caption(rows)}.")
    name = f"protocols_{slug(dataset)}" + ("" if metric == "image_auroc" else f"_{metric.split('_')[0]}")
    return Table(name, caption, frame, pd.DataFrame(tidy), None, notes, kind="protocols")
