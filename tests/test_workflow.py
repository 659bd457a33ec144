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
    assert tex.pixel_auroc.notna().all() and tex.aupro.notna().all() and tex.paper_pixel_metric.notna().all()
    assert sorted(tex.data_seed.unique()) == [0, 1]  # generated data drawn from each run's seed
    assert runs.image_auroc.between(0, 1).all() and runs.image_ap.between(0, 1).all()
    for col in ("config_hash", "code_version", "versions", "train_seconds", "score_images_per_second", "device",
                "machine", "cores", "opt.lam", "opt.score_hints", "model"):
        assert runs[col].notna().all(), col
    assert set(runs.device) == {"cpu"}
    # every row names the code that made it: one content fingerprint, this checkout's
    from kdad.provenance import code_fingerprint
    assert set(runs["code_fingerprint"].astype(str)) == {code_fingerprint()} and "code_clean" in runs
    # the ablation is marked, and shares no model with its reference (other training hints) ...
    abl = runs[runs.variant == "mkd-hints-1"]
    assert set(abl.ablation_of) == {"mkd"} and set(abl["opt.train_hints"].astype(str)) == {"3"}
    assert not set(abl.model) & set(runs[runs.variant == "mkd"].model)
    # ... while an evaluation-only variant (another localisation method) evaluates the same model
    sg = tex[tex.variant == "mkd-smooth_grad"]
    assert set(sg.model) <= set(tex[(tex.variant == "mkd") & (tex.protocol == "one-class")].model)
    assert not runs.apply(lambda r: r.astype(str).str.lower().eq("mean").any(), axis=1).any()
    defects = pd.read_csv(work / "results" / "defects.csv")
    assert set(defects.defect) - {"all"} >= {"scratch", "crack", "hole", "stain", "foreign", "fold"}
    curves = pd.read_csv(work / "results" / "curves.csv")
    assert set(curves.curve) == {"roc", "pro"}
    history = pd.read_csv(work / "results" / "history.csv")
    assert set(history.method) == {"mkd"} and (history.epoch == 1).all()
    report = work / "report"
    assert (report / "index.md").is_file()
    assert list((report / "figures").glob("*.png"))


def test_a_rerun_has_nothing_to_do(tiny_run):
    work, config = tiny_run
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _jobs(dry_run_output: str) -> dict[str, int]:
    """Job counts per rule from a dry run's job-stats table."""
    counts = {}
    for line in dry_run_output.splitlines():
        m = re.fullmatch(r"\s*(\w+)\s+(\d+)\s*", line)
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_a_scoring_option_reruns_evaluation_only(tiny_run, tmp_path):
    """Changing an evaluation-only option (the score hints) reruns the evaluations that use it and
    nothing upstream; changing a training option retrains."""
    work, config = tiny_run
    data = yaml.safe_load(config.read_text())
    data["methods"]["mkd"]["score_hints"] = [2, 3]
    changed = tmp_path / "scoring.yaml"
    changed.write_text(yaml.safe_dump(data))
    jobs = _jobs(_snakemake("--configfile", str(changed), "--cores", "1", "-n").stdout)
    assert jobs.get("evaluate", 0) > 0 and "train" not in jobs and "features" not in jobs, jobs
    data["methods"]["mkd"]["lam"] = 0.5
    changed.write_text(yaml.safe_dump(data))
    jobs = _jobs(_snakemake("--configfile", str(changed), "--cores", "1", "-n").stdout)
    assert jobs.get("train", 0) > 0, jobs


def test_same_seed_same_numbers(tiny_run, tmp_path):
    """Training and evaluating one job again from scratch, in another work folder, reproduces its
    rows exactly."""
    import json

    work, config = tiny_run
    first = pd.read_csv(work / "results" / "runs.csv")
    first = first[(first.dataset == "mnist5k") & (first.protocol == "one-class") & (first.variant == "mkd")
                  & (first.seed == 1)].sort_values("category")
    model = first.model.iloc[0]
    cfg = yaml.safe_load(config.read_text())
    cfg["work_dir"] = str(tmp_path / "w")
    (tmp_path / "w").mkdir()
    for shared in ("data", "features"):  # the same prepared data and hints
        (tmp_path / "w" / shared).symlink_to(work / shared)
    cfg_json = tmp_path / "config.json"
    cfg_json.write_text(json.dumps(cfg))
    common = ["--config", str(cfg_json), "--dataset", "mnist5k", "--protocol", "one-class", "--seed", "1"]
    for cmd in (["train", *common, "--model", model, "--out", str(tmp_path / f"w/models/mnist5k/one-class/{model}/seed1")],
                ["evaluate", *common, "--variant", "mkd", "--out", str(tmp_path / "eval")]):
        proc = subprocess.run([sys.executable, "-m", "kdad", *cmd], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "result.json").read_text())["runs"]
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


@pytest.mark.parametrize("configfile", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config").rglob("*.yaml")
                                               if p.name != "schema.yaml"))
def test_shipped_configs_dry_run_without_data(configfile, tmp_path):
    proc = _snakemake("--configfile", str(ROOT / configfile), "--cores", "1", "-n",
                      "--config", f"work_dir={tmp_path}/w", f"results_dir={tmp_path}/r", f"report_dir={tmp_path}/p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(proc.stdout)
    assert jobs.get("train", 0) > 0 and jobs.get("evaluate", 0) >= jobs["train"], jobs


def test_config_overrides_keep_the_default_config(tmp_path):
    """`snakemake --config key=value` overrides one key of the default config (it used to drop it)."""
    proc = _snakemake("--cores", "1", "-n", "--config", f"work_dir={tmp_path}/w", f"results_dir={tmp_path}/r",
                      f"report_dir={tmp_path}/p", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    assert all(f"dataset={name}" in proc.stdout for name in default["datasets"])
    assert str(tmp_path / "w") in proc.stdout


def test_slurm_profile_dry_runs_the_paper_config_with_resources(tmp_path):
    """The cluster profile (snakemake-executor-plugin-slurm) plans the paper's protocol; a training
    job asks for the memory, time and GPU the config gives it."""
    proc = _snakemake("--profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(ROOT / "config" / "paper.yaml"),
                      "-n", "--config", "device=cuda", f"work_dir={tmp_path}/w", f"results_dir={tmp_path}/r",
                      f"report_dir={tmp_path}/p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    blocks = proc.stdout.split("\n\n")
    mvtec = next(b for b in blocks if "rule train:" in b and "dataset=mvtec_ad" in b)
    assert "mem_mb=8000" in mvtec and "runtime=1440" in mvtec and "gpu=1" in mvtec
    assert all(re.search(r"mem_mb=\d+", b) and re.search(r"runtime=\d+", b) for b in blocks if "rule evaluate:" in b)


def test_device_is_checked_and_recorded(tmp_path):
    from kdad.config import ConfigError
    from kdad.experiment import load_config
    from kdad.provenance import resolve_device
    import torch
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    base = yaml.safe_load(_tiny_config(tmp_path).read_text())
    with pytest.raises(ConfigError, match="device"):
        load_config({**base, "device": "tpu"})


def test_cli_errors_are_one_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("seeds: [0]\ndatasets: {mnist5k: {methodz: [mkd]}}\n")
    proc = subprocess.run([sys.executable, "-m", "kdad", "plan", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 3  # configuration error
    assert proc.stderr.strip().count("\n") == 0 and "methodz" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "kdad", "plan"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2  # usage error
    proc = subprocess.run([sys.executable, "-m", "kdad", "list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "fashion_mnist" in proc.stdout and "Multiresolution" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "kdad", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("kdad ")
    for command in ("prepare", "features", "train", "evaluate", "aggregate", "report", "plan", "list"):
        proc = subprocess.run([sys.executable, "-m", "kdad", command, "--help"], capture_output=True, text=True,
                              cwd=ROOT)
        assert proc.returncode == 0 and len(proc.stdout.splitlines()) > 2, command


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make reproduce" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^reproduce:.*\n(\t.*\n)*\t\$\(BIN\)/snakemake --cores", makefile, re.M)


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


VOLATILE = ("train_seconds", "train_images_per_second", "score_images_per_second", "map_images_per_second",
            "peak_rss_mb", "seconds")


def _small_config(tmp_path: Path, seed: int) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(_tiny_config(tmp_path).read_text())
    data["seeds"] = [seed]
    data["datasets"] = {"textures": {**data["datasets"]["textures"], "protocols": ["one-class"],
                                     "categories": ["brick"], "protocol_methods": {}}}
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_same_workflow_twice_gives_byte_identical_results(tmp_path):
    """Two runs of the same config in two folders: every result file is identical byte for byte,
    apart from the columns that measure time and memory; another seed changes the numbers."""
    outputs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = _small_config(tmp_path / name, seed)
        proc = _snakemake("--configfile", str(config), "--cores", "2", "--quiet")
        assert proc.returncode == 0, proc.stderr[-3000:]
        tables = {}
        for f in ("runs", "defects", "curves", "history"):
            df = pd.read_csv(tmp_path / name / "w" / "results" / f"{f}.csv")
            tables[f] = df.drop(columns=[c for c in VOLATILE if c in df.columns]).to_csv(index=False)
        outputs.append(tables)
    assert outputs[0] == outputs[1]
    assert outputs[0]["runs"] != outputs[2]["runs"]


def test_a_variant_name_with_shell_syntax_is_refused_before_any_job(tmp_path):
    """A variant name becomes a wildcard, a path and a shell word: anything but a plain name is one error."""
    config = _small_config(tmp_path, 0)
    data = yaml.safe_load(config.read_text())
    bad = 'v||touch$IFS"x";#'
    data["methods"][bad] = dict(data["methods"]["mkd"])
    data["datasets"]["textures"]["methods"] = ["mkd", bad]
    config.write_text(yaml.safe_dump(data))
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config.methods" in out and "not a usable name" in out and bad in out, out[-2000:]
    assert not (ROOT / "x").exists() and not (tmp_path / "x").exists()


def test_folders_with_spaces_and_shell_syntax_are_quoted_and_run(tmp_path):
    """A work/results/report folder named with a space and `$(…)`: every command quotes it (dry run
    prints them), and a real run writes its results there without running the embedded command."""
    marker = f"kdad_pwned_{tmp_path.name}"
    odd = tmp_path / f"a b $(touch {marker})"
    config = _small_config(tmp_path, 0)
    data = yaml.safe_load(config.read_text())
    data.update(work_dir=str(odd / "w"), results_dir=str(odd / "r"), report_dir=str(odd / "p"))
    config.write_text(yaml.safe_dump(data))
    proc = _snakemake("--configfile", str(config), "--cores", "1", "-n", "-p")
    assert proc.returncode == 0, proc.stderr[-3000:]
    import shlex
    commands = [line.strip() for line in proc.stdout.splitlines() if " -m kdad " in line]
    assert {c.split(" -m kdad ")[1].split()[0] for c in commands} >= {"prepare", "features", "train", "evaluate",
                                                                        "aggregate", "report"}
    for command in commands:
        words = shlex.split(command)
        assert any(w.startswith(str(odd)) for w in words), command  # the folder is one word, not split
        assert not any(w.startswith("$(") or w == "b" for w in words), command
    proc = _snakemake("--configfile", str(config), "--cores", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(pd.read_csv(odd / "r" / "runs.csv")) == 1 and (odd / "p" / "index.md").is_file()
    assert not list(ROOT.glob(f"**/{marker}")) and not list(tmp_path.glob(f"**/{marker}"))


def test_a_report_job_keeps_the_users_own_files_in_the_report_folder(tiny_run):
    """report/figures/ is no directory() output any more: Snakemake used to empty it before every
    report job. Forcing the report job again keeps a user's file there and in report/."""
    work, config = tiny_run
    report = work / "report"
    (report / "figures" / "my_own.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (report / "my_notes.md").write_text("mine")
    proc = _snakemake("--configfile", str(config), "--cores", "1", "--quiet", "--forcerun", "report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (report / "figures" / "my_own.png").is_file() and (report / "my_notes.md").read_text() == "mine"
    assert list((work / "report_figures").glob("maps_textures_*.png"))  # what `snakemake --report` collects
    assert not (work / "report_figures" / "my_own.png").exists()
