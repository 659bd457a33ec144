"""``curves_<dataset>_<protocol>.png``: image-level ROC and pixel-level PRO curves of the compared
methods, from ``results/curves.csv`` (each curve sampled at fixed x values, so curves average point
by point): per method the mean curve over categories × seeds.  The legend gives each method's mean
area (image AUROC, AU-PRO from ``runs.csv`` when there)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from kdad.figures.style import Figure, MethodStyles, new_figure, wrap
from kdad.tables.results import dataset_label, datasets, main_rows, protocols, seed_phrase, slug

__all__ = ["curve_figures"]

PANELS = (("roc", "image ROC", "false positive rate (images)", "true positive rate", "image_auroc"),
          ("pro", "pixel PRO (FPR ≤ 0.3)", "false positive rate (pixels)", "per-region overlap", "aupro"))


def curve_figures(curves: pd.DataFrame, runs: pd.DataFrame | None, styles: MethodStyles) -> Iterator[Figure]:
    main = main_rows(curves)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            c = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            panels = [p for p in PANELS if (c["curve"] == p[0]).any()]
            if not panels:
                continue
            r = None if runs is None else main_rows(runs)
            if r is not None:
                r = r[(r["dataset"] == dataset) & (r["protocol"] == protocol)]
            width = 3.6 * len(panels) + 1.8
            fig, axes = new_figure(width, 3.6, ncols=len(panels))
            for ax, (curve, title, xlabel, ylabel, metric) in zip(axes[0], panels):
                g = c[c["curve"] == curve]
                mean = g.groupby(["variant", "x"])["y"].mean().reset_index()
                area = (r.groupby("variant")[metric].mean() * 100 if r is not None and metric in r
                        else pd.Series(dtype=float))
                order = sorted(mean["variant"].unique(), key=lambda v: -area.get(v, -1.0))
                for v in order:
                    m = mean[mean["variant"] == v]
                    a = area.get(v)
                    ax.plot(m["x"], m["y"], lw=1.4, label=f"{v} ({a:.1f})" if pd.notna(a) else v, **styles.line(v))
                if curve == "roc":
                    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="chance")
                    ax.set_xlim(0, 1)
                else:
                    ax.set_xlim(0, float(g["x"].max()))
                ax.set_ylim(0, 1.01)
                ax.set_title(title, fontsize=8)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(ylabel)
                ax.legend(title=f"method ({'AUROC' if curve == 'roc' else 'AU-PRO'} %)", loc="upper left",
                          bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=6, title_fontsize=6)
            ncat = c["category"].nunique()
            what = (f"{dataset_label(dataset)}, {protocol}: mean curves of the compared methods over {ncat} "
                    f"categories × {seed_phrase(c['seed'])}")
            fig.suptitle(wrap(what, width), fontsize=8)
            yield Figure(f"curves_{slug(dataset)}_{slug(protocol)}", what + "; " + ", ".join(p[1] for p in panels)
                         + ".", fig, "curves")
