rule run:
    """Train and evaluate every category of (dataset, protocol) for one variant and seed: per-category rows, per-defect rows, scores (and maps)."""
    input:
        data=WORK / "data" / "{dataset}.npz",
        features=run_features,
    output:
        WORK / "runs" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}" / "result.json",
    log:
        WORK / "logs" / "runs" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}.log",
    benchmark:
        WORK / "benchmarks" / "runs" / "{dataset}" / "{protocol}" / "{variant}" / "seed{seed}.tsv"
    params:
        options=run_options,
        out=lambda w, output: os.path.dirname(output[0]),
    threads: CFG.threads
    shell:
        "{PY} -m kdad run --config {CONFIG_JSON} --dataset {wildcards.dataset} --protocol {wildcards.protocol}"
        " --variant {wildcards.variant} --seed {wildcards.seed}"
        " --out {params.out} --threads {threads} 2>&1 | tee {log}"
