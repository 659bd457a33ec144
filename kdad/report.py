"""results/ → report/: every table and figure, from the tidy CSVs and the evaluations' example maps.

``render(results_dir, out_dir, examples=[...])`` writes, under ``out_dir``:

* ``<table>.md``, ``<table>.tex``, ``<table>.csv`` for every table of :mod:`kdad.tables`;
* ``figures/<figure>.png`` for every figure of :mod:`kdad.figures`;
* ``README_TABLE.md`` (the dataset-level summary for the README), ``README_CLAIMS.md`` (the README's
  quantitative claims: ablations, MKD against the best other method, ranks; :mod:`kdad.tables.claims`)
  and ``index.md``, which shows every figure inline with a one-line caption and links every table;
* ``.kdad-report-manifest``: the files this render wrote.

Results whose ``code_fingerprint`` is not the current code's are marked stale in every table's notes,
in ``README_TABLE.md`` and at the top of ``index.md`` (:func:`kdad.results_check.staleness`).

The report never deletes or replaces what it did not write: the whole render goes to a temporary
folder beside ``out_dir`` first and is moved into place (file by file, each an atomic rename) only
when everything rendered; a file of ``out_dir`` that the previous render's manifest does not list is
never overwritten (one error, nothing changed); the only files ever removed are those the previous
render listed in its manifest and this one no longer writes.  It refuses an ``out_dir`` that is, or contains, the
results folder, and a results folder without runs (nothing is touched then).

``examples``: ``examples.npz`` files, each of one (dataset, protocol, variant, seed), told by a
``meta.json`` beside it or by its folder ``…/<dataset>/<protocol>/<variant>/seed<seed>/`` (see
:mod:`kdad.figures.maps`).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from kdad.config import ConfigError
from kdad.atomic import write_bytes_atomic

__all__ = ["MANIFEST", "ReportError", "readme_claims", "readme_table", "render"]

MANIFEST = ".kdad-report-manifest"
_MANIFEST_HEADER = ("# kdad report: the files the last `kdad report` wrote into this folder (relative paths). "
                    "The next render deletes those it no longer writes, and nothing else.\n")

TABLE_SECTIONS = (("summary", "Summary across datasets"), ("main", "Main results per dataset and protocol"),
                  ("metrics", "Every computed metric"), ("protocols", "One-class against multi-class"),
                  ("paper", "The paper's numbers beside ours"),
                  ("ablation", "Ablations"), ("localization", "Localisation methods (the paper's Table 1)"),
                  ("defects", "Per defect kind and difficulty level"), ("ranks", "Ranks"),
                  ("speed", "Cost and machine"), ("training", "Training budget and convergence"))
FIGURE_SECTIONS = (("heatmap", "Per-category heat maps"), ("ranks", "Critical-difference diagram"),
                   ("ablation", "Hint ablation"), ("curves", "ROC and PRO curves"),
                   ("convergence", "Training convergence"), ("maps", "Example anomaly maps"))


class ReportError(ConfigError):
    """A report that cannot be made as asked; the CLI prints the message and exits non-zero."""


# --------------------------------------------------------------------------------------- output
class _Output:
    """The render goes into a temporary folder beside ``root`` (``.<name>.kdad-tmp-<pid>``); only
    when everything rendered are its files moved into ``root`` (each by an atomic rename), so a
    failure (an exception in a figure, a full disk) leaves the old report whole. A file of ``root``
    that the previous render did not write (not in its manifest) is never replaced: the render stops
    with :class:`ReportError` before moving anything. The previous render's files that this one no
    longer writes are deleted, nothing else."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / MANIFEST
        self.old = self._read_manifest()
        self.stage = root.parent / f".{root.name}.kdad-tmp-{os.getpid()}"
        shutil.rmtree(self.stage, ignore_errors=True)
        try:
            self.stage.mkdir(parents=True)
        except OSError as err:
            raise ReportError(f"cannot create {self.stage} to render the report into ({err.strerror or err}); "
                              "check the permissions and free space beside --out") from None
        self.written: list[str] = []

    def _read_manifest(self) -> set[str]:
        if not self.manifest.is_file():
            return set()
        lines = self.manifest.read_text(encoding="utf-8").splitlines()
        return {ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")}

    @staticmethod
    def _atomic(path: Path, data: bytes) -> None:
        write_bytes_atomic(path, data)

    def write(self, rel: str, data: bytes | str) -> Path:
        path = self.stage / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError as err:
            raise ReportError(f"writing the report failed ({err.strerror or err}); the report in {self.root} is "
                              "left as it was — check free disk space and permissions") from None
        self.written.append(rel)
        return self.root / rel

    def abandon(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)

    def finish(self) -> None:
        new = set(self.written)
        foreign = sorted(rel for rel in new if rel not in self.old and os.path.lexists(self.root / rel))
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise ReportError(f"refusing to overwrite {', '.join(str(self.root / r) for r in foreign[:3])}{more}: "
                              f"not written by an earlier `kdad report` (not in {self.manifest}); move or delete "
                              "them, or choose another --out. Nothing was changed")
        self.root.mkdir(parents=True, exist_ok=True)
        # while files move, the manifest lists the old ones and the new ones: an interrupted move
        # leaves nothing the next render would not recognise as its own
        self._atomic(self.manifest, (_MANIFEST_HEADER + "".join(f"{p}\n" for p in sorted(self.old | new))).encode())
        for rel in sorted(new):
            dest = self.root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.stage / rel, dest)
        root = self.root.resolve()
        for rel in sorted(self.old - new):
            path = (self.root / rel).resolve()
            if root not in path.parents or not path.is_file():
                continue  # only files inside the report folder, never one a manifest line points outside
            path.unlink()
            parent = path.parent
            while parent != root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        self._atomic(self.manifest, (_MANIFEST_HEADER + "".join(f"{p}\n" for p in sorted(new))).encode())
        self.abandon()


# --------------------------------------------------------------------------------------- checks
def _check_folders(results_dir: Path, out_dir: Path) -> None:
    if not results_dir.is_dir():
        raise ReportError(f"results folder {results_dir} does not exist; run the pipeline (or `kdad aggregate`) "
                          "first, or point --results at the folder that holds runs.csv")
    res, out = results_dir.resolve(), out_dir.resolve()
    if out == res or out in res.parents:
        raise ReportError(f"refusing to write the report into {out_dir}: it is or contains the results folder "
                          f"{results_dir}; choose another --out")
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out {out_dir} exists and is not a folder")


def _short(caption: str) -> str:
    return caption.split(" Run:")[0].rstrip(".")


# --------------------------------------------------------------------------------------- index
def _index(results_dir: Path, results, tables, figures: list[tuple[str, str, str]], readme: str | None,
           stale: str | None = None) -> str:
    present = [name for name in ("runs", "defects", "curves", "history") if getattr(results, name) is not None]
    lines = ["# kdad report", "", *([f"**{stale}**", ""] if stale else []),
             f"Every table and figure below is computed by `kdad report` from the result files in "
             f"`{results_dir.as_posix()}` ({', '.join(f'{n}.csv' for n in present)}; {len(results.runs)} rows in "
             "runs.csv). Each table comes as Markdown, LaTeX and CSV (the CSV holds the numbers behind the cells).",
             ""]
    if readme:
        lines += ["## Summary", "", readme.strip(), ""]
    lines += ["## Tables", ""]
    for kind, title in TABLE_SECTIONS:
        mine = [t for t in tables if t.kind == kind]
        if not mine:
            continue
        lines += [f"### {title}", ""]
        for t in mine:
            lines.append(f"- [{t.name}]({t.name}.md) ([tex]({t.name}.tex), [csv]({t.name}.csv)): {_short(t.caption)}")
        lines.append("")
    if not figures:
        lines += ["## Figures", "", "No figure: the result files hold nothing to draw.", ""]
    else:
        lines += ["## Figures", ""]
        for kind, title in FIGURE_SECTIONS:
            mine = [f for f in figures if f[2] == kind]
            if not mine:
                continue
            lines += [f"### {title}", ""]
            for rel, caption, _ in mine:
                alt = caption.replace("[", "(").replace("]", ")")
                lines += [f"![{alt}]({rel})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def _readme_table(table, out_dir: Path) -> str:
    from kdad.tables.writer import to_markdown

    where = out_dir.as_posix() if not out_dir.is_absolute() else out_dir.name
    return (to_markdown(table) + f"\nFull tables, figures and run details: [{where}/index.md]({where}/index.md).\n")


# --------------------------------------------------------------------------------------- render
def render(results_dir: str | Path, out_dir: str | Path, examples: Sequence[str | Path] | None = None) -> list[Path]:
    """Write every table and figure of ``results_dir`` into ``out_dir``; return the written paths.

    Raises :class:`ReportError` (before anything is written) when the results folder is missing or
    holds no runs, when ``out_dir`` is or contains it, or when a result or examples file is unusable.
    """
    from kdad.figures import build_figures, example_file
    from kdad.figures.style import DPI
    from kdad.tables import ResultsError, build_tables, load_results
    from kdad.results_check import staleness
    from kdad.tables import render as render_table

    import matplotlib.pyplot as plt

    results_dir, out_dir = Path(results_dir), Path(out_dir)
    _check_folders(results_dir, out_dir)
    try:
        results = load_results(results_dir)
        if results.runs is None:
            raise ReportError(f"{results_dir} holds no runs.csv with rows: nothing to report (the existing report "
                              f"in {out_dir} is left as it is); run the pipeline or `kdad aggregate` first")
        files = [example_file(p) for p in examples or []]
        tables = build_tables(results)
    except ResultsError as err:
        raise ReportError(str(err)) from err
    stale = staleness(results.runs)
    if stale:
        for t in tables:
            t.notes.append(stale)

    out = _Output(out_dir)
    try:
        for t in tables:
            for name, text in render_table(t).items():
                out.write(name, text)
        figures = []
        for f in build_figures(results, files):
            buf = io.BytesIO()
            f.fig.savefig(buf, format="png", dpi=DPI, metadata={"Title": f.name, "Description": f.caption})
            plt.close(f.fig)
            rel = f"figures/{f.name}.png"
            out.write(rel, buf.getvalue())
            figures.append((rel, f.caption, f.kind))
        summary = next((t for t in tables if t.kind == "summary"), None)
        readme = _readme_table(summary, out_dir) if summary is not None else None
        if readme is not None:
            out.write("README_TABLE.md", readme)
        out.write("README_CLAIMS.md", readme_claims(results.runs, stale))
        out.write("index.md", _index(results_dir, results, tables, figures,
                                     None if summary is None else _readme_body(summary), stale))
        out.finish()
    finally:
        out.abandon()
    return [out_dir / rel for rel in out.written]


def readme_claims(runs, stale: str | None = None) -> str:
    """The text of ``README_CLAIMS.md`` (with the staleness mark when the code has changed since)."""
    from kdad.tables.claims import claims_markdown

    return (f"**{stale}**\n\n" if stale else "") + claims_markdown(runs)


def readme_table(runs, out_dir: str | Path = "report", stale: str | None = None) -> str | None:
    """The text of ``README_TABLE.md`` for ``runs`` as ``render`` writes it into ``out_dir`` (None
    without a summary table); no figure is drawn."""
    from kdad.tables import load_paper_numbers
    from kdad.tables.main import summary_table

    summary = summary_table(runs, load_paper_numbers())
    if summary is None:
        return None
    if stale:
        summary.notes.append(stale)
    return _readme_table(summary, Path(out_dir))


def _readme_body(table) -> str:
    from kdad.tables.writer import to_markdown

    return to_markdown(table).replace(f"**{table.name}**: ", "", 1)


def copy_figures(out_dir: str | Path, dest: str | Path) -> list[Path]:
    """Copy the figures the last render wrote (its manifest's ``figures/*.png``) into ``dest``, a
    folder kdad owns (the workflow's, for `snakemake --report`); the report folder is only read."""
    out = _Output.__new__(_Output)
    out.manifest = Path(out_dir) / MANIFEST
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for rel in sorted(out._read_manifest()):
        if rel.startswith("figures/") and rel.endswith(".png") and "/" not in rel[len("figures/"):]:
            shutil.copy2(Path(out_dir) / rel, dest / rel.split("/", 1)[1])
            copied.append(dest / rel.split("/", 1)[1])
    return copied
