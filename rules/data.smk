rule prepare:
    """Download or read, verify and decode one dataset into work/data/<dataset>.npz."""
    output:
        WORK / "data" / "{dataset}.npz",
    log:
        WORK / "logs" / "prepare" / "{dataset}.log",
    benchmark:
        WORK / "benchmarks" / "prepare" / "{dataset}.tsv"
    params:
        settings=lambda w: json.dumps({k: getattr(CFG.dataset(w.dataset), k) for k in ("image_size", "source", "seed")}),
    threads: 1
    shell:
        "{PY} -m kdad prepare --config {CONFIG_JSON} --dataset {wildcards.dataset} --threads {threads} 2>&1 | tee {log}"


rule features:
    """The frozen expert's hint activations for every image of a dataset, once (float16, memory-mapped)."""
    input:
        WORK / "data" / "{dataset}.npz",
    output:
        WORK / "features" / "{dataset}" / "{expert}-{norm}" / "meta.json",
    log:
        WORK / "logs" / "features" / "{dataset}-{expert}-{norm}.log",
    benchmark:
        WORK / "benchmarks" / "features" / "{dataset}-{expert}-{norm}.tsv"
    wildcard_constraints:
        norm="norm|raw",
    params:
        normalize=lambda w: int(w.norm == "norm"),
    threads: 8  # Snakemake caps it at --cores
    shell:
        "{PY} -m kdad features --config {CONFIG_JSON} --dataset {wildcards.dataset} --expert {wildcards.expert}"
        " --normalize {params.normalize} --threads {threads} 2>&1 | tee {log}"
