rule prepare:
    """Download or read, verify and decode one dataset (one draw of a generated one) into work/data/."""
    output:
        WORK / "data" / "{dataset}" / "{draw}.npz",
    log:
        WORK / "logs" / "prepare" / "{dataset}-{draw}.log",
    benchmark:
        WORK / "benchmarks" / "prepare" / "{dataset}-{draw}.tsv"
    params:
        settings=lambda w: json.dumps(dataset_settings(w.dataset), default=list),
        # a local copy's files (size and time of each): editing an image or mask reruns the step
        source=lambda w: source_signature(CFG.dataset(w.dataset).source),
    threads: 1
    resources:
        mem_mb=res("prepare", "mem_mb"),
        runtime=res("prepare", "runtime"),
    shell:
        "{PY:q} -m kdad prepare --config {CONFIG_JSON:q} --dataset {wildcards.dataset:q} --draw {wildcards.draw:q}"
        " --threads {threads:q} 2>&1 | tee {log:q}"


rule features:
    """The frozen expert's hint activations for every image of a dataset, once (float16, memory-mapped)."""
    input:
        WORK / "data" / "{dataset}" / "{draw}.npz",
    output:
        WORK / "features" / "{dataset}" / "{draw}" / "{expert}-{norm}" / "meta.json",
    log:
        WORK / "logs" / "features" / "{dataset}-{draw}-{expert}-{norm}.log",
    benchmark:
        WORK / "benchmarks" / "features" / "{dataset}-{draw}-{expert}-{norm}.tsv"
    params:
        normalize=lambda w: int(w.norm == "norm"),
        # the budget decides whether hints are cached (float16) or computed per batch (float32):
        # other numbers, so a change reruns this step and what reads it
        budget=CFG.hint_cache_gb,
    threads: max(2, CFG.threads)  # Snakemake caps it at --cores
    # each features job unlocks a dataset's long training chains: started late, they leave one core
    # idle at the end (measured on the default run: its last 6 minutes ran one job at a time)
    priority: 2
    resources:
        mem_mb=res("features", "mem_mb"),
        runtime=res("features", "runtime"),
        gpu=gpus("features"),
    shell:
        "{PY:q} -m kdad features --config {CONFIG_JSON:q} --dataset {wildcards.dataset:q} --draw {wildcards.draw:q}"
        " --expert {wildcards.expert:q} --normalize {params.normalize:q} --threads {threads:q} 2>&1 | tee {log:q}"
