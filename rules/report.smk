# Figure kinds, by file-name prefix (kdad.figures): the HTML report's subcategories. The caption of
# each figure (report_caption.rst) picks its text by the same prefix.
FIGURE_KINDS = {"heatmap_": "per-category heat maps", "critical_difference": "ranks",
                "hints_": "hint ablation", "curves_": "ROC and PRO curves",
                "convergence_": "training convergence", "maps_": "example anomaly maps"}


def figure_kind(wildcards):
    return next((kind for prefix, kind in FIGURE_KINDS.items() if wildcards.name.startswith(prefix)), "other")


rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ anomaly-map examples).

    The figures are flagged for `snakemake --report report.html`, which collects them in one HTML,
    each with the caption of report_caption.rst. `kdad report` itself deletes only files that its
    previous run wrote (report/.kdad-report-manifest)."""
    input:
        runs=RESULTS / "runs.csv",
        defects=RESULTS / "defects.csv",
        curves=RESULTS / "curves.csv",
        history=RESULTS / "history.csv",
        examples=example_files(),
    output:
        index=REPORT / "index.md",
        figures=report(directory(REPORT / "figures"), patterns=["{name}.png"], category="figures",
                       subcategory=figure_kind, caption="report_caption.rst"),
    log:
        WORK / "logs" / "report.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{PY:q} -m kdad report --results {RESULTS:q} --out {REPORT:q} --examples {input.examples:q} 2>&1 | tee {log:q}"
