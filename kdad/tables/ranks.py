"""``ranks``: average ranks of the compared methods, the Friedman test and Nemenyi's critical
difference (Demšar 2006), over (dataset, protocol, category) blocks.

A block is one (dataset, protocol, category); a method's value in it is its image AUROC averaged
over the seeds it ran.  Only blocks in which every compared method ran enter.  A method that ran
in few blocks would shrink the comparison to those few, so methods are dropped, the one with the
fewest blocks first, while that at least doubles the number of complete blocks (or while fewer than
two blocks are complete); the caption names them.  :func:`rank_analysis` is shared with the
critical-difference figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from kdad.stats import FriedmanResult, friedman_nemenyi
from kdad.tables.results import main_rows
from kdad.tables.writer import Table, fmt_p

__all__ = ["BLOCKS", "RankAnalysis", "rank_analysis", "ranks_table"]

BLOCKS = ("dataset", "protocol", "category")


@dataclass
class RankAnalysis:
    result: FriedmanResult
    value: str
    methods: list[str]
    dropped: list[str] = field(default_factory=list)
    blocks_per_method: dict[str, int] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        r = self.result
        return r.k >= 2 and r.n_blocks > 0 and not math.isnan(r.cd)

    def describe(self) -> str:
        r = self.result
        fried = (f"Friedman p = {fmt_p(r.p_value)}" if not math.isnan(r.p_value) else f"no Friedman test ({r.note})")
        return (f"k = {r.k} methods over N = {r.n_blocks} (dataset, protocol, category) blocks where all ran "
                f"(values averaged over seeds); {fried}; Nemenyi CD = {r.cd:.2f} at α = {r.alpha:g}")


def _complete(table: pd.DataFrame, methods: list[str]) -> int:
    return int(table[methods].notna().all(axis=1).sum())


def rank_analysis(runs: pd.DataFrame, value: str = "image_auroc", alpha: float = 0.05) -> RankAnalysis:
    main = main_rows(runs).dropna(subset=[value])
    avg = main.groupby([*BLOCKS, "variant"], as_index=False)[value].mean()
    table = avg.pivot_table(index=list(BLOCKS), columns="variant", values=value)
    methods = sorted(table.columns) if len(table) else []
    counts = {m: int(table[m].notna().sum()) for m in methods}
    dropped = []
    while len(methods) > 2:
        n = _complete(table, methods)
        worst = min(methods, key=lambda m: (counts[m], m))
        rest = [m for m in methods if m != worst]
        if n < 2 or _complete(table, rest) >= 2 * n:
            methods, dropped = rest, dropped + [worst]
        else:
            break
    sel = avg[avg["variant"].isin(methods)]
    res = friedman_nemenyi(sel, value, block_on=BLOCKS, entity="variant", alpha=alpha)
    used = table[methods].dropna().index.get_level_values("dataset") if len(table) else []
    return RankAnalysis(res, value, methods, dropped, counts, sorted(set(main["seed"].astype(int))),
                        sorted(set(used)))  # the datasets of the blocks ranked, not every dataset run


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
    frame = pd.DataFrame({"mean rank": [f"{r:.2f}" for r in res.mean_ranks],
                          "blocks run": [str(ra.blocks_per_method[m]) for m in res.mean_ranks.index]},
                         index=pd.Index(res.mean_ranks.index, name="method"))
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold.iloc[0, 0] = True
    caption = (f"Average rank of image AUROC (1 = best, ties averaged): {ra.describe()} "
               f"(q = {res.q_alpha:.3f}).")
    notes = []
    if res.blocks_dropped:
        notes.append(f"{res.blocks_dropped} block(s) lacking at least one of these methods were left out.")
    if ra.dropped:
        notes.append("Left out (ran in too few blocks to compare on common ground): "
                     + ", ".join(f"{m} ({ra.blocks_per_method[m]} blocks)" for m in ra.dropped) + ".")
    notes.append("Methods whose mean ranks differ by less than CD are not significantly different (Nemenyi "
                 "test; q from scipy's studentized range, q_α(k, ∞)/√2).")
    return Table("ranks", caption, frame, data, bold, notes, kind="ranks")
