"""Numbers the table families share: per-category and dataset-level summaries over seeds (in %),
best-cell marks, and the paper's reference numbers.

Conventions
-----------
* AUROC-type values are fractions in the result files and percentages (1 decimal) in tables.
* A cell is "mean ± std" over seeds (sample std, ddof = 1); a single seed shows the mean alone.
  A method that was not run shows "–": absent, never zero.
* A dataset-level "mean" is formed per seed over the categories every seed ran, then described over
  seeds (:func:`kdad.stats.category_mean_per_seed`); "†" marks a mean over fewer categories than
  the table shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kdad.stats import category_mean_per_seed, mean_std

__all__ = ["PAPER_NUMBERS", "bold_best", "dataset_level", "load_paper_numbers", "paper_lookup", "per_category"]

PAPER_NUMBERS = Path(__file__).resolve().parent.parent / "reference" / "paper_numbers.csv"
PAPER_CATEGORY_COUNT = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "mvtec_ad": 15}
PAPER_LABEL = "MKD (paper)"


def _pct(df: pd.DataFrame) -> pd.DataFrame:
    for c in ("mean", "std", "min", "max"):
        if c in df:
            df[c] = df[c].astype(float) * 100
    return df


def per_category(rows: pd.DataFrame, metric: str, by: Sequence[str] = ("variant",)) -> pd.DataFrame:
    """Per ``by`` × category: mean, std, min, max over seeds and n (seeds), in %."""
    return _pct(mean_std(rows, [*by, "category"], metric))


def dataset_level(rows: pd.DataFrame, metric: str, by: Sequence[str] = ("variant",)) -> pd.DataFrame:
    """Per ``by``: the per-seed category means described over seeds (mean, std, min, max, n seeds,
    n_categories), in %; a group without a category that every seed ran is left out."""
    by = list(by)
    sl = category_mean_per_seed(rows, metric, by)
    if sl.empty:
        return pd.DataFrame(columns=[*by, "mean", "std", "min", "max", "n", "n_categories"])
    out = mean_std(sl, by, metric)
    ncat = sl.groupby(by)["n_categories"].first().rename("n_categories").reset_index()
    return _pct(out.merge(ncat, on=by))


def bold_best(means: pd.DataFrame, axis: int = 0, digits: int = 1) -> pd.DataFrame:
    """True where a (rounded) mean is the best of its column (``axis=0``) or row (``axis=1``).

    Higher wins; ties at the displayed precision are all marked; fewer than two values mark nothing.
    """
    rounded = means.astype(float).round(digits)
    bold = pd.DataFrame(False, index=means.index, columns=means.columns)
    lines = rounded.items() if axis == 0 else rounded.iterrows()
    for key, vals in lines:
        vals = vals.dropna()
        if len(vals) >= 2:
            best = vals.index[vals == vals.max()]
            if axis == 0:
                bold.loc[best, key] = True
            else:
                bold.loc[key, best] = True
    return bold


def load_paper_numbers(path: Path | str = PAPER_NUMBERS) -> pd.DataFrame:
    """The MKD paper's numbers (``kdad/reference/paper_numbers.csv``).

    Columns: dataset, protocol, category ("mean" = the dataset mean), method, metric, value
    (percent; empty where the sources give no single number, see ``note``), source, verified
    (yes/no), localization and blur (set only for the rows of the paper's Table 1, which compare
    localisation methods without / with Gaussian blur), note.
    """
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["value"] = pd.to_numeric(df["value"].replace("", np.nan))
    return df


def paper_lookup(paper: pd.DataFrame, dataset: str, protocol: str, metric: str) -> pd.DataFrame:
    """The paper's MKD rows for one dataset, protocol and metric outside its Table 1 (by category)."""
    sel = paper[(paper["dataset"] == dataset) & (paper["protocol"] == protocol) & (paper["metric"] == metric)
                & (paper["method"] == "mkd") & (paper["localization"] == "")]
    return sel.set_index("category")
