import json
import shlex
import sys
import os
from pathlib import Path

from kdad.experiment import dump, expert_of, load_config, method_options, plan

CFG = load_config(config)  # kdad's own strict parse: unknown datasets, methods, keys → error
WORK = Path(CFG.work_dir)
PY = shlex.quote(sys.executable)  # the interpreter running Snakemake, so `kdad` is importable without activating a venv
RESULTS = Path(CFG.results_dir)
REPORT = Path(CFG.report_dir)
RUNS = plan(CFG)

# the resolved config every `kdad` command reads; rewritten only when it changes
CONFIG_JSON = WORK / "config.json"
_text = dump(CFG)
if not CONFIG_JSON.exists() or CONFIG_JSON.read_text() != _text:
    CONFIG_JSON.parent.mkdir(parents=True, exist_ok=True)
    _tmp = CONFIG_JSON.with_name(".config.json.tmp")
    _tmp.write_text(_text)
    os.replace(_tmp, CONFIG_JSON)


def run_file(key):
    return WORK / "runs" / key.path / "result.json"


def features_file(dataset, expert, normalize):
    return WORK / "features" / dataset / f"{expert}-{'norm' if normalize else 'raw'}" / "meta.json"


def run_features(wildcards):
    used = expert_of(CFG, wildcards.dataset, wildcards.variant)
    return [] if used is None else [features_file(wildcards.dataset, *used)]


def run_options(wildcards):
    """The variant's resolved options and the dataset's settings: a change reruns the job."""
    name, options = method_options(CFG, wildcards.dataset, wildcards.variant)
    d = CFG.dataset(wildcards.dataset)
    return json.dumps({"method": name, "options": options, "dataset": {k: getattr(d, k) for k in
                       ("image_size", "max_train_images", "source", "seed", "localization_table", "example_maps")}},
                      sort_keys=True, default=list)


def maps_runs():
    """Runs that keep example maps (result.json as the DAG's handle; maps.npz lies beside it)."""
    return [run_file(k) for k in RUNS
            if CFG.dataset(k.dataset).example_maps and k.variant == "mkd" and k.seed == CFG.seeds[0]]


def all_targets():
    return [RESULTS / "runs.csv", REPORT / "index.md"]
