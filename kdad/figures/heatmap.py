"""``heatmap_<dataset>_<protocol>[_aupro].png``: category × method heat map with the values written
in, per dataset and protocol (compared methods; mean over seeds, the dataset mean as a last column).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import seaborn as sns

from kdad.figures.style import VALUE_CMAP, Figure, new_figure, wrap
from kdad.tables.results import (
    METRIC_LABELS,
    dataset_label,
    datasets,
    main_rows,
    ordered,
    protocols,
    seed_phrase,
    slug,
)
from kdad.tables.summary import dataset_level, per_category

__all__ = ["heatmap_figures"]

METRICS = ("image_auroc", "aupro")


def heatmap_frame(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Methods (best dataset mean first) × categories and a last "mean" column, in %."""
    pc = per_category(rows, metric)
    dl = dataset_level(rows, metric)
    if pc.empty:
        return pd.DataFrame()
    grid = pc.pivot(index="variant", columns="category", values="mean")
    grid = grid[ordered(grid.columns)]
    grid["mean"] = dl.set_index("variant")["mean"].reindex(grid.index) if len(dl) else np.nan
    return grid.loc[grid["mean"].sort_values(ascending=False, na_position="last").index]


def heatmap_figures(runs: pd.DataFrame) -> Iterator[Figure]:
    main = main_rows(runs)
    for dataset in datasets(main):
        for protocol in protocols(main[main["dataset"] == dataset]):
            rows = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            for metric in METRICS:
                if metric not in rows or rows[metric].isna().all():
                    continue
                sub = rows.dropna(subset=[metric])
                grid = heatmap_frame(sub, metric)
                if grid.empty:
                    continue
                transpose = grid.shape[1] > 12 and grid.shape[1] > 2 * grid.shape[0]
                data = grid.T if transpose else grid
                n_rows, n_cols = data.shape
                small = n_rows * n_cols > 150
                width = max(4.5, 1.6 + 0.62 * n_cols)
                fig, axes = new_figure(width, 1.3 + 0.32 * n_rows)
                ax = axes[0, 0]
                finite = data.to_numpy(dtype=float)
                finite = finite[np.isfinite(finite)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
                sns.heatmap(data.astype(float), ax=ax, annot=True, fmt=".0f" if small else ".1f", cmap=VALUE_CMAP,
                            vmin=lo, vmax=hi,
                            linewidths=0.5, linecolor="white", annot_kws={"fontsize": 6 if small else 7},
                            cbar_kws={"label": f"{METRIC_LABELS[metric]} (%)", "shrink": 0.8})
                if transpose:
                    ax.axhline(n_rows - 1, color="white", lw=3)
                    ax.set_xlabel("method"), ax.set_ylabel("category")
                else:
                    ax.axvline(n_cols - 1, color="white", lw=3)
                    ax.set_xlabel("category"), ax.set_ylabel("method")
                crowded = sum(len(str(c)) + 2 for c in data.columns) * 0.07 > width - 1.6
                if crowded:
                    ax.set_xticks(ax.get_xticks(), ax.get_xticklabels(), rotation=40, ha="right",
                                  rotation_mode="anchor")
                ax.tick_params(axis="y", rotation=0)
                what = (f"{dataset_label(dataset)}, {protocol}: {METRIC_LABELS[metric]} (%) per category, mean over "
                        f"{seed_phrase(sub['seed'])}; last {'row' if transpose else 'column'}: per-seed mean over "
                        "categories")
                fig.suptitle(wrap(what, width), fontsize=8)
                name = f"heatmap_{slug(dataset)}_{slug(protocol)}" + ("" if metric == "image_auroc" else f"_{metric}")
                yield Figure(name, what + f"; {sub['variant'].nunique()} compared methods.", fig, "heatmap")
