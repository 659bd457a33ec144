"""``convergence_<dataset>.png``: training loss against epoch for every trained compared method,
from ``results/history.csv``: one panel per method (losses of different methods are on different
scales), one line per protocol and training phase, the mean over categories × seeds with a band
from the lowest to the highest model, on a log scale."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pandas as pd

from kdad.figures.style import Figure, new_figure, wrap
from kdad.tables.results import dataset_label, datasets, main_rows, ordered, protocols, seed_phrase, slug

__all__ = ["convergence_figures"]

PROTOCOL_COLORS = {"one-class": "#0072B2", "multi-class": "#D55E00"}
PHASE_STYLES = ("-", "--", ":", "-.")


def convergence_figures(history: pd.DataFrame) -> Iterator[Figure]:
    main = main_rows(history).copy()
    main["loss"] = pd.to_numeric(main["loss"], errors="coerce")
    main = main.dropna(subset=["loss"])
    for dataset in datasets(main):
        d = main[main["dataset"] == dataset]
        variants = sorted(ordered(d["variant"]), key=lambda v: v != "mkd")
        ncols = min(4, len(variants))
        nrows = math.ceil(len(variants) / ncols)
        width = 3.0 * ncols + 1.4
        fig, axes = new_figure(width, 2.5 * nrows + 0.7, nrows=nrows, ncols=ncols)
        phases = ordered(d["phase"])
        for ax, v in zip(axes.ravel(), variants):
            g = d[d["variant"] == v]
            for protocol in protocols(g):
                for k, phase in enumerate(phases):
                    h = g[(g["protocol"] == protocol) & (g["phase"] == phase)]
                    if h.empty:
                        continue
                    s = h.groupby("epoch")["loss"].agg(["mean", "min", "max", "size"]).reset_index()
                    color = PROTOCOL_COLORS.get(protocol, "0.3")
                    label = protocol + (f", {phase}" if len(phases) > 1 else "") + f" ({int(s['size'].max())} models)"
                    ax.plot(s["epoch"], s["mean"], color=color, ls=PHASE_STYLES[k % len(PHASE_STYLES)], lw=1.3,
                            marker="o" if len(s) < 4 else None, ms=3, label=label)
                    ax.fill_between(s["epoch"], s["min"], s["max"], color=color, alpha=0.18, lw=0)
            if (g["loss"] > 0).all():
                ax.set_yscale("log")
            ax.set_title(v, fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss")
            ax.legend(fontsize=6, loc="upper right", frameon=True, framealpha=0.8)
        for ax in axes.ravel()[len(variants):]:
            ax.set_visible(False)
        what = (f"{dataset_label(dataset)}: training loss per epoch of {len(variants)} trained compared method(s), "
                f"mean over categories × {seed_phrase(d['seed'])}, band: lowest to highest model")
        fig.suptitle(wrap(what, width), fontsize=8)
        yield Figure(f"convergence_{slug(dataset)}", what + ".", fig, "convergence")
