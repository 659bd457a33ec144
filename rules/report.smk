rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ anomaly-map examples).

    The figures are flagged for `snakemake --report report.html`, which collects them in one HTML."""
    input:
        runs=RESULTS / "runs.csv",
        defects=RESULTS / "defects.csv",
        curves=RESULTS / "curves.csv",
        history=RESULTS / "history.csv",
        examples=example_files(),
    output:
        index=REPORT / "index.md",
        figures=report(directory(REPORT / "figures"), patterns=["{name}.png"], category="figures",
                       caption="report_caption.rst"),
    log:
        WORK / "logs" / "report.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{PY} -m kdad report --results {RESULTS} --out {REPORT} --examples {input.examples} 2>&1 | tee {log}"
