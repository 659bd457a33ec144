rule train:
    """Fit one model per category of (dataset, protocol) with one seed: <model dir>/<category>.pt.
    Variants that differ only in evaluation options (score hints, localisation, blur) share it."""
    input:
        lambda w: job_inputs(w, train_variant(w)),
    output:
        directory(WORK / "models" / "{dataset}" / "{protocol}" / "{model}" / "seed{seed}"),
    log:
        WORK / "logs" / "train" / "{dataset}" / "{protocol}" / "{model}" / "seed{seed}.log",
    benchmark:
        WORK / "benchmarks" / "train" / "{dataset}" / "{protocol}" / "{model}" / "seed{seed}.tsv"
    params:
        options=train_params,
    threads: CFG.threads
    priority: 1  # training before evaluation: the long jobs first, the short ones fill the gaps
    resources:
        mem_mb=res("train", "mem_mb"),
        runtime=res("train", "runtime"),
        gpu=gpus("train"),
    shell:
        "{PY:q} -m kdad train --config {CONFIG_JSON:q} --dataset {wildcards.dataset:q} --protocol {wildcards.protocol:q}"
        " --model {wildcards.model:q} --seed {wildcards.seed:q} --out {output:q} --threads {threads:q} 2>&1 | tee {log:q}"
