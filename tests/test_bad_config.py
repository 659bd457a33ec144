"""Config values that used to give a silently wrong run or a late traceback: each is one clear
ConfigError when the config is loaded (before any data, hint or training work), or — for the
README's `--config key=value` overrides — simply works.

The workflow cases run Snakemake dry runs (``-n``) on the tiny config (tests/data/tiny.yaml).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdad.config import ConfigError
from kdad.experiment import load_config, method_options, model_id, resolved_config

ROOT = Path(__file__).resolve().parent.parent
TINY = (ROOT / "tests" / "data" / "tiny.yaml").read_text()


def _cfg(tmp_path: Path, **changes) -> dict:
    """The tiny config with folders under tmp_path and dotted-key ``changes`` applied."""
    cfg = yaml.safe_load(TINY.replace("WORK", str(tmp_path / "w")))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = cfg
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


BAD = {
    "epochs 0": ({"methods.mkd.epochs": 0}, r"methods.mkd.*epochs ≥ 1"),
    "epochs 0 in a dataset override": ({"datasets.mnist5k.overrides": {"mkd": {"epochs": 0}}}, r"epochs ≥ 1"),
    "lam nan": ({"methods.mkd.lam": float("nan")}, r"methods.mkd.lam: must be a finite number"),
    "lam inf": ({"methods.mkd.lam": float("inf")}, r"methods.mkd.lam: must be a finite number"),
    "hint_cache_gb nan": ({"hint_cache_gb": float("nan")}, r"hint_cache_gb: must be a finite number"),
    "huge image_size": ({"datasets.mnist5k.image_size": 1048576}, r"image_size must be ≥ 8 and ≤ 1024"),
    "negative seed": ({"seeds": [0, -1]}, r"seeds must be integers from 0 to 2147483647, got \[-1\]"),
    "huge seed": ({"seeds": [2**40]}, r"seeds must be integers from 0"),
    "text seed": ({"seeds": ["zero"]}, r"config.seeds\[0\]: expected int, got 'zero'"),
    "float seed": ({"seeds": [1.5]}, r"config.seeds\[0\]: expected int, got 1.5"),
    "bool seed": ({"seeds": [True]}, r"config.seeds\[0\]: expected int, got True"),
    "bool epochs": ({"methods.mkd.epochs": True}, r"methods.mkd.epochs: expected int, got True"),
    "negative data_seed": ({"datasets.textures.data_seed": -3}, r"data_seed must be an integer from 0"),
    "empty categories": ({"datasets.mnist5k.categories": []}, r"categories is an empty list.*leave the key out"),
    "duplicate categories": ({"datasets.mnist5k.categories": ["0", "1", "0"]},
                             r"categories lists \['0'\] more than once"),
    "duplicate seeds": ({"seeds": [1, 1]}, r"seeds must be distinct"),
    "ablation of itself": ({"methods.mkd.ablation_of": "mkd"}, r"methods.mkd.ablation_of: 'mkd' makes a cycle"),
    "ablation cycle": ({"methods.mkd.ablation_of": "mkd-hints-1"}, r"makes a cycle \(mkd → mkd-hints-1 → mkd\)"),
    "ablation of an unknown variant": ({"methods.mkd-hints-1.ablation_of": "mkd2"},
                                       r"methods.mkd-hints-1.ablation_of: 'mkd2' is not an entry"),
    "ablation of another method": ({"methods.knn": {"method": "knn", "ablation_of": "mkd"}},
                                   r"'mkd' is a mkd variant, not knn"),
    "resources as text": ({"datasets.mnist5k.resources": {"train": {"mem_mb": "lots"}}},
                          r"resources.train.mem_mb must be an integer ≥ 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_are_one_error_at_load(case, tmp_path):
    changes, message = BAD[case]
    with pytest.raises(ConfigError, match=message) as err:
        load_config(_cfg(tmp_path, **changes))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "w").exists()


def test_categories_all_or_left_out_still_mean_every_category(tmp_path):
    for value in ("all", None):
        assert load_config(_cfg(tmp_path, **{"datasets.mnist5k.categories": value})).datasets[
            "mnist5k"].categories is None


# ------------------------------------------------------------------------------ ablation_of
def test_an_ablation_inherits_the_options_of_the_variant_it_ablates(tmp_path):
    """`mkd10-raw: {ablation_of: mkd10, map_normalization: …}` used to train a second model at the
    method's defaults; it is mkd10's options with one evaluation option changed: the same model."""
    cfg = load_config(_cfg(tmp_path, **{
        "methods.mkd10": {"method": "mkd", "expert": "efficientnet_lite0_random", "epochs": 10, "batch_size": 8},
        "methods.mkd10-raw": {"method": "mkd", "ablation_of": "mkd10", "map_normalization": "none"},
        "methods.mkd10-raw-hints": {"method": "mkd", "ablation_of": "mkd10-raw", "train_hints": [3],
                                    "score_hints": [3]},
        "datasets.mnist5k.methods": ["mkd10", "mkd10-raw", "mkd10-raw-hints"]}))
    raw = resolved_config(cfg, "mnist5k", "mkd10-raw")[1]
    assert (raw.epochs, raw.batch_size, raw.map_normalization) == (10, 8, "none")
    assert model_id(cfg, "mnist5k", "mkd10-raw") == model_id(cfg, "mnist5k", "mkd10")
    chained = resolved_config(cfg, "mnist5k", "mkd10-raw-hints")[1]
    assert (chained.epochs, chained.map_normalization, chained.train_hints) == (10, "none", (3,))
    assert model_id(cfg, "mnist5k", "mkd10-raw-hints") != model_id(cfg, "mnist5k", "mkd10")


def test_an_ablations_own_option_beats_the_dataset_override(tmp_path):
    cfg = load_config(_cfg(tmp_path, **{"methods.mkd-hints-1.epochs": 3}))
    assert method_options(cfg, "mnist5k", "mkd-hints-1")[1]["epochs"] == 3
    assert method_options(cfg, "mnist5k", "mkd")[1]["epochs"] == 1  # the override fills what nobody set


# ----------------------------------------------------------------------------- duplicate keys
def test_a_duplicate_yaml_key_is_an_error_naming_its_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TINY.replace("WORK", str(tmp_path / "w")).replace("threads: 1\n", "threads: 1\nthreads: 2\n"))
    with pytest.raises(ConfigError, match=r"duplicate key 'threads' \(first at line \d+\)"):
        load_config(path)


# ------------------------------------------------------------------- --config from the command line
def _snakemake(*args):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(ROOT),
                           "--cores", "1", "-n", *args], capture_output=True, text=True, cwd=ROOT)


def _tiny_file(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text or TINY.replace("WORK", str(tmp_path / "w")))
    return path


def _planned(stdout: str) -> set[str]:
    return set(re.findall(r"eval/(\S+?)/result\.json", stdout))


def test_readme_style_config_overrides_dry_run(tmp_path):
    """What the README shows: lists, numbers and nested settings from `--config` (Snakemake passes
    them as text, which the schema used to reject)."""
    config = _tiny_file(tmp_path)
    proc = _snakemake("--configfile", str(config), "--config", "seeds=[3,4]", "threads=2",
                      "datasets={mnist5k: {categories: ['1'], max_train_images: 8, overrides: {mkd: {epochs: 2}}}}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = _planned(proc.stdout)
    assert "mnist5k/one-class/mkd/seed3" in runs and "mnist5k/one-class/mkd/seed4" in runs
    assert not any(r.endswith("seed0") for r in runs)
    written = [json.loads(p.read_text()) for p in (tmp_path / "w" / "configs").glob("*.json")]
    assert written and all(c["seeds"] == [3, 4] and c["threads"] == 2 for c in written)
    d = written[0]["datasets"]["mnist5k"]
    assert d["categories"] == ["1"] and d["max_train_images"] == 8


def test_a_bad_config_override_is_kdads_error(tmp_path):
    proc = _snakemake("--configfile", str(_tiny_file(tmp_path)), "--config", "seeds=[0,-1]")
    assert proc.returncode != 0
    assert "config: seeds must be integers from 0" in proc.stdout + proc.stderr  # Snakemake prints it


def test_a_duplicate_key_in_a_configfile_stops_the_workflow(tmp_path):
    text = TINY.replace("WORK", str(tmp_path / "w")).replace("seeds: [0, 1]\n", "seeds: [0, 1]\nseeds: [5]\n")
    proc = _snakemake("--configfile", str(_tiny_file(tmp_path, text)))
    assert proc.returncode != 0 and "duplicate key 'seeds'" in proc.stdout + proc.stderr


def test_editing_a_local_source_reruns_prepare(tmp_path):
    """A `source:` folder's files are part of the prepare step's parameters."""
    from kdad.experiment import source_signature
    folder = tmp_path / "src" / "bottle" / "train" / "good"
    folder.mkdir(parents=True)
    (folder / "000.png").write_bytes(b"a")
    before = source_signature(str(tmp_path / "src"))
    assert source_signature(str(tmp_path / "src")) == before
    (folder / "000.png").write_bytes(b"bb")
    assert source_signature(str(tmp_path / "src")) != before
    assert source_signature(None) == "" and source_signature(str(tmp_path / "nothing")) == "missing"
