rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ example maps).

    The figures are flagged for `snakemake --report report.html`, which collects them in one HTML."""
    input:
        runs=RESULTS / "runs.csv",
        maps_runs=maps_runs(),
    output:
        index=REPORT / "index.md",
        figures=report(directory(REPORT / "figures"), patterns=["{name}.png"], category="figures",
                       caption="report_caption.rst"),
    params:
        maps=lambda w, input: [os.path.join(os.path.dirname(f), "maps.npz") for f in input.maps_runs],
    log:
        WORK / "logs" / "report.log",
    shell:
        "{PY} -m kdad report --results {RESULTS} --out {REPORT} --maps {params.maps} 2>&1 | tee {log}"
