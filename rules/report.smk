rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ example maps)."""
    input:
        runs=RESULTS / "runs.csv",
        maps_runs=maps_runs(),
    output:
        REPORT / "index.md",
    params:
        maps=lambda w, input: [os.path.join(os.path.dirname(f), "maps.npz") for f in input.maps_runs],
    log:
        WORK / "logs" / "report.log",
    shell:
        "{PY} -m kdad report --results {RESULTS} --out {REPORT} --maps {params.maps} 2>&1 | tee {log}"
