"""Statistics for the report: spread over seeds, intervals, paired tests and ranks.

Everything here takes tidy result rows (one row per run and category, as ``results/runs.csv``
holds them, see ``docs/results.md``) and knows no method.  Conventions:

* values are whatever the caller passes (AUROC fractions in the result files);
* "higher is better" for every value ranked here (AUROC, AU-PRO);
* functions are deterministic: the bootstrap takes an explicit seed.

References
----------
J. Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1-30, 2006
(Friedman test, Nemenyi post-hoc test and its critical difference).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = [
    "MIN_BLOCKS_FOR_FRIEDMAN",
    "MIN_METHODS_FOR_FRIEDMAN",
    "MIN_SEEDS_FOR_CI",
    "WILCOXON_MIN_PAIRS",
    "FriedmanResult",
    "Interval",
    "average_ranks",
    "bootstrap_ci",
    "category_mean_per_seed",
    "complete_blocks",
    "friedman_nemenyi",
    "mean_std",
    "nemenyi_cd",
    "nemenyi_q",
    "seed_interval",
    "wilcoxon_vs_reference",
]

# fewer non-zero paired differences than this and the two-sided Wilcoxon signed-rank test cannot
# reach p < 0.05 (with n = 5 the smallest exact two-sided p is 2 / 2**5 = 0.0625): no p is reported
WILCOXON_MIN_PAIRS = 6

# the floor below which no Friedman p and no Nemenyi critical difference is reported: at least 3
# entities (two are compared with the paired Wilcoxon test) over at least 5 blocks.  Demšar (2006,
# Sec. 3.2.2) calls the chi-squared approximation behind scipy's p accurate only for N > 10 and k > 5;
# below 5 blocks it is too crude to print, and a critical difference over so few blocks spans most
# of the rank scale.  Blocks are units of replication (categories), never seeds.
MIN_METHODS_FOR_FRIEDMAN = 3
MIN_BLOCKS_FOR_FRIEDMAN = 5

# with fewer seeds than this a bootstrap "95 % interval" of the mean is meaningless (3 values have
# at most 10 distinct resample means): report the range of the values instead
MIN_SEEDS_FOR_CI = 4


def mean_std(df: pd.DataFrame, by: Sequence[str] | str, value: str) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof = 1), min, max and count of ``value`` per group.

    Rows where ``value`` is NaN are ignored (a metric that was not computed is not a zero).
    Returns one row per group with columns ``*by, mean, std, min, max, n``; ``std`` is NaN when n = 1.
    """
    by = [by] if isinstance(by, str) else list(by)
    data = df.dropna(subset=[value])
    if data.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "min", "max", "n"])
    grouped = data.groupby(by, sort=True, dropna=False)[value]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), min="min", max="max", n="count").reset_index()
    out["n"] = out["n"].astype(int)
    return out


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (``scipy.stats.bootstrap``).

    ``n_boot`` resamples with replacement drawn by ``numpy.random.default_rng(seed)``, so the
    interval is deterministic.  NaNs are dropped; an empty input gives ``(nan, nan)`` and a single
    value (or identical values) ``(v, v)``.  With a handful of seeds the interval describes seed
    noise only and is optimistic: :func:`seed_interval` shows the range below ``MIN_SEEDS_FOR_CI``.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    if x.size == 1 or np.all(x == x[0]):
        return (float(x[0]), float(x[0]))
    res = sps.bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=1 - alpha, method="percentile",
                        vectorized=True, rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


@dataclass(frozen=True)
class Interval:
    """An interval around a mean over seeds and what it is: ``"95% CI"`` or ``"range"``."""

    kind: str
    low: float
    high: float
    n: int

    def label(self, digits: int = 1) -> str:
        if self.n < 2 or math.isnan(self.low):
            return "–"
        text = f"{self.low:.{digits}f}–{self.high:.{digits}f}"
        return f"[{text}] (95% CI)" if self.kind == "95% CI" else f"{text} (range)"


def seed_interval(values: Sequence[float] | np.ndarray, alpha: float = 0.05, seed: int = 0) -> Interval:
    """A bootstrap 95 % CI of the mean with at least ``MIN_SEEDS_FOR_CI`` values, else their range.

    Two or three seeds cannot support a confidence statement, so they are shown as min–max.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return Interval("range", math.nan, math.nan, 0)
    if x.size < MIN_SEEDS_FOR_CI:
        return Interval("range", float(x.min()), float(x.max()), int(x.size))
    lo, hi = bootstrap_ci(x, alpha=alpha, seed=seed)
    return Interval("95% CI", lo, hi, int(x.size))


def _check_unique(df: pd.DataFrame, keys: list[str], what: str) -> None:
    dup = df.duplicated(subset=keys, keep=False)
    if dup.any():
        example = df.loc[dup, keys].head(3).to_dict("records")
        raise ValueError(f"{what}: {int(dup.sum())} rows share the same {keys}; e.g. {example}. "
                         "Each key must identify one run.")


def wilcoxon_vs_reference(df: pd.DataFrame, reference_variant: str, value: str = "image_auroc",
                          pair_on: Sequence[str] = ("dataset", "protocol", "category"),
                          entity: str = "variant", replicate: str | None = "seed") -> pd.DataFrame:
    """Paired two-sided Wilcoxon signed-rank test of every other variant against a reference, one
    pair per unit of replication (by default a category).

    Seeds of one category are not independent replications (they share the category's data, and a
    re-scoring variant shares the very models), so they are never pairs of their own: for each
    ``pair_on`` key (by default dataset, protocol, category) the runs of the two variants are matched
    on ``replicate`` (the seed), only the replicates both ran are kept, and the pair is the two
    means over those replicates.  The differences are ``other − reference``.  For each other variant
    the result holds ``n`` (pairs, i.e. categories), ``mean_diff``, ``median_diff``, ``statistic``,
    ``p_value`` (``scipy.stats.wilcoxon`` with its defaults: two-sided, zero differences dropped),
    ``n_replicates`` (the fewest replicates behind one pair), ``replicate_sd`` (the within-pair
    spread: the mean over pairs of the std over replicates of the difference, NaN with one replicate;
    it describes seed noise and enters no test) and ``note``.  When fewer than ``WILCOXON_MIN_PAIRS``
    differences are non-zero (including: all are zero), ``statistic`` and ``p_value`` are NaN and the
    note says why.  Duplicate keys are an error: a replicate is one run.  ``replicate=None`` pairs
    rows on ``pair_on`` alone.
    """
    pair_on = list(pair_on)
    reps = [replicate] if replicate else []
    data = df.dropna(subset=[value])
    _check_unique(data, [*pair_on, *reps, entity], "wilcoxon_vs_reference")
    ref = data[data[entity] == reference_variant][[*pair_on, *reps, value]]
    if ref.empty:
        raise ValueError(f"reference {entity} {reference_variant!r} has no rows with {value}")
    rows = []
    for other in sorted(set(data[entity]) - {reference_variant}):
        cur = data[data[entity] == other][[*pair_on, *reps, value]]
        merged = cur.merge(ref, on=[*pair_on, *reps], suffixes=("_other", "_ref"))
        merged["diff"] = merged[f"{value}_other"] - merged[f"{value}_ref"]
        if merged.empty:
            per_unit = pd.DataFrame(columns=["diff", "sd", "count"])
        else:
            per_unit = merged.groupby(pair_on, sort=True)["diff"].agg(
                diff="mean", sd=lambda v: v.std(ddof=1), count="count")
        diff = per_unit["diff"].to_numpy(dtype=float)
        nonzero = int(np.count_nonzero(diff))
        row = {entity: other, "reference": reference_variant, "n": int(diff.size),
               "mean_diff": float(diff.mean()) if diff.size else math.nan,
               "median_diff": float(np.median(diff)) if diff.size else math.nan,
               "statistic": math.nan, "p_value": math.nan,
               "n_replicates": int(per_unit["count"].min()) if diff.size else 0,
               "replicate_sd": float(per_unit["sd"].mean()) if diff.size and per_unit["sd"].notna().any()
               else math.nan, "note": ""}
        if diff.size and nonzero == 0:
            row["note"] = "all differences are zero: no test"
        elif nonzero < WILCOXON_MIN_PAIRS:
            row["note"] = f"{nonzero} non-zero pair(s) < {WILCOXON_MIN_PAIRS}: no test"
        else:
            res = sps.wilcoxon(diff, alternative="two-sided")
            row["statistic"] = float(res.statistic)
            row["p_value"] = float(res.pvalue)
        rows.append(row)
    return pd.DataFrame(rows, columns=[entity, "reference", "n", "mean_diff", "median_diff", "statistic",
                                       "p_value", "n_replicates", "replicate_sd", "note"])


def complete_blocks(df: pd.DataFrame, value: str, block_on: Sequence[str], entity: str) -> pd.DataFrame:
    """Blocks × entities table of ``value``, keeping only blocks in which every entity has a value.

    Rank statistics compare entities on the same blocks; a block missing an entity is dropped rather
    than imputed.  Duplicate (block, entity) keys are an error.
    """
    block_on = list(block_on)
    data = df.dropna(subset=[value])
    _check_unique(data, [*block_on, entity], "complete_blocks")
    if data.empty:
        return pd.DataFrame()
    table = data.pivot_table(index=block_on, columns=entity, values=value, aggfunc="first")
    return table.dropna(axis=0, how="any")


def average_ranks(df: pd.DataFrame, value: str,
                  block_on: Sequence[str] = ("dataset", "protocol", "category"),
                  entity: str = "variant") -> pd.Series:
    """Mean rank of each entity over the complete blocks (Demšar 2006, Sec. 3.2.2).

    Within a block the highest ``value`` gets rank 1; ties share the average of their ranks.
    Returns the mean ranks sorted best first (name ``mean_rank``); blocks missing an entity are
    dropped (see :func:`complete_blocks`).
    """
    table = complete_blocks(df, value, block_on, entity)
    if table.empty:
        return pd.Series(dtype=float, name="mean_rank")
    ranks = table.rank(axis=1, ascending=False, method="average")
    return ranks.mean(axis=0).sort_values().rename("mean_rank")


def nemenyi_q(k: int, alpha: float = 0.05) -> float:
    """Critical value q_α of the Nemenyi test for ``k`` entities: the studentized range quantile
    ``q_{1−α}(k, ∞) / √2`` (``scipy.stats.studentized_range``).  Demšar 2006, Table 5(a) lists it for
    k = 2..10 (e.g. 3.164 for k = 10 at α = 0.05); this works for any k ≥ 2."""
    if k < 2:
        raise ValueError(f"the Nemenyi test needs k >= 2 entities, got {k}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def nemenyi_cd(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference CD = q_α · sqrt(k (k + 1) / (6 N)) (Demšar 2006, Sec. 3.2.2)."""
    if n_blocks < 1:
        return math.nan
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n_blocks))


@dataclass
class FriedmanResult:
    """Outcome of :func:`friedman_nemenyi`; ``p_value`` and ``cd`` are NaN (see ``note``) with fewer
    than ``MIN_METHODS_FOR_FRIEDMAN`` entities or ``MIN_BLOCKS_FOR_FRIEDMAN`` blocks."""

    mean_ranks: pd.Series
    k: int
    n_blocks: int
    statistic: float
    p_value: float
    q_alpha: float
    cd: float
    alpha: float = 0.05
    note: str = ""
    blocks_dropped: int = 0
    entities: list[str] = field(default_factory=list)

    @property
    def tested(self) -> bool:
        """Whether the Friedman test ran (and so the critical difference means something)."""
        return not math.isnan(self.p_value)


def friedman_nemenyi(df: pd.DataFrame, value: str,
                     block_on: Sequence[str] = ("dataset", "protocol", "category"),
                     entity: str = "variant", alpha: float = 0.05) -> FriedmanResult:
    """Friedman test over complete blocks and the Nemenyi critical difference at ``alpha``.

    The Friedman χ² and its p-value come from ``scipy.stats.friedmanchisquare`` (with scipy's tie
    correction).  Two entities whose mean ranks differ by more than ``cd`` differ significantly
    (Nemenyi, Demšar 2006).  Below ``MIN_METHODS_FOR_FRIEDMAN`` entities or ``MIN_BLOCKS_FOR_FRIEDMAN``
    complete blocks neither p nor ``cd`` is computed (``note`` says why); the mean ranks are.
    """
    block_on = list(block_on)
    n_all = len(df.dropna(subset=[value]).groupby(block_on).size()) if len(df) else 0
    table = complete_blocks(df, value, block_on, entity)
    k, n = (table.shape[1], table.shape[0]) if not table.empty else (0, 0)
    mean_ranks = average_ranks(df, value, block_on, entity)
    result = FriedmanResult(mean_ranks=mean_ranks, k=k, n_blocks=n, statistic=math.nan, p_value=math.nan,
                            q_alpha=nemenyi_q(k, alpha) if k >= 2 else math.nan, cd=math.nan, alpha=alpha,
                            blocks_dropped=n_all - n, entities=list(table.columns) if k else [])
    if k < MIN_METHODS_FOR_FRIEDMAN:
        result.note = (f"{k} {entity}(s) on common blocks; the Friedman test needs at least "
                       f"{MIN_METHODS_FOR_FRIEDMAN} (compare two with the paired Wilcoxon test)")
        return result
    if n < MIN_BLOCKS_FOR_FRIEDMAN:
        result.note = f"N = {n} block(s) where all ran, fewer than the {MIN_BLOCKS_FOR_FRIEDMAN} required"
        return result
    if np.all(table.to_numpy() == table.to_numpy()[:, :1]):
        result.note = "all entities tie in every block: no Friedman test"
        return result
    result.cd = nemenyi_cd(k, n, alpha)
    res = sps.friedmanchisquare(*[table[c].to_numpy() for c in table.columns])
    result.statistic, result.p_value = float(res.statistic), float(res.pvalue)
    return result


def category_mean_per_seed(df: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """Per group of ``keys`` and per seed, the mean of ``value`` over categories.

    This is how a dataset-level number ("mean" row, the paper's 15-category mean) is formed: average
    the categories within one seed, then describe the spread of those per-seed means over seeds.
    Only categories that have a value for *every* seed of the group enter, so all seeds average the
    same categories; ``n_categories`` says how many.  Groups with no such category are left out.
    Returns columns ``*keys, seed, value, n_categories``.
    """
    keys = list(keys)
    data = df.dropna(subset=[value])
    cols = [*keys, "seed", value, "n_categories"]
    if data.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    groups = data.groupby(keys, sort=True) if keys else [((), data)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        table = g.pivot_table(index="category", columns="seed", values=value, aggfunc="mean")
        table = table.dropna(axis=0, how="any")
        if table.empty:
            continue
        part = table.mean(axis=0).rename(value).reset_index()
        for name, k in zip(keys, key):
            part[name] = k
        part["n_categories"] = int(table.shape[0])
        parts.append(part[cols])
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)
