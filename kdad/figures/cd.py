"""``critical_difference.png``: average ranks of the compared methods with the Nemenyi critical
difference and bars joining methods that are not significantly different (Demšar 2006, Fig. 1
style), over every (dataset, category) block in which all of them ran
(:func:`kdad.tables.ranks.rank_analysis`).  Drawn only when the Friedman test ran (at least
``MIN_METHODS_FOR_FRIEDMAN`` methods over ``MIN_BLOCKS_FOR_FRIEDMAN`` blocks, :mod:`kdad.stats`).
Tied methods share a rank and always one bar; the caption names them, so the left-to-right order of
their labels claims nothing."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from kdad.figures.style import Figure, new_figure, wrap
from kdad.tables.ranks import rank_analysis, tied_groups
from kdad.tables.results import dataset_label, seed_phrase
from kdad.tables.writer import fmt_p

__all__ = ["cd_cliques", "cd_figures"]


def cd_cliques(mean_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal groups of methods, consecutive by rank, whose ranks span less than ``cd``.

    Methods inside one group are not significantly different (Nemenyi); groups of one are omitted.
    Methods with equal mean ranks (a difference of 0 < ``cd``) always share a group.
    """
    r = _by_rank(mean_ranks)
    names, vals = list(r.index), r.to_numpy()
    cliques, last_end = [], -1
    for i in range(len(vals)):
        j = i
        while j + 1 < len(vals) and vals[j + 1] - vals[i] < cd:
            j += 1
        if j > i and j > last_end:
            cliques.append(names[i:j + 1])
            last_end = j
    return cliques


def _by_rank(mean_ranks: pd.Series) -> pd.Series:
    """Best rank first; equal ranks by name (a fixed order that states no ranking between them)."""
    keys = sorted(mean_ranks.index, key=lambda m: (round(float(mean_ranks[m]), 12), str(m)))
    return mean_ranks.reindex(keys)


def cd_figures(runs: pd.DataFrame) -> Iterator[Figure]:
    ra = rank_analysis(runs)
    if not ra.tested:
        return  # too few methods or blocks: the ranks table says why
    res = ra.result
    ranks = _by_rank(res.mean_ranks)
    k = res.k
    lo, hi = 1, max(k, int(np.ceil(ranks.max())))
    cliques = cd_cliques(ranks, res.cd)
    n_left = (k + 1) // 2
    rows = max(n_left, k - n_left)
    fig, axes = new_figure(7.5, 1.9 + 0.28 * rows + 0.12 * len(cliques))
    ax = axes[0, 0]
    ax.set_xlim(lo - 1.6, hi + 1.6)
    ax.set_ylim(-(rows + 1) * 0.3 - 0.25 - 0.12 * len(cliques), 0.95)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="k", lw=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, 0, 0.08, color="k", lw=1)
        ax.text(t, 0.12, str(t), ha="center", va="bottom", fontsize=8)
    ax.text((lo + hi) / 2, 0.32, "average rank (1 = best)", ha="center", va="bottom", fontsize=7, color="0.3")
    # the critical difference, drawn from rank 1
    ax.hlines(0.72, lo, lo + res.cd, color="k", lw=1.5)
    ax.vlines([lo, lo + res.cd], 0.67, 0.77, color="k", lw=1.5)
    ax.text(lo + res.cd / 2, 0.8, f"CD = {res.cd:.2f}", ha="center", va="bottom", fontsize=8)
    for c, members in enumerate(cliques):  # not significantly different: one thick bar
        y = -0.12 - 0.12 * c
        ax.hlines(y, ranks[members[0]] - 0.03, ranks[members[-1]] + 0.03, color="k", lw=3)
    base = -0.25 - 0.12 * len(cliques)
    for i, (name, r) in enumerate(ranks.items()):
        left = i < n_left
        row = i if left else k - 1 - i
        y = base - 0.3 * row
        x_text = lo - 0.3 if left else hi + 0.3
        ax.plot([r, r, x_text], [0, y, y], color="k", lw=0.8)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{name} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)
    sets = ", ".join(dataset_label(d) for d in ra.datasets)
    title = (f"Critical difference of image AUROC ranks ({sets}): k = {k} methods, N = {res.n_blocks} (dataset, "
             f"category) blocks where all ran; Friedman p = {fmt_p(res.p_value)} (N = {res.n_blocks}); "
             f"Nemenyi α = {res.alpha:g}")
    ties = tied_groups(ranks)
    ax.set_title(wrap(title, 7.0), fontsize=8)
    caption = (f"{title}. Datasets: {sets}; values averaged over {seed_phrase(ra.seeds)}"
               + (f"; left out for too few blocks: {', '.join(ra.dropped)}" if ra.dropped else "")
               + "".join(f"; tied (no order between them): {' = '.join(g)}" for g in ties) + ".")
    yield Figure("critical_difference", caption, fig, "ranks")
