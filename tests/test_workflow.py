"""The workflow and the commands the README documents, on tiny data."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _tiny_config(tmp_path: Path) -> Path:
    text = (ROOT / "tests" / "data" / "tiny.yaml").read_text().replace("WORK", str(tmp_path / "w"))
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def _snakemake(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(ROOT),
                           *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dag")
    config = _tiny_config(tmp)
    proc = _snakemake("--configfile", str(config), "--cores", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / "w", config


def test_the_whole_dag_runs_on_tiny_data(tiny_run):
    work, config = tiny_run
    runs = pd.read_csv(work / "results" / "runs.csv")
    cfg = yaml.safe_load(config.read_text())
    # every (dataset, protocol, category, variant, seed) the config asks for is a row
    assert set(runs.seed) == set(cfg["seeds"])
    mn = runs[runs.dataset == "mnist5k"]
    assert len(mn) == 2 * 2 * 2 * 2  # protocols × categories × variants × seeds
    tex = runs[runs.dataset == "textures"]
    assert set(tex.protocol) == {"one-class", "multi-class"}
    assert tex.pixel_auroc.notna().all() and tex.aupro.notna().all()
    assert runs.image_auroc.between(0, 1).all()
    for col in ("config_hash", "code_version", "versions", "train_seconds", "score_images_per_second"):
        assert runs[col].notna().all(), col
    assert not runs.apply(lambda r: r.astype(str).str.lower().eq("mean").any(), axis=1).any()
    defects = pd.read_csv(work / "results" / "defects.csv")
    assert set(defects.defect) >= {"scratch", "crack", "hole", "stain", "foreign", "fold"}
    loc = pd.read_csv(work / "results" / "localization.csv")
    assert set(loc.localization) == {"gradients", "smooth_grad", "guided_backprop", "integrated_gradients"}
    report = work / "report"
    assert (report / "index.md").is_file()
    assert list((report / "figures").glob("*.png"))
    assert (report / "main_mnist5k_one_class.md").read_text().count("±") >= 2


def test_a_rerun_has_nothing_to_do(tiny_run):
    work, config = tiny_run
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """Rerunning one job from scratch reproduces its committed row exactly."""
    work, config = tiny_run
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "kdad", "run", "--config", str(work / "config.json"),
                           "--dataset", "mnist5k", "--protocol", "one-class", "--variant", "mkd", "--seed", "1",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = pd.read_json(out / "result.json", typ="series")["rows"]
    first = pd.read_csv(work / "results" / "runs.csv")
    first = first[(first.dataset == "mnist5k") & (first.protocol == "one-class") & (first.variant == "mkd")
                  & (first.seed == 1)].sort_values("category")
    assert [round(r["image_auroc"], 6) for r in sorted(again, key=lambda r: r["category"])] == \
        [round(x, 6) for x in first.image_auroc]


def test_unknown_config_keys_are_rejected(tmp_path):
    config = _tiny_config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["datasets"]["mnist5k"]["epoch"] = 3  # typo of epochs
    config.write_text(yaml.safe_dump(data))
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n")
    assert proc.returncode != 0 and "epoch" in proc.stdout + proc.stderr
    data["datasets"]["mnist5k"].pop("epoch")
    data["methods"]["mkd"]["lamda"] = 0.1
    config.write_text(yaml.safe_dump(data))
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n")
    assert proc.returncode != 0 and "lamda" in proc.stdout + proc.stderr


def test_unknown_method_and_dataset_names_list_the_known_ones(tmp_path):
    from kdad.config import ConfigError
    from kdad.experiment import load_config
    from kdad.registry import RegistryError
    base = yaml.safe_load(_tiny_config(tmp_path).read_text())
    bad = {**base, "methods": {**base["methods"], "x": {"method": "mdk"}}}
    with pytest.raises(RegistryError, match="unknown method 'mdk'.*mkd"):
        load_config(bad)
    bad = {**base, "datasets": {"fashion_mnsit": {}}}
    with pytest.raises(RegistryError, match="unknown dataset 'fashion_mnsit'.*fashion_mnist"):
        load_config(bad)
    bad = {**base, "datasets": {"mnist5k": {"methods": ["nope"]}}}
    with pytest.raises(ConfigError, match="nope"):
        load_config(bad)


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_shipped_configs_dry_run_without_data(configfile, tmp_path):
    proc = _snakemake("--configfile", str(ROOT / configfile), "--cores", "1", "-n", "--quiet", "rules",
                      "--config", f"work_dir={tmp_path}/w", f"results_dir={tmp_path}/r", f"report_dir={tmp_path}/p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run" in proc.stdout


def test_cli_errors_are_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [0]\ndatasets: {mnist5k: {methodz: [mkd]}}\n")
    proc = subprocess.run([sys.executable, "-m", "kdad", "plan", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "methodz" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "kdad", "list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "fashion_mnist" in proc.stdout and "mkd" in proc.stdout


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make reproduce" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:.*\n(\t.*\n)*\t\$\(BIN\)/snakemake --cores", makefile, re.M)


def test_a_killed_job_resumes_and_ignores_stale_partials(tiny_run, tmp_path):
    """A job killed after some categories keeps them; a partial from other settings is discarded."""
    import json
    import shutil

    work, _ = tiny_run
    done = work / "runs" / "mnist5k" / "one-class" / "mkd" / "seed0"
    out = tmp_path / "job"
    cmd = [sys.executable, "-m", "kdad", "run", "--config", str(work / "config.json"), "--dataset", "mnist5k",
           "--protocol", "one-class", "--variant", "mkd", "--seed", "0", "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = json.loads((out / "result.json").read_text())["rows"]
    # simulate a kill after category "0": rebuild its partial with the right fingerprint
    from kdad.config import config_hash
    from kdad.experiment import load_config, method_options, run_key
    from kdad.runs import code_version
    import dataclasses
    cfg = load_config(json.loads((work / "config.json").read_text()))
    key = run_key(cfg, "mnist5k", "one-class", "mkd", 0)
    fp = config_hash({"key": dataclasses.asdict(key), "options": method_options(cfg, "mnist5k", "mkd"),
                      "dataset": dataclasses.asdict(cfg.dataset("mnist5k")), "code": code_version()})
    partial = out / "partial"
    partial.mkdir()
    (partial / "fingerprint").write_text(fp)
    marked = {"config": {}, "rows": [{**rows[0], "image_auroc": 0.123}], "defects": [], "localization": [],
              "history": []}
    (partial / "0.json").write_text(json.dumps(marked))
    shutil.copy(done / "scores.npz", partial / "0.npz")
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and "reusing" in again.stderr
    assert json.loads((out / "result.json").read_text())["rows"][0]["image_auroc"] == 0.123
    # a partial written under other settings is not trusted
    partial.mkdir()
    (partial / "fingerprint").write_text("something else")
    (partial / "0.json").write_text(json.dumps(marked))
    third = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert third.returncode == 0 and "reusing" not in third.stderr
    assert json.loads((out / "result.json").read_text())["rows"][0]["image_auroc"] == rows[0]["image_auroc"]


def test_snakemake_report_collects_the_figures(tiny_run, tmp_path):
    work, config = tiny_run
    html = tmp_path / "report.html"
    proc = _snakemake("--configfile", str(config), "--report", str(html))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert html.stat().st_size > 10_000 and "maps_textures" in html.read_text(errors="ignore")


def test_paper_config_uses_the_papers_lambda_per_dataset():
    from kdad.experiment import load_config, method_options
    from kdad.mkd import MKDConfig
    cfg = load_config(ROOT / "config" / "paper.yaml")
    assert method_options(cfg, "mvtec_ad", "mkd")[1]["lam"] == 0.5
    assert method_options(cfg, "mnist", "mkd")[1].get("lam", MKDConfig().lam) == 0.01
    assert method_options(cfg, "mvtec_ad", "mkd-lam-0.1")[1]["lam"] == 0.1  # a variant's own value wins
    assert method_options(cfg, "mvtec_ad", "mkd")[1]["epochs"] == 601
