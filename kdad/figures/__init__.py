"""Report figures from the tidy result files (seaborn / matplotlib, Agg backend, PNG).

One module per figure family; each yields :class:`~kdad.figures.style.Figure` records and writes
nothing (``kdad.report`` saves them).  A figure is drawn only when its data exists.

===========================================  ================================================
``heatmap_<dataset>_<protocol>[_aupro]``     :mod:`.heatmap` category × method, values written in
``critical_difference``                      :mod:`.cd` average ranks, Nemenyi CD, Friedman p
``hints_<dataset>``                          :mod:`.hints` AUROC against the hint layers that ran
``maps_<dataset>_<protocol>_<category>``     :mod:`.maps` example anomaly maps (examples.npz)
``curves_<dataset>_<protocol>``              :mod:`.curves` mean ROC and PRO curves
``convergence_<dataset>``                    :mod:`.convergence` training loss per epoch
===========================================  ================================================

Figures import from :mod:`kdad.tables` (data loading, ordering, rank analysis); tables never import
figures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from kdad.figures.cd import cd_cliques, cd_figures
from kdad.figures.convergence import convergence_figures
from kdad.figures.curves import curve_figures
from kdad.figures.heatmap import heatmap_figures
from kdad.figures.hints import hint_figures
from kdad.figures.maps import ExampleFile, example_file, map_figures
from kdad.figures.style import Figure, MethodStyles, theme
from kdad.tables.results import Results, ablation_groups, main_rows

__all__ = ["ExampleFile", "Figure", "build_figures", "cd_cliques", "example_file"]


def _labels(results: Results):
    """Display names for map rows: an ablation is ``variant (changed options)``."""
    names = {}
    if results.runs is not None:
        for g in ablation_groups(results.runs):
            for a in g.members:
                names[a.variant] = f"{a.variant}\n{a.label}" if a.label.startswith("(") else f"{a.variant}\n({a.label})"
    return lambda v: names.get(v, v)


def build_figures(results: Results, examples: Sequence[ExampleFile] = ()) -> Iterator[Figure]:
    """Every figure whose data exists, in report order (one open figure at a time)."""
    theme()
    runs = results.runs
    names = []
    for df in (runs, results.curves):
        if df is not None:
            names += list(main_rows(df)["variant"].unique())
    styles = MethodStyles(names)
    if runs is not None:
        yield from heatmap_figures(runs)
        yield from cd_figures(runs)
        yield from hint_figures(runs)
    if results.curves is not None:
        yield from curve_figures(results.curves, runs, styles)
    if results.history is not None:
        yield from convergence_figures(results.history)
    if examples:
        yield from map_figures(examples, _labels(results))
