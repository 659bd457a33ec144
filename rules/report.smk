# Figure kinds, by file-name prefix (kdad.figures): the HTML report's subcategories. The caption of
# each figure (report_caption.rst) picks its text by the same prefix.
FIGURE_KINDS = {"heatmap_": "per-category heat maps", "critical_difference": "ranks",
                "hints_": "hint ablation", "curves_": "ROC and PRO curves",
                "convergence_": "training convergence", "maps_": "example anomaly maps"}


def figure_kind(wildcards):
    return next((kind for prefix, kind in FIGURE_KINDS.items() if wildcards.name.startswith(prefix)), "other")


rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ anomaly-map examples).

    Only index.md is declared: Snakemake empties a declared directory() output before the job, and
    report/ and report/figures/ may hold the user's own files. `kdad report` replaces only files its
    previous run wrote (report/.kdad-report-manifest; not declared either, since Snakemake would
    delete it before the job) and refuses to overwrite any other."""
    input:
        runs=RESULTS / "runs.csv",
        defects=RESULTS / "defects.csv",
        curves=RESULTS / "curves.csv",
        history=RESULTS / "history.csv",
        examples=example_files(),
    output:
        index=REPORT / "index.md",
    log:
        WORK / "logs" / "report.log",
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{PY:q} -m kdad report --results {RESULTS:q} --out {REPORT:q} --examples {input.examples:q} 2>&1 | tee {log:q}"


localrules: report_figures


rule report_figures:
    """The figures of the last report, copied into work/ and flagged for `snakemake --report report.html`
    (one HTML with every figure and the caption of report_caption.rst). The flagged directory() is
    kdad's own folder in work/, which Snakemake may empty before the job; report/figures/ is never
    an output."""
    input:
        REPORT / "index.md",
    output:
        report(directory(WORK / "report_figures"), patterns=["{name}.png"], category="figures",
               subcategory=figure_kind, caption="report_caption.rst"),
    run:
        from kdad.report import copy_figures

        copy_figures(REPORT, output[0])
