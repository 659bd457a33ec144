"""Checks of a result CSV before any table reads it: a file edited by hand, cut short by a full disk
or concatenated twice gives one :class:`ResultsError` naming the file, the line and the problem,
never a traceback, a silently shorter row or a seed counted twice."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

# metrics are fractions: NaN where one does not apply (pixel metrics without masks), else in [0, 1]
UNIT_COLUMNS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro",
                "paper_pixel_metric")
NUMERIC_COLUMNS = (*UNIT_COLUMNS, "seed", "epoch", "loss", "x", "y")
# the columns that name one row; two rows with the same values would count one run twice
ROW_KEYS = {
    "runs": ("dataset", "protocol", "category", "variant", "seed"),
    "defects": ("dataset", "protocol", "category", "variant", "seed", "defect", "level"),
    "history": ("dataset", "protocol", "category", "variant", "seed", "phase", "epoch"),
}
# metrics every row of these files must hold
REQUIRED_VALUES = {"runs": ("image_auroc",), "defects": ("image_auroc",)}


def check_shape(path: Path, error: type[Exception]) -> list[int]:
    """Every row has as many fields as the header; returns each data row's line number."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return []
            lines = []
            for row in reader:
                if len(row) != len(header):
                    raise error(f"{path}, line {reader.line_num}: {len(row)} field(s), the header has "
                                f"{len(header)} (a cut-off or hand-edited row); delete the file and run the "
                                "workflow again (Snakemake rewrites it from work/)")
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise error(f"{path}: not a CSV text file ({type(err).__name__}: {err}); delete it and run the workflow "
                    "again") from None
    return lines


def check_values(df: pd.DataFrame, path: Path, kind: str, lines: list[int], error: type[Exception]) -> None:
    """Numbers where numbers belong, metrics in [0, 1], required metrics present, no row twice."""
    def where(i: int) -> str:
        return f"{path}, line {lines[i] if i < len(lines) else i + 2}"

    for col in [c for c in NUMERIC_COLUMNS if c in df.columns]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & df[col].notna().to_numpy())
        if len(bad):
            raise error(f"{where(bad[0])}: {col} = {df[col].iloc[bad[0]]!r} is not a number")
        if col in UNIT_COLUMNS:
            out = np.flatnonzero(((values < 0) | (values > 1)).to_numpy())
            if len(out):
                raise error(f"{where(out[0])}: {col} = {values.iloc[out[0]]} is outside [0, 1]")
        if col in REQUIRED_VALUES.get(kind, ()):
            missing = np.flatnonzero(values.isna().to_numpy())
            if len(missing):
                raise error(f"{where(missing[0])}: {col} is empty; every row needs it")
        df[col] = values
    keys = [c for c in ROW_KEYS.get(kind, ()) if c in df.columns]
    if keys:
        twice = np.flatnonzero(df.duplicated(keys, keep="first").to_numpy())
        if len(twice):
            row = df.iloc[twice[0]]
            raise error(f"{where(twice[0])}: a second row for " + ", ".join(f"{k}={row[k]}" for k in keys)
                        + " (duplicated rows would count as more seeds); delete the file and run the workflow "
                        "again")
