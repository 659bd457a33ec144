"""Paper-style tables from the tidy result files (``docs/results.md``).

One module per table family; each returns :class:`~kdad.tables.writer.Table` objects and writes
nothing (``kdad.report`` writes ``<name>.md``, ``.tex`` and ``.csv`` for each):

====================================  ===========================================================
``main_<dataset>_<protocol>``         :mod:`.main` image AUROC, methods × categories
``main_<d>_<p>_pixel``                :mod:`.main` pixel AUROC, AU-PRO, paper pixel metric, AP, F1-max
``metrics_<d>_<p>``                   :mod:`.main` every computed metric at dataset level
``summary``                           :mod:`.main` dataset-level image AUROC for the README
``paper_comparison``                  :mod:`.paper` the paper's MKD numbers beside ours
``protocols_<dataset>``               :mod:`.protocols` one-class beside multi-class, Δ and Wilcoxon p
``ablation_<dataset>``                :mod:`.ablations` groups by ``ablation_of``, Δ and Wilcoxon p
``localization_<d>_<p>``              :mod:`.localization` the paper's Table 1 shape
``defects_<d>_<p>``, ``levels_<d>_<p>``  :mod:`.defects` per defect kind and per difficulty level
``ranks``                             :mod:`.ranks` average ranks, Friedman p, Nemenyi CD
``speed``                             :mod:`.speed` cost per method and the machine it ran on
``training``                          :mod:`.training` training budget and convergence
====================================  ===========================================================
"""

from __future__ import annotations

from kdad.tables.ablations import ablation_tables
from kdad.tables.defects import defect_tables
from kdad.tables.localization import localization_tables
from kdad.tables.main import main_tables, summary_table
from kdad.tables.paper import paper_comparison
from kdad.tables.protocols import protocol_tables
from kdad.tables.ranks import rank_analysis, ranks_table
from kdad.tables.results import Results, ResultsError, load_results
from kdad.tables.speed import speed_table
from kdad.tables.summary import load_paper_numbers
from kdad.tables.training import training_table
from kdad.tables.writer import Table, render

__all__ = ["Results", "ResultsError", "Table", "build_tables", "load_paper_numbers", "load_results",
           "rank_analysis", "render"]


def build_tables(results: Results, paper=None) -> list[Table]:
    """Every table whose data exists, in report order."""
    paper = load_paper_numbers() if paper is None else paper
    runs = results.runs
    tables: list[Table] = []
    if runs is not None:
        tables += main_tables(runs, paper)
        tables += protocol_tables(runs)
        for t in (summary_table(runs, paper), paper_comparison(runs, paper)):
            if t is not None:
                tables.append(t)
        tables += ablation_tables(runs)
        tables += localization_tables(runs, paper)
    if results.defects is not None:
        tables += defect_tables(results.defects)
    if runs is not None:
        tables += [t for t in (ranks_table(runs), speed_table(runs)) if t is not None]
    if results.history is not None:
        t = training_table(results.history, runs)
        if t is not None:
            tables.append(t)
    return tables
