rule aggregate:
    """Every evaluation's rows → tidy results/runs.csv, defects.csv, curves.csv, history.csv (no summary rows)."""
    input:
        [eval_file(k) for k in RUNS],
    output:
        runs=RESULTS / "runs.csv",
        defects=RESULTS / "defects.csv",
        curves=RESULTS / "curves.csv",
        history=RESULTS / "history.csv",
    log:
        WORK / "logs" / "aggregate.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{PY:q} -m kdad aggregate --out {RESULTS:q} {input:q} 2>&1 | tee {log:q}"
