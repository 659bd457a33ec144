# Figure kinds, by file-name prefix (kdad.figures): the HTML report's subcategories. The caption of
# each figure (report_caption.rst) picks its text by the same prefix.
FIGURE_KINDS = {"heatmap_": "per-category heat maps", "critical_difference": "ranks",
                "hints_": "hint ablation", "curves_": "ROC and PRO curves",
                "convergence_": "training convergence", "maps_": "example anomaly maps"}


def figure_kind(wildcards):
    return next((kind for prefix, kind in FIGURE_KINDS.items() if wildcards.name.startswith(prefix)), "other")


def report_examples(wildcards, input):
    """The example-map files beside the listed runs' results that kept some (examples.npz; maps.npz
    from runners before the examples.npz layout). Files that are not there are skipped: a method
    that makes no maps keeps none."""
    found = []
    for f in input.maps_runs:
        folder = os.path.dirname(f)
        for name in ("examples.npz", "maps.npz"):
            if os.path.exists(os.path.join(folder, name)):
                found.append(os.path.join(folder, name))
                break
    return found


rule report:
    """Paper-style tables (md, tex, csv) and seaborn figures, from results/ alone (+ example maps).

    The figures are flagged for `snakemake --report report.html`, which collects them in one HTML,
    each with the caption of report_caption.rst. `kdad report` itself deletes only files that its
    previous run wrote (report/.kdad-report-manifest)."""
    input:
        runs=RESULTS / "runs.csv",
        maps_runs=maps_runs(),
    output:
        index=REPORT / "index.md",
        figures=report(directory(REPORT / "figures"), patterns=["{name}.png"], category="figures",
                       subcategory=figure_kind, caption="report_caption.rst"),
    params:
        examples=report_examples,
    log:
        WORK / "logs" / "report.log",
    shell:
        "{PY} -m kdad report --results {RESULTS} --out {REPORT} --examples {params.examples} 2>&1 | tee {log}"
