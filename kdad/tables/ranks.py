"""``ranks``: average ranks of the compared methods, the Friedman test and Nemenyi's critical
difference (Demšar 2006), over (dataset, category) blocks across every dataset run.

A block is one (dataset, category): the unit of replication (seeds of a category share its data,
and the two protocols of a category share its test images, so neither is a block of its own).  A
method's value in a block is its image AUROC averaged over seeds, then over the protocols in which
every compared method ran that category.  Only blocks in which every compared method ran enter.  A
method that ran in few blocks would shrink the comparison to those few, so methods are dropped, the
one with the fewest blocks first, while that at least doubles the number of complete blocks or while
fewer than ``MIN_BLOCKS_FOR_FRIEDMAN`` blocks are complete (never below ``MIN_METHODS_FOR_FRIEDMAN``
methods); the caption names them.  The Friedman p and the critical difference need at least
``MIN_METHODS_FOR_FRIEDMAN`` methods over ``MIN_BLOCKS_FOR_FRIEDMAN`` blocks (:mod:`kdad.stats`);
with fewer the table shows the mean ranks and says why there is no test, and there is no
critical-difference figure.  Ties within a block share the average of their ranks.
:func:`rank_analysis` is shared with the critical-difference figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from kdad.stats import MIN_BLOCKS_FOR_FRIEDMAN, MIN_METHODS_FOR_FRIEDMAN, FriedmanResult, friedman_nemenyi
from kdad.tables.results import dataset_label, main_rows
from kdad.tables.writer import Table, fmt_p

__all__ = ["BLOCKS", "RankAnalysis", "rank_analysis", "ranks_table", "tied_groups"]

BLOCKS = ("dataset", "category")
CELLS = ("dataset", "protocol", "category")


@dataclass
class RankAnalysis:
    result: FriedmanResult
    value: str
    methods: list[str]
    dropped: list[str] = field(default_factory=list)
    blocks_per_method: dict[str, int] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Mean ranks exist (at least two methods on a common block)."""
        r = self.result
        return r.k >= 2 and r.n_blocks > 0

    @property
    def tested(self) -> bool:
        """The Friedman test ran: enough methods and blocks for a p and a critical difference."""
        return self.ok and self.result.tested

    @property
    def dataset_phrase(self) -> str:
        return ", ".join(dataset_label(d) for d in self.datasets)

    def describe(self) -> str:
        r = self.result
        head = (f"k = {r.k} methods over N = {r.n_blocks} (dataset, category) blocks where all ran, from "
                f"{self.dataset_phrase} (values averaged over seeds and over the protocols "
                f"{'/'.join(self.protocols)} where all ran)")
        if not self.tested:
            return f"{head}; no Friedman test and no critical difference: {r.note}"
        return f"{head}; Friedman p = {fmt_p(r.p_value)} (N = {r.n_blocks}); Nemenyi CD = {r.cd:.2f} at α = {r.alpha:g}"


def tied_groups(mean_ranks: pd.Series, digits: int = 2) -> list[list[str]]:
    """Methods whose mean ranks are equal (at the ``digits`` shown): the report claims no order among them."""
    groups = mean_ranks.round(digits).groupby(mean_ranks.round(digits)).groups
    return [sorted(map(str, names)) for _, names in sorted(groups.items()) if len(names) > 1]


def _blocks(cells: pd.DataFrame, methods: list[str]) -> pd.DataFrame:
    """(dataset, category) × methods: the mean over the protocols in which all ``methods`` ran."""
    complete = cells[methods].dropna()
    if complete.empty:
        return pd.DataFrame(columns=methods)
    return complete.groupby(level=list(BLOCKS), sort=True).mean()


def rank_analysis(runs: pd.DataFrame, value: str = "image_auroc", alpha: float = 0.05) -> RankAnalysis:
    main = main_rows(runs).dropna(subset=[value])
    avg = main.groupby([*CELLS, "variant"], as_index=False)[value].mean()
    cells = avg.pivot_table(index=list(CELLS), columns="variant", values=value)
    methods = sorted(cells.columns) if len(cells) else []
    counts = {m: len(cells[m].dropna().reset_index()[list(BLOCKS)].drop_duplicates()) for m in methods}
    dropped = []
    while len(methods) > MIN_METHODS_FOR_FRIEDMAN:
        n = len(_blocks(cells, methods))
        worst = min(methods, key=lambda m: (counts[m], m))
        rest = [m for m in methods if m != worst]
        n_rest = len(_blocks(cells, rest))
        if n_rest >= 2 * max(n, 1) or (n < MIN_BLOCKS_FOR_FRIEDMAN and n_rest > n):
            methods, dropped = rest, dropped + [worst]
        else:
            break
    blocks = _blocks(cells, methods) if methods else pd.DataFrame()
    long = blocks.stack().rename(value).reset_index() if len(blocks) else pd.DataFrame(
        columns=[*BLOCKS, "variant", value])
    long.columns = [*BLOCKS, "variant", value]
    res = friedman_nemenyi(long, value, block_on=BLOCKS, entity="variant", alpha=alpha)
    used = cells[methods].dropna() if methods else cells.iloc[:0]
    prots = sorted(set(used.index.get_level_values("protocol"))) if len(used) else []
    return RankAnalysis(res, value, methods, dropped, counts, sorted(set(main["seed"].astype(int))),
                        sorted(set(blocks.index.get_level_values("dataset"))) if len(blocks) else [], prots)


def ranks_table(runs: pd.DataFrame) -> Table | None:
    ra = rank_analysis(runs)
    res = ra.result
    if not ra.ok:
        return None
    data = pd.DataFrame({"variant": res.mean_ranks.index, "mean_rank": res.mean_ranks.to_numpy()})
    data["blocks_run"] = data["variant"].map(ra.blocks_per_method)
    data["k"], data["n_blocks"], data["blocks_dropped"] = res.k, res.n_blocks, res.blocks_dropped
    data["friedman_chi2"], data["friedman_p"] = res.statistic, res.p_value
    data["alpha"], data["nemenyi_q"], data["nemenyi_cd"] = res.alpha, res.q_alpha, res.cd
    data["datasets"], data["note"] = ";".join(ra.datasets), res.note
    frame = pd.DataFrame({"mean rank": [f"{r:.2f}" for r in res.mean_ranks],
                          "blocks run": [str(ra.blocks_per_method[m]) for m in res.mean_ranks.index]},
                         index=pd.Index(res.mean_ranks.index, name="method"))
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    best = res.mean_ranks.round(2) == res.mean_ranks.round(2).min()
    bold.iloc[:, 0] = best.to_numpy()  # every method tied at the best rank
    caption = (f"Average rank of image AUROC (1 = best, ties averaged): {ra.describe()}"
               + (f" (q = {res.q_alpha:.3f})." if ra.tested else "."))
    notes = []
    if res.blocks_dropped:
        notes.append(f"{res.blocks_dropped} block(s) lacking at least one of these methods were left out.")
    if ra.dropped:
        notes.append("Left out (ran in too few blocks to compare on common ground): "
                     + ", ".join(f"{m} ({ra.blocks_per_method[m]} blocks)" for m in ra.dropped) + ".")
    for group in tied_groups(res.mean_ranks):
        notes.append(f"Tied mean rank, no order between them: {', '.join(group)}.")
    if ra.tested:
        notes.append("Methods whose mean ranks differ by less than CD are not significantly different (Nemenyi "
                     "test; q from scipy's studentized range, q_α(k, ∞)/√2).")
    else:
        notes.append(f"The Friedman test and the Nemenyi critical difference need at least "
                     f"{MIN_METHODS_FOR_FRIEDMAN} methods over at least {MIN_BLOCKS_FOR_FRIEDMAN} (dataset, category) "
                     "blocks; the mean ranks alone support no claim of a difference.")
    return Table("ranks", caption, frame, data, bold, notes, kind="ranks")
