rule aggregate:
    """Every run's rows → tidy results/runs.csv, defects.csv, localization.csv (no summary rows)."""
    input:
        [run_file(k) for k in RUNS],
    output:
        RESULTS / "runs.csv",
    log:
        WORK / "logs" / "aggregate.log",
    shell:
        "{PY} -m kdad aggregate --out {RESULTS} {input} 2>&1 | tee {log}"
