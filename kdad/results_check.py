"""``kdad check-results``: do the committed results match the code that is here now?

Every ``runs.csv`` under the given folders (``results/**/runs.csv``) is read, and per file:

* FAIL  rows made from a dirty tree (``code_clean`` false, or, in files from before that column,
  ``code_version`` ending in ``+dirty``): their code is in no commit, so nobody can rerun it;
* FAIL  more than one ``code_fingerprint`` in one file: its rows were made by different code;
* FAIL  no ``code_fingerprint`` column: the rows cannot be tied to any code (made before kdad
  recorded it); regenerate them;
* STALE the file's fingerprint differs from the current code's (:func:`kdad.provenance.code_fingerprint`):
  the code has changed since; reported, not a failure (rerun to refresh the numbers).

The command exits 1 when any file FAILs, else 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kdad.config import ConfigError

__all__ = ["FAIL", "OK", "STALE", "FileCheck", "check_results", "check_runs_file", "find_runs", "staleness"]

OK, STALE, FAIL = "OK", "STALE", "FAIL"


@dataclass
class FileCheck:
    path: Path
    rows: int
    status: str = OK
    messages: list[str] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status:5s} {self.path} ({self.rows} rows)" + "".join(f"\n      {m}" for m in self.messages)


def _as_bool(v) -> bool | None:
    text = str(v).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    return None


def check_runs_file(path: Path | str, current: str) -> FileCheck:
    path = Path(path)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    check = FileCheck(path, len(df))
    fails, stale = [], []
    if "code_clean" in df:
        dirty = int(sum(_as_bool(v) is False for v in df["code_clean"]))
        unknown = int(sum(_as_bool(v) is None for v in df["code_clean"]))
        if unknown:
            check.messages.append(f"{unknown} row(s) made outside a git checkout: cleanliness unknown")
    else:
        dirty = int(df["code_version"].str.endswith("+dirty").sum()) if "code_version" in df else 0
    if dirty:
        fails.append(f"{dirty} row(s) made from a dirty tree (uncommitted changes in kdad/, baselines/, rules/ "
                     "or the Snakefile): commit the code and rerun")
    if "code_fingerprint" not in df:
        fails.append("no code_fingerprint column: these rows cannot be tied to any code; rerun to regenerate them")
    else:
        prints = sorted({v for v in df["code_fingerprint"] if v})
        check.fingerprints = prints
        if int((df["code_fingerprint"] == "").sum()):
            fails.append(f"{int((df['code_fingerprint'] == '').sum())} row(s) without a code_fingerprint")
        if len(prints) > 1:
            counts = df["code_fingerprint"].value_counts()
            fails.append("rows made by different code: " + ", ".join(f"{p} ({counts[p]} rows)" for p in prints))
        elif prints and prints[0] != current:
            stale.append(f"results made by code that has since changed: fingerprint {prints[0]}, current {current}")
    check.messages = fails + stale + check.messages
    check.status = FAIL if fails else STALE if stale else OK
    return check


def find_runs(folders: Iterable[Path | str]) -> list[Path]:
    """Every ``runs.csv`` under the folders, sorted; a folder that does not exist is an error."""
    found = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ConfigError(f"results folder {folder} does not exist; pass the folder that holds runs.csv "
                              "with --results")
        found += sorted(folder.rglob("runs.csv"))
    return sorted(set(found))


def check_results(folders: Sequence[Path | str], current: str | None = None) -> list[FileCheck]:
    """One :class:`FileCheck` per ``runs.csv`` under ``folders``, against ``current`` (default: this
    checkout's :func:`~kdad.provenance.code_fingerprint`)."""
    if current is None:
        from kdad.provenance import code_fingerprint
        current = code_fingerprint()
    files = find_runs(folders)
    if not files:
        raise ConfigError(f"no runs.csv under {', '.join(map(str, folders))}: nothing to check")
    return [check_runs_file(f, current) for f in files]


def staleness(runs: pd.DataFrame, current: str | None = None) -> str | None:
    """A caption note when the rows were made by code other than the current code, else None."""
    if "code_fingerprint" not in runs:
        return None
    prints = sorted({str(v) for v in runs["code_fingerprint"].dropna() if str(v)})
    if not prints:
        return None
    if current is None:
        from kdad.provenance import code_fingerprint
        current = code_fingerprint()
    if prints == [current]:
        return None
    return (f"Stale: results made by code that has since changed: fingerprint {', '.join(prints)}, current "
            f"{current} (`kdad check-results`).")
