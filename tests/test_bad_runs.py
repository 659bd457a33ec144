"""Runs that used to lose work or report something wrong without a word: a killed training job of
several categories, a checkpoint resumed under other data settings, a damaged hint cache, training
settings that never take an optimiser step, hand-edited or damaged result CSVs, and the command
line's odd inputs (negative threads, a closed pipe)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from kdad.data.base import DatasetError
from kdad.experiment import load_config, plan
from kdad.training import TrainingError

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------- a killed multi-category job
OCSVM = {"method": "ocsvm", "features": "pixels", "expert": "efficientnet_lite0_random"}


def _config(work: Path, **dataset) -> dict:
    return {"seeds": [0], "work_dir": str(work), "results_dir": str(work / "r"), "report_dir": str(work / "rep"),
            "methods": {"ocsvm": OCSVM},
            "datasets": {"textures": {"image_size": 32, "categories": ["brick", "tissue"], "methods": ["ocsvm"],
                                      "max_train_images": 16, **dataset}}}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from kdad import runs
    work = tmp_path_factory.mktemp("kill") / "w"
    cfg = load_config(_config(work))
    runs.prepare(cfg, "textures", "seed0")
    runs.features(cfg, "textures", "seed0", "efficientnet_lite0_random", True)
    return work


class Killed(BaseException):
    """Stands for the SIGKILL: nothing after it runs (not even `except Exception`)."""


def _train(work: Path, monkeypatch, kill_on: int | None = None, calls: list | None = None,
           **dataset) -> tuple[int, Path]:
    """Run the train job; the ``kill_on``-th fit (1-based) is killed. Returns (fits started, out dir)."""
    from kdad import runs
    cfg = load_config(_config(work, **dataset))
    key = plan(cfg)[0]
    calls = [] if calls is None else calls
    real = runs.build_method

    def build(*args, **kwargs):
        spec, config, detector = real(*args, **kwargs)
        fit = detector.fit

        def counted(*a, **k):
            calls.append(1)
            if len(calls) == kill_on:
                raise Killed
            return fit(*a, **k)
        detector.fit = counted
        return spec, config, detector
    monkeypatch.setattr(runs, "build_method", build)
    out = work / "models" / key.model_path
    import shutil
    shutil.rmtree(out, ignore_errors=True)  # Snakemake removes a job's old output before running it
    try:
        runs.train(cfg, "textures", "one-class", key.model, 0, out)
    except Killed:
        # a model folder exists only when complete (built under another name), so a second
        # invocation sharing work/ cannot take a half-built one for a finished one
        assert not out.exists()
    return len(calls), out


def test_a_killed_job_keeps_its_finished_categories(prepared, monkeypatch):
    fits, out = _train(prepared, monkeypatch, kill_on=2)
    assert fits == 2 and not out.exists()
    fits, out = _train(prepared, monkeypatch)
    assert fits == 1  # brick was reused, only tissue trained
    assert sorted(p.name for p in out.iterdir()) == ["brick.pt", "meta.json", "tissue.pt"]
    assert not (prepared / "checkpoints").exists() or not any((prepared / "checkpoints").rglob("*.pt"))
    fits, _ = _train(prepared, monkeypatch)
    assert fits == 2  # a finished job leaves no cache behind: a forced rerun trains again


def test_finished_categories_are_reused_only_under_the_same_data_settings(prepared, monkeypatch):
    fits, _ = _train(prepared, monkeypatch, kill_on=2)
    fits, _ = _train(prepared, monkeypatch, max_train_images=12)
    assert fits == 2  # another training subset: brick is trained again, not taken from the cache


def test_a_one_class_test_set_fails_before_any_training(prepared, monkeypatch):
    """Every category's split is made first: the second category's test set without defective
    images stops the job before the first category trains."""
    from kdad import protocols, runs
    real = runs.make_task

    def one_class(ds, spec, protocol, category, *a, **k):
        if category == "tissue":
            ds.test.anomalous[:] = False
        return real(ds, spec, protocol, category, *a, **k)
    monkeypatch.setattr(runs, "make_task", one_class)
    fits = []
    with pytest.raises(protocols.ProtocolError, match="tissue: the test set needs normal and anomalous images"):
        _train(prepared, monkeypatch, calls=fits, max_train_images=10)
    assert fits == []


def test_the_resume_key_holds_everything_that_changes_the_data_or_hints(tmp_path):
    from kdad.runs import resume_key
    base = _config(tmp_path / "w")

    def key(hints="cached", size=32, **dataset):
        cfg = load_config({**base, "datasets": {"textures": {**base["datasets"]["textures"], **dataset}}})
        k = plan(cfg)[0]
        inputs = SimpleNamespace(draw="seed0", expert=None, size=size,
                                 hint_mode=hints)
        from kdad.methods import method_config
        return resume_key(cfg, k, inputs, method_config("ocsvm", {k: v for k, v in OCSVM.items() if k != "method"})[1])

    ref = key()
    assert key() == ref
    others = [key(size=64), key(hints="per-batch"), key(max_train_images=8), key(data_seed=3),
              key(source=str(tmp_path)), key(categories=["brick"])]
    assert ref not in others and len(set(others)) == len(others)


# -------------------------------------------------------------------------------- hint cache
def test_a_damaged_hint_cache_says_delete_it(tmp_path):
    from kdad.features import load_hint_cache, save_hint_cache
    folder = tmp_path / "hints"
    hints = {"train": [np.zeros((5, 4, 8, 8), np.float16), np.zeros((5, 8, 4, 4), np.float16)]}
    save_hint_cache(folder, hints, {"cached": True, "shapes": {"train": [[5, 4, 8, 8], [5, 8, 4, 4]]}})
    assert [h.shape for h in load_hint_cache(folder, "train", 5)] == [(5, 4, 8, 8), (5, 8, 4, 4)]
    with pytest.raises(DatasetError, match=r"cover \[5, 5\] images, the prepared data 7; delete .*hints"):
        load_hint_cache(folder, "train", 7)
    np.save(folder / "train_h1.npy", np.zeros((3, 8, 4, 4), np.float16))  # replaced by another run's file
    with pytest.raises(DatasetError, match=r"meta.json says .*; delete .*hints and run the workflow again"):
        load_hint_cache(folder, "train", 5)
    data = (folder / "train_h0.npy").read_bytes()
    (folder / "train_h0.npy").write_bytes(data[:len(data) // 2])  # cut short
    with pytest.raises(DatasetError, match=r"train_h0.npy: a damaged hint file"):
        load_hint_cache(folder, "train", 5)
    (folder / "meta.json").unlink()
    with pytest.raises(DatasetError, match="no readable meta.json"):
        load_hint_cache(folder, "train")


# ---------------------------------------------------------------------- training without steps
def test_batchnorm_with_batch_size_one_is_an_error_not_an_untrained_model():
    from kdad.training import train
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TrainingError, match=r"batch_size 1 with 8 training image\(s\) leaves no batch"):
        train({"net": net}, opt, lambda idx: net(torch.zeros(len(idx), 1, 5, 5)).mean(), 8, epochs=1,
              batch_size=1, seed=0, what="test")
    history = train({"net": net}, opt, lambda idx: net(torch.rand(len(idx), 1, 5, 5)).pow(2).mean(), 8, epochs=1,
                    batch_size=2, seed=0, what="test")
    assert history[0]["images_per_second"] > 0


# ----------------------------------------------------------------------------------- results
HEADER = "dataset,protocol,category,method,variant,ablation_of,seed,image_auroc,pixel_auroc\n"
ROW = "mnist5k,one-class,{cat},mkd,mkd,,{seed},{auroc},\n"


def _rows(*cells) -> str:
    return HEADER + "".join(ROW.format(cat=c, seed=s, auroc=a) for c, s, a in cells)


@pytest.mark.parametrize("text, message", [
    (_rows(("0", 0, 0.9), ("0", 0, 0.9)), r"line 3: a second row for dataset=mnist5k.*seed=0"),
    (_rows(("0", 0, 0.9)) + "mnist5k,one-class,1,mkd\n", r"line 3: 4 field\(s\), the header has 9"),
    (_rows(("0", 0, 0.9)) + "mnist5k,one-class,1,mkd,mkd,,0,0.9,,7\n", r"line 3: 10 field\(s\)"),
    (_rows(("0", 0, "high")), r"line 2: image_auroc = 'high' is not a number"),
    (_rows(("0", 0, 7.5)), r"line 2: image_auroc = 7.5 is outside \[0, 1\]"),
    (_rows(("0", 0, "")), r"line 2: image_auroc is empty"),
    (_rows(("0", "x", 0.9)), r"line 2: seed = 'x' is not a number"),
])
def test_bad_result_rows_name_file_line_and_problem(tmp_path, text, message):
    from kdad.tables.results import ResultsError, load_results
    (tmp_path / "runs.csv").write_text(text)
    with pytest.raises(ResultsError, match=message):
        load_results(tmp_path)


def test_binary_garbage_in_place_of_results_is_one_error(tmp_path):
    from kdad.tables.results import ResultsError, load_results
    (tmp_path / "runs.csv").write_bytes(HEADER.encode() + bytes(range(128, 256)) * 4)
    with pytest.raises(ResultsError, match="runs.csv: not a CSV text file"):
        load_results(tmp_path)


def test_good_results_still_load_with_nan_pixel_metrics(tmp_path):
    from kdad.tables.results import load_results
    (tmp_path / "runs.csv").write_text(_rows(("0", 0, 0.9), ("0", 1, 0.8), ("1", 0, 1.0)))
    runs = load_results(tmp_path).runs
    assert len(runs) == 3 and runs["pixel_auroc"].isna().all() and runs["image_auroc"].max() == 1.0


# ------------------------------------------------------------------------------- command line
def test_negative_threads_are_a_usage_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path / "w")))
    proc = subprocess.run([sys.executable, "-m", "kdad", "plan", "--config", str(path), "--threads", "-1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "expected a whole number ≥ 1, got '-1'" in proc.stderr


def test_output_into_a_closed_pipe_ends_quietly():
    proc = subprocess.run(f"{sys.executable} -m kdad list | head -n 1", shell=True, capture_output=True, text=True,
                          cwd=ROOT)
    assert proc.stdout.strip() == "datasets:"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# ------------------------------------------------------------------------------- a full disk
def _disk_full(*_a, **_k):
    import errno
    raise OSError(errno.ENOSPC, "No space left on device", "x.npz")


@pytest.mark.parametrize("writer", ["npz", "json", "torch", "copy"])
def test_a_full_disk_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch, writer):
    """Each writer's own serialiser writes half its bytes, then the disk is full."""
    from kdad import atomic, runs
    from kdad.data.base import write_npz_atomic
    from kdad.training import save_atomic
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    src = tmp_path / "src"
    src.write_bytes(b"new" * 1000)

    def half(f, *a, **k):
        (f if hasattr(f, "write") else a[0]).write(b"half")
        _disk_full()
    if writer == "npz":
        monkeypatch.setattr(np, "savez", half)
    elif writer == "torch":
        monkeypatch.setattr(torch, "save", lambda obj, f: half(f))
    elif writer in ("json", "copy"):
        real = atomic.write_atomic
        monkeypatch.setattr(atomic, "write_atomic", lambda p, w: real(p, lambda f: (w(f), half(f))))
    do = {"npz": lambda: write_npz_atomic(path, {"a": np.zeros(3)}),
          "json": lambda: runs._write_json_atomic(path, {"a": 1}),
          "torch": lambda: save_atomic({"a": 1}, path),
          "copy": lambda: runs.copy_atomic(src, path)}[writer]
    with pytest.raises(OSError) as err:
        do()
    assert atomic.is_disk_full(err.value)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "src"]


def test_a_full_disk_while_writing_results_keeps_the_old_tables(tmp_path, monkeypatch):
    import pandas as pd

    from kdad import runs
    result = {name: [] for name in runs.TABLES}
    result["runs"] = [{"dataset": "d", "protocol": "one-class", "method": "m", "variant": "m", "model": "m",
                       "seed": 0, "category": "a", "image_auroc": 0.5}]
    f = tmp_path / "result.json"
    f.write_text(__import__("json").dumps(result))
    out = tmp_path / "results"
    runs.aggregate([f], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def to_csv(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            _disk_full()
        return real(self, *a, **k)
    real = pd.DataFrame.to_csv
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    result["runs"][0]["image_auroc"] = 0.75
    f.write_text(__import__("json").dumps(result))
    with pytest.raises(DatasetError, match="free some space"):
        runs.aggregate([f], out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old set whole, no .tmp left


def test_a_full_disk_is_one_line_from_the_command_line(tmp_path):
    code = ("import errno, sys, kdad.cli as c\n"
            "def main(argv=None): raise OSError(errno.ENOSPC, 'No space left on device', 'work/x.npz')\n"
            "c.main = main\nc.entry()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 4
    assert proc.stderr.strip().count("\n") == 0 and "no space left" in proc.stderr and "work/x.npz" in proc.stderr
    assert "Traceback" not in proc.stderr
