rule evaluate:
    """Score (and map) every category's test images with the variant's trained model: result rows,
    per-defect rows, curves, scores and anomaly-map examples."""
    input:
        data=lambda w: job_inputs(w, w.variant),
        model=model_of,
    output:
        result=WORK / "eval" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}" / "result.json",
        scores=WORK / "eval" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}" / "scores.npz",
        examples=WORK / "eval" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}" / "examples.npz",
    log:
        WORK / "logs" / "evaluate" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}.log",
    benchmark:
        WORK / "benchmarks" / "evaluate" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}.tsv"
    params:
        options=eval_params,
        out=lambda w, output: os.path.dirname(output.result),
    threads: CFG.threads
    resources:
        mem_mb=res("evaluate", "mem_mb"),
        runtime=res("evaluate", "runtime"),
        gpu=gpus("evaluate"),
    shell:
        "{PY:q} -m kdad evaluate --config {CONFIG_JSON:q} --dataset {wildcards.dataset:q} --protocol {wildcards.protocol:q}"
        " --variant {wildcards.variant:q} --seed {wildcards.seed:q} --out {params.out:q} --threads {threads:q}"
        " 2>&1 | tee {log:q}"
