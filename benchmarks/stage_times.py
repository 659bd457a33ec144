"""Where a workflow run's time goes: every job's wall and CPU seconds and peak memory, from the
``benchmark:`` files Snakemake writes under ``<work_dir>/benchmarks/``, summed per stage, dataset
and method.

    python -m benchmarks.stage_times --work work --wall 2873 --out results/timing.csv

One row per job (stage, dataset, protocol, variant or model, seed, wall s, CPU s, peak RSS MiB),
written to ``--out``; a summary per (stage, dataset, method) is printed and, with ``--summary``,
written as CSV too. ``--wall`` (the measured wall time of the whole run, e.g. from
``/usr/bin/time``) adds the ratio of summed CPU seconds to wall time × cores, the run's use of the
machine. Jobs of a rerun that Snakemake did not redo keep their earlier files: time a run from an
empty work folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

COLUMNS = ["stage", "dataset", "protocol", "unit", "seed", "wall_s", "cpu_s", "max_rss_mib"]


def _job(path: Path, root: Path) -> dict:
    """The job a benchmark file belongs to, from its path below ``<work>/benchmarks``."""
    parts = path.relative_to(root).with_suffix("").parts
    stage, rest = parts[0], parts[1:]
    row = {"stage": stage, "dataset": "", "protocol": "", "unit": "", "seed": ""}
    if stage in ("train", "evaluate") and len(rest) == 4:
        row.update(dataset=rest[0], protocol=rest[1], unit=rest[2], seed=rest[3].removeprefix("seed"))
    elif stage in ("prepare", "features") and rest:
        row.update(dataset=rest[0].split("-")[0], unit="-".join(rest[0].split("-")[1:]))
    else:
        row.update(unit="/".join(rest))
    return row


def collect(work: Path) -> pd.DataFrame:
    root = work / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            continue
        last = table.iloc[-1]
        rows.append({**_job(path, root), "wall_s": float(last["s"]), "cpu_s": float(last.get("cpu_time", float("nan"))),
                     "max_rss_mib": float(last.get("max_rss", float("nan")))})
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(jobs: pd.DataFrame) -> pd.DataFrame:
    method = jobs["unit"].str.replace(r"-[0-9a-f]{10}$", "", regex=True)
    out = jobs.assign(method=method).groupby(["stage", "dataset", "protocol", "method"], dropna=False).agg(
        jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"), max_rss_mib=("max_rss_mib", "max"))
    return out.reset_index().sort_values("cpu_s", ascending=False)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("work"))
    ap.add_argument("--out", type=Path, default=None, help="CSV of every job")
    ap.add_argument("--summary", type=Path, default=None, help="CSV of the per-stage summary")
    ap.add_argument("--wall", type=float, default=None, help="measured wall seconds of the whole run")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    jobs = collect(args.work)
    if jobs.empty:
        raise SystemExit(f"no benchmark files under {args.work / 'benchmarks'}: run the workflow first")
    summary = summarize(jobs)
    for path, table in ((args.out, jobs), (args.summary, summary)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            table.to_csv(tmp, index=False, float_format="%.2f")
            os.replace(tmp, path)
    pd.set_option("display.width", 200)
    print(summary.round(1).to_string(index=False))
    total = jobs["cpu_s"].sum()
    line = f"{len(jobs)} jobs, {jobs['wall_s'].sum():.0f} s of job wall time, {total:.0f} CPU s"
    if args.wall:
        line += f"; run wall {args.wall:.0f} s on {args.cores} cores: {total / (args.wall * args.cores):.0%} of the machine"
    print(line)


if __name__ == "__main__":
    main()
