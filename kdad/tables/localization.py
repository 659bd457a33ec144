"""``localization_<dataset>_<protocol>``: the paper's Table 1 shape.

The cells are a reference variant (e.g. ``mkd``) and its ablations that change nothing but the
anomaly map: ``opt.localization``, ``opt.blur_sigma`` and ``opt.map_normalization``.  Rows are the
localisation method (and the map normalisation when that varies), columns each pixel metric
without and with the Gaussian filter; the paper's Table 1 numbers stand beside ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdad.tables.results import (
    METRIC_LABELS,
    ablation_groups,
    dataset_label,
    fmt_option,
    ordered,
    run_caption,
    slug,
    variant_options,
)
from kdad.tables.summary import bold_best, dataset_level
from kdad.tables.writer import DASH, Table, fmt_mean_std, fmt_num

__all__ = ["LocalizationCell", "localization_cells", "localization_tables"]

LOCALIZATION_ORDER = ("gradients", "smooth_grad", "guided_backprop", "integrated_gradients")
METRICS = ("paper_pixel_metric", "pixel_auroc", "aupro")


#: the official MKD code's SmoothGrad noise (std as a fraction of the input range)
OFFICIAL_NOISE = 0.0025


@dataclass(frozen=True)
class LocalizationCell:
    variant: str
    localization: str
    blur_sigma: float
    normalization: str
    noise: float = float("nan")    # SmoothGrad's noise (only meaningful for smooth_grad)
    map_subset: str = ""           # "" = maps of every test image, else images of each label mapped

    @property
    def blurred(self) -> bool:
        return self.blur_sigma > 0

    @property
    def method_label(self) -> str:
        """The row label: the method, and SmoothGrad's noise (the official code's or a standard one)."""
        if self.localization != "smooth_grad" or np.isnan(self.noise):
            return self.localization
        kind = "official" if np.isclose(self.noise, OFFICIAL_NOISE) else "standard"
        return f"smooth_grad, noise {self.noise * 100:g} % ({kind})"

    @property
    def official(self) -> bool:
        """The setting the paper's Table 1 row stands for (SmoothGrad: the official noise)."""
        return self.localization != "smooth_grad" or np.isnan(self.noise) or np.isclose(self.noise, OFFICIAL_NOISE)

    @property
    def blur_label(self) -> str:
        return f"Gaussian σ={fmt_option(str(self.blur_sigma))}" if self.blurred else "no blur"


def _sigma(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def localization_cells(runs: pd.DataFrame, dataset: str, protocol: str, reference: str,
                       opts: dict) -> list[LocalizationCell]:
    """The reference and its map-only ablations that ran on (dataset, protocol); empty when the
    reference has no such ablation or its options do not say which localisation it used."""
    group = next((g for g in ablation_groups(runs) if g.dataset == dataset and g.reference == reference), None)
    if group is None or not group.reference_ran:
        return []
    ran = set(runs.loc[(runs["dataset"] == dataset) & (runs["protocol"] == protocol), "variant"])
    members = [a.variant for a in group.members if a.localization_only and a.variant in ran]
    if not members or reference not in ran:
        return []
    cells = []
    for v in [reference, *members]:
        o = opts.get((dataset, v), {})
        if "localization" not in o:
            return []
        subset = str(o.get("map_subset", "") or "")
        cells.append(LocalizationCell(v, o["localization"], _sigma(o.get("blur_sigma", "0")),
                                      o.get("map_normalization", ""), _sigma(o.get("smooth_grad_noise", "nan")),
                                      "" if subset.lower() in ("", "none", "nan") else subset))
    return cells


def localization_tables(runs: pd.DataFrame, paper: pd.DataFrame) -> list[Table]:
    opts = variant_options(runs)
    tables = []
    for group in ablation_groups(runs):
        dataset = group.dataset
        for protocol in ordered(runs.loc[runs["dataset"] == dataset, "protocol"], ("one-class", "multi-class")):
            every = localization_cells(runs, dataset, protocol, group.reference, opts)
            # one table per set of mapped images: cells compare methods on the same images only
            for subset in sorted({c.map_subset for c in every}, key=lambda x: (x != "", x)):
                cells = [c for c in every if c.map_subset == subset]
                rows = runs[(runs["dataset"] == dataset) & (runs["protocol"] == protocol)
                            & runs["variant"].isin([c.variant for c in cells])]
                metrics = [m for m in METRICS if m in rows and rows[m].notna().any()]
                if len(cells) < 2 or not metrics:
                    continue
                t = _table(group.reference, dataset, protocol, cells, rows, metrics, paper, subset)
                if t is not None:
                    tables.append(t)
    return tables


def _table(reference, dataset, protocol, cells, rows, metrics, paper, subset="") -> Table | None:
    by_norm = len({c.normalization for c in cells}) > 1
    blur_labels = sorted({c.blur_label for c in cells}, key=lambda b: (b != "no blur", b))
    base = {c.method_label: c.localization for c in cells}
    row_keys = sorted({(c.method_label, c.normalization) if by_norm else (c.method_label,) for c in cells},
                      key=lambda k: (LOCALIZATION_ORDER.index(base[k[0]]) if base[k[0]] in LOCALIZATION_ORDER
                                     else 99, k))
    official = {c.method_label: c.official for c in cells}
    p = paper[(paper["dataset"] == dataset) & (paper["protocol"] == protocol) & (paper["method"] == "mkd")
              & (paper["localization"] != "") & (paper["category"] == "mean")]
    display, values, tidy = {}, {}, []
    for m in metrics:
        dl = dataset_level(rows, m)
        dl = dl.set_index("variant") if len(dl) else dl
        if m == "paper_pixel_metric" and len(p):
            for blur in ("no", "yes"):
                col = f"paper (Table 1) · {'Gaussian' if blur == 'yes' else 'no blur'}"
                display[col] = []
                values[col] = [np.nan] * len(row_keys)
                for k in row_keys:
                    hit = p[(p["localization"] == base[k[0]]) & (p["blur"] == blur)] if official[k[0]] else p[:0]
                    display[col].append(fmt_num(hit["value"].iloc[0], 2) if len(hit) else DASH)
        for b in blur_labels:
            col = f"{METRIC_LABELS[m]} · {b}"
            texts, vals = [], []
            for k in row_keys:
                hit = [c for c in cells if c.blur_label == b and (c.method_label, c.normalization)[:len(k)] == k]
                if hit and hit[0].variant in getattr(dl, "index", []):
                    r = dl.loc[hit[0].variant]
                    texts.append(fmt_mean_std(r["mean"], r["std"], int(r["n"])))
                    vals.append(r["mean"])
                    tidy.append(dict(dataset=dataset, protocol=protocol, variant=hit[0].variant, metric=m,
                                     localization=hit[0].localization, row=k[0],
                                     normalization=hit[0].normalization, map_subset=subset,
                                     blur_sigma=hit[0].blur_sigma, **r[["mean", "std", "min", "max", "n",
                                                                         "n_categories"]].to_dict()))
                else:
                    texts.append(DASH)
                    vals.append(np.nan)
            if any(t != DASH for t in texts):
                display[col], values[col] = texts, vals
    if not tidy:
        return None
    if "map_images_per_second" in rows and rows["map_images_per_second"].notna().any():
        speed = rows.groupby("variant")["map_images_per_second"].mean()
        display["maps / s"] = []
        for k in row_keys:
            vs = [c.variant for c in cells if (c.method_label, c.normalization)[:len(k)] == k]
            display["maps / s"].append(fmt_num(speed.reindex(vs).mean(), 0))
    names = ["localization", "map normalization"] if by_norm else ["localization"]
    index = pd.MultiIndex.from_tuples(row_keys, names=names) if by_norm else pd.Index(
        [k[0] for k in row_keys], name="localization")
    frame = pd.DataFrame(display, index=index)
    vals = pd.DataFrame(values, index=index).reindex(columns=frame.columns)
    bold = bold_best(vals)
    variants = ", ".join(f"{c.variant} ({c.localization}, {c.blur_label})" for c in cells)
    notes = ["Cells: per-seed mean over categories, mean ± std over seeds (%); best per column in bold.",
             "paper pixel metric: the MKD paper's own ROC-AUC on defective images only (1000 thresholds, 3×3 "
             "opening); pixel AUROC and AU-PRO count every test image.",
             f"Variants: {variants}."]
    if any(c.startswith("paper (Table 1)") for c in frame.columns):
        notes.append("paper: the MKD paper's Table 1 (MVTec AD, its VGG16 expert; Gaussian σ = 4; SmoothGrad "
                     "with the official code's noise, so no paper number beside a standard noise).")
    mapped = ("every test image" if not subset else
              f"a fixed subset of each category's test images: {subset} good and {subset} defective, spread "
              "evenly over the test order (the same images for every method); image scores use every "
              "test image")
    notes.append(f"Maps of {mapped}.")
    caption = (f"{dataset_label(dataset)}, {protocol}: localisation methods of {reference} without / with "
               f"Gaussian blur, as in the paper's Table 1; maps of "
               f"{'every test image' if not subset else f'{subset} good + {subset} defective test images per category'}"
               f". Run: {run_caption(rows)}.")
    name = (f"localization_{slug(dataset)}_{slug(protocol)}" + ("" if reference == "mkd" else f"_{slug(reference)}")
            + (f"_maps{subset}" if subset else ""))
    return Table(name, caption, frame, pd.DataFrame(tidy), bold,
                 notes, kind="localization")
