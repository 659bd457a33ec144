"""``hints_<dataset>.png``: image AUROC against the hint layers used, for a reference variant and
its ablations that change only ``opt.train_hints`` / ``opt.score_hints``.

Only the configurations that ran appear, the reference included (its own options say which hints it
used); each is one x position labelled ``train k / score m``.  Markers are the mean over seeds of the
per-seed category mean, bars the min–max over seeds; no line joins configurations.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from kdad.figures.style import Figure, new_figure, wrap
from kdad.stats import category_mean_per_seed
from kdad.tables.results import (
    ablation_groups,
    dataset_label,
    hint_count,
    protocols,
    seed_phrase,
    slug,
    variant_options,
)

__all__ = ["hint_figures"]

PROTOCOL_MARKERS = {"one-class": "o", "multi-class": "s"}


def hint_points(runs: pd.DataFrame, dataset: str, reference: str, members: list[str], opts: dict) -> pd.DataFrame:
    """Per protocol and hint configuration: mean, min, max over seeds of the category mean (%)."""
    recs = []
    for v in [reference, *members]:
        o = opts.get((dataset, v), {})
        t, s = hint_count(o.get("train_hints", "")), hint_count(o.get("score_hints", ""))
        if t is None or s is None:
            continue
        rows = runs[(runs["dataset"] == dataset) & (runs["variant"] == v)]
        sl = category_mean_per_seed(rows, "image_auroc", ["protocol"])
        for protocol, g in sl.groupby("protocol"):
            vals = g["image_auroc"].to_numpy(dtype=float) * 100
            recs.append(dict(protocol=protocol, variant=v, train=t, score=s, reference=v == reference,
                             mean=vals.mean(), low=vals.min(), high=vals.max(), seeds=len(vals),
                             n_categories=int(g["n_categories"].iloc[0])))
    return pd.DataFrame(recs)


def hint_figures(runs: pd.DataFrame) -> Iterator[Figure]:
    opts = variant_options(runs)
    for group in ablation_groups(runs):
        members = [a.variant for a in group.members if a.hints_only]
        if not members or not group.reference_ran:
            continue
        pts = hint_points(runs, group.dataset, group.reference, members, opts)
        if pts.empty:
            continue
        # protocols in which a hint ablation ran; the reference alone shows no trend
        prots = [p for p in protocols(pts) if (~pts.loc[pts["protocol"] == p, "reference"]).any()]
        pts = pts[pts["protocol"].isin(prots)]
        configs = sorted({(t, s) for t, s in zip(pts["train"], pts["score"])})
        if len(configs) < 2:
            continue
        ref_cfg = {(t, s) for t, s, r in zip(pts["train"], pts["score"], pts["reference"]) if r}
        labels = [f"train {t} / score {s}" + (f"\n({group.reference})" if (t, s) in ref_cfg else "")
                  for t, s in configs]
        width = max(5.0, 1.8 + 1.0 * len(configs))
        fig, axes = new_figure(width, 3.6)
        ax = axes[0, 0]
        dodge = 0.25 if len(prots) > 1 else 0.0
        palette = dict(zip(prots, ("#0072B2", "#D55E00", "#009E73", "#CC79A7")))
        for i, protocol in enumerate(prots):
            g = pts[pts["protocol"] == protocol]
            x = np.array([configs.index((t, s)) for t, s in zip(g["train"], g["score"])], dtype=float)
            x += (i - (len(prots) - 1) / 2) * dodge
            ax.errorbar(x, g["mean"], yerr=[g["mean"] - g["low"], g["high"] - g["mean"]], fmt=
                        PROTOCOL_MARKERS.get(protocol, "D"), color=palette[protocol], capsize=4, markersize=6,
                        linestyle="none", label=protocol)
        ax.set_xticks(range(len(configs)), labels)
        ax.set_xlim(-0.6, len(configs) - 0.4)
        ax.set_xlabel("hint layers used in training / in scoring (last layers of the expert)")
        ax.set_ylabel("image AUROC (%)")
        ax.legend(title="protocol", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        seeds = seed_phrase(runs.loc[(runs["dataset"] == group.dataset)
                                     & runs["variant"].isin([group.reference, *members]), "seed"])
        what = (f"{dataset_label(group.dataset)}: hint ablation of {group.reference} ({', '.join(prots)}), image "
                f"AUROC as per-seed mean over categories; markers: mean, bars: min–max over {seeds}")
        fig.suptitle(wrap(what, width), fontsize=8)
        name = f"hints_{slug(group.dataset)}" + ("" if group.reference == "mkd" else f"_{slug(group.reference)}")
        variants = ", ".join([group.reference, *members])
        yield Figure(name, f"{what}; variants {variants}; only the configurations that ran.", fig, "ablation")
