"""``paper_comparison``: every number the MKD paper reports that we ran, beside ours.

Ours is the compared MKD variant (method ``mkd``, ``ablation_of`` empty; the one named ``mkd`` when
there are several).  Rows of the paper's Table 1 (a localisation method without / with Gaussian
blur) are matched to the MKD variants whose ``opt.localization`` and ``opt.blur_sigma`` say so.
Δ = ours − paper in percentage points; the interval is the range of our per-seed values with 2–3
seeds and a percentile bootstrap 95 % CI of the mean from 4 seeds on.
"""

from __future__ import annotations

import math

import pandas as pd

from kdad.stats import category_mean_per_seed, seed_interval
from kdad.tables.localization import localization_cells
from kdad.tables.results import METRIC_LABELS, dataset_label, main_rows, variant_options
from kdad.tables.summary import PAPER_CATEGORY_COUNT
from kdad.tables.writer import DASH, Table, fmt_mean_std, fmt_num

__all__ = ["mkd_variant", "paper_comparison"]


def mkd_variant(runs: pd.DataFrame, dataset: str, protocol: str) -> str | None:
    """The compared MKD variant of a dataset and protocol (``mkd`` when several)."""
    main = main_rows(runs)
    sel = main[(main["method"] == "mkd") & (main["dataset"] == dataset) & (main["protocol"] == protocol)]
    names = sorted(set(sel["variant"]))
    if not names:
        return None
    return "mkd" if "mkd" in names else names[0]


def _ours(values: pd.Series) -> dict:
    v = values.dropna().to_numpy(dtype=float) * 100
    iv = seed_interval(v)
    return {"ours_mean": float(v.mean()) if v.size else math.nan,
            "ours_std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
            "interval": iv.kind, "interval_low": iv.low, "interval_high": iv.high, "n_seeds": int(v.size),
            "interval_text": iv.label()}


def paper_comparison(runs: pd.DataFrame, paper: pd.DataFrame) -> Table | None:
    recs = []
    opts = variant_options(runs)
    for _, p in paper[paper["method"] == "mkd"].iterrows():
        dataset, protocol, metric = p["dataset"], p["protocol"], p["metric"]
        ref = mkd_variant(runs, dataset, protocol)
        if ref is None:
            continue
        variant = ref
        if p["localization"]:
            cells = localization_cells(runs, dataset, protocol, ref, opts)
            # the paper's setting (SmoothGrad: the official noise), maps of every test image first
            hit = sorted((c for c in cells if c.localization == p["localization"] and c.official
                          and c.blurred == (p["blur"] == "yes")), key=lambda c: (c.map_subset != "", c.variant))
            if not hit:
                continue
            variant = hit[0].variant
        src = runs[(runs["dataset"] == dataset) & (runs["protocol"] == protocol) & (runs["variant"] == variant)]
        if metric not in src or src[metric].isna().all():
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
        value = p["value"]
        recs.append({"dataset": dataset, "protocol": protocol, "category": p["category"], "metric": metric,
                     "localization": p["localization"], "blur": p["blur"], "variant": variant, "paper": value,
                     **ours, "delta": ours["ours_mean"] - value if pd.notna(value) else math.nan,
                     "n_categories": ncat, "verified": p["verified"], "source": p["source"],
                     "paper_note": p["note"]})
    if not recs:
        return None
    data = pd.DataFrame(recs)
    disp = []
    for _, r in data.iterrows():
        paper_txt = fmt_num(r["paper"], 2) if pd.notna(r["paper"]) else DASH
        if r["verified"] != "yes":
            paper_txt += " ‡"
        cat = r["category"]
        if cat == "mean" and pd.notna(r["n_categories"]):
            total = PAPER_CATEGORY_COUNT.get(r["dataset"])
            cat = f"mean ({int(r['n_categories'])}/{total} cat.)" if total else f"mean ({int(r['n_categories'])} cat.)"
        metric = METRIC_LABELS.get(r["metric"], r["metric"])
        if r["localization"]:
            metric += f" [{r['localization']}, {'Gaussian' if r['blur'] == 'yes' else 'no blur'}]"
        disp.append({"dataset": dataset_label(r["dataset"]), "protocol": r["protocol"], "category": cat,
                     "metric": metric, "paper": paper_txt,
                     "ours": fmt_mean_std(r["ours_mean"], r["ours_std"], r["n_seeds"]),
                     "Δ": f"{r['delta']:+.1f}" if pd.notna(r["delta"]) else DASH,
                     "spread of ours": r["interval_text"], "seeds": str(r["n_seeds"]), "variant": r["variant"]})
    frame = pd.DataFrame(disp).set_index(["dataset", "protocol", "category", "metric"])
    notes = ["Δ = ours − paper (percentage points). Spread of ours: the range (min–max) of the per-seed values "
             "with 2–3 seeds; from 4 seeds a percentile bootstrap 95 % CI of the mean (scipy.stats.bootstrap, "
             "2000 resamples, seed 0). Both describe seed noise only.",
             "mean (n/N cat.): our mean covers n of the paper's N categories; only n = N compares like with like."]
    if (data["verified"] != "yes").any():
        notes.append("‡ a widely cited value for MKD, not checked against the paper itself.")
    for _, r in data[data["paper"].isna()].iterrows():
        notes.append(f"{dataset_label(r['dataset'])}: the paper number is not stored ({r['paper_note']}).")
    notes.append("Our runs may differ from the paper in expert, epochs and image size (see the main tables' "
                 "captions); a gap is not by itself a failed reproduction.")
    return Table("paper_comparison", "MKD: the numbers the paper reports beside ours.", frame, data, None,
                 notes, kind="paper")
