import json
import sys
import os
from pathlib import Path

from kdad.experiment import (dataset_file, draw, draws, dump, expert_of, features_dir, load_config,
                             method_options, model_variant, plan, source_signature, variants)
from kdad.config import config_hash
from kdad.methods import get_method, training_options
from kdad.experiment import resolved_config

CFG = load_config(config)  # kdad's own strict parse: unknown datasets, methods, keys → one error, before any job
WORK = Path(CFG.work_dir)
PY = sys.executable  # the interpreter running Snakemake, so `kdad` is importable without activating a venv
RESULTS = Path(CFG.results_dir)
REPORT = Path(CFG.report_dir)
RUNS = plan(CFG)
FIRST_SEED = CFG.seeds[0]

# the resolved config every `kdad` command of this invocation reads, named by its content so that
# another invocation (a dry run with other settings, say) never rewrites the file a job is reading
_text = dump(CFG)
CONFIG_JSON = WORK / "configs" / f"{config_hash(_text)}.json"
if not CONFIG_JSON.exists():
    CONFIG_JSON.parent.mkdir(parents=True, exist_ok=True)
    _tmp = CONFIG_JSON.with_name(f".{CONFIG_JSON.name}.{os.getpid()}.tmp")
    _tmp.write_text(_text)
    os.replace(_tmp, CONFIG_JSON)

wildcard_constraints:
    draw=r"fixed|seed\d+",
    seed=r"\d+",
    protocol=r"one-class|multi-class",
    model=r"[A-Za-z0-9_]+-[0-9a-f]{10}",
    norm=r"norm|raw",

# Measured on the default run (2 CPU cores; README): peak memory and wall time per job, rounded up
# generously. A dataset's `resources:` in the config overrides them (e.g. for the paper's runs).
DEFAULT_RESOURCES = {
    "prepare": {"mem_mb": 2000, "runtime": 15},
    "features": {"mem_mb": 3000, "runtime": 30},
    "train": {"mem_mb": 3000, "runtime": 120},
    "evaluate": {"mem_mb": 3000, "runtime": 60},
}


def res(rule, key):
    """A rule's resource for a job, from the dataset's config or the defaults above."""
    def get(wildcards):
        own = CFG.dataset(wildcards.dataset).resources.get(rule, {}) or {}
        return own.get(key, DEFAULT_RESOURCES[rule].get(key, 0))
    return get


def gpus(rule):
    """1 GPU for jobs that compute with the expert or a model when the config says device: cuda."""
    def get(wildcards):
        own = CFG.dataset(wildcards.dataset).resources.get(rule, {}) or {}
        return own.get("gpu", 1 if CFG.device == "cuda" else 0)
    return get


def data_file(dataset, draw_name):
    return dataset_file(CFG, dataset, draw_name)


def features_meta(dataset, draw_name, expert, normalize):
    return features_dir(CFG, dataset, draw_name, expert, normalize) / "meta.json"


def job_inputs(wildcards, variant):
    """The prepared data (and cached hints, if the variant uses the expert) a job reads."""
    seed = int(wildcards.seed)
    d = draw(CFG, wildcards.dataset, seed)
    files = [data_file(wildcards.dataset, d)]
    used = expert_of(CFG, wildcards.dataset, variant)
    if used is not None:
        files.append(features_meta(wildcards.dataset, d, *used))
    return files


def train_variant(wildcards):
    return model_variant(CFG, wildcards.dataset, wildcards.protocol, wildcards.model)


def dataset_settings(dataset):
    d = CFG.dataset(dataset)
    return {k: getattr(d, k) for k in ("image_size", "categories", "max_train_images", "source", "data_seed")}


def train_params(wildcards):
    """What the trained models depend on: a change reruns the train job (and what follows)."""
    name, config = resolved_config(CFG, wildcards.dataset, train_variant(wildcards))
    return json.dumps({"method": name, "training": training_options(config),
                       "dataset": dataset_settings(wildcards.dataset)}, sort_keys=True, default=list)


def eval_params(wildcards):
    """Everything an evaluation depends on besides its inputs: a scoring option reruns it alone."""
    name, options = method_options(CFG, wildcards.dataset, wildcards.variant)
    return json.dumps({"method": name, "options": options, "dataset": dataset_settings(wildcards.dataset),
                       "examples": CFG.dataset(wildcards.dataset).examples,
                       "ablation_of": CFG.methods[wildcards.variant].get("ablation_of")},
                      sort_keys=True, default=list)


def model_of(wildcards):
    for key in RUNS:
        if (key.dataset, key.protocol, key.variant, key.seed) == (wildcards.dataset, wildcards.protocol,
                                                                 wildcards.variant, int(wildcards.seed)):
            return WORK / "models" / key.model_path
    raise ValueError(f"no run {wildcards}")


def eval_file(key, name="result.json"):
    return WORK / "eval" / key.path / name


def example_files():
    """examples.npz of every evaluation that keeps anomaly-map examples (localising methods on sets
    with masks, first seed); the report draws them."""
    out = []
    for key in RUNS:
        if key.seed != FIRST_SEED or not CFG.dataset(key.dataset).examples:
            continue
        from kdad.data import get_dataset
        name, _ = method_options(CFG, key.dataset, key.variant)
        if get_method(name).localizes and get_dataset(key.dataset).has_masks:
            out.append(eval_file(key, "examples.npz"))
    return out


def all_targets():
    return [RESULTS / "runs.csv", REPORT / "index.md", WORK / "report_figures"]
