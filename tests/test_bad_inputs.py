"""Bad inputs: each gets one clear message that names the file or key and what to do, raised before
any expensive step where it can be, and loses nothing (nothing written, deleted or left stale).

Data-format cases that need tiny files of a real format live beside their loaders too
(test_mvtec.py, test_classic.py, test_extra_datasets.py); this file walks the user's path: config,
data, archives, weights, training, models and output folders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdad.config import ConfigError
from kdad.data import PrepareRequest
from kdad.data.base import DatasetError, PreparedDataset
from kdad.experiment import load_config
from kdad.methods import ModelFileError
from kdad.registry import RegistryError
from kdad.training import TrainingError

ROOT = Path(__file__).resolve().parent.parent
TINY = yaml.safe_load((ROOT / "tests" / "data" / "tiny.yaml").read_text())


def _cfg(tmp_path: Path, **changes) -> dict:
    """The tiny config with its folders under tmp_path and ``changes`` applied (``a.b.c`` keys nest)."""
    cfg = json.loads(json.dumps(TINY).replace("WORK", str(tmp_path / "w")))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = cfg
        for p in path:
            node = node[p]
        if value is DELETE:
            node.pop(last)
        else:
            node[last] = value
    return cfg


DELETE = object()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} \
        if folder.exists() else {}


# ------------------------------------------------------------------------------------ config
CONFIG_CASES = {
    "unknown top-level key": ({"seed": [0]}, ConfigError, r"unknown key\(s\) \['seed'\]"),
    "dataset key typo": ({"datasets.mnist5k.epoch": 3}, ConfigError, r"config.datasets.mnist5k.*'epoch'"),
    "method option typo": ({"methods.mkd.lamda": 0.1}, ConfigError, r"config.methods.mkd.*'lamda'"),
    "baseline option typo (no expert)": ({"methods.knn": {"method": "knn", "kk": 3},
                                         "datasets.mnist5k.methods": ["mkd", "knn"]}, ConfigError, r"'kk'"),
    "unknown method name": ({"methods.x": {"method": "mdk"}}, RegistryError, r"unknown method 'mdk'.*mkd"),
    "unknown dataset name": ({"datasets.fashion_mnsit": {}}, RegistryError, r"unknown dataset 'fashion_mnsit'"),
    "variant without method": ({"methods.x": {"lam": 0.1}}, ConfigError, r"methods.x: needs a `method:`"),
    "dataset lists an unknown variant": ({"datasets.mnist5k.methods": ["nope"]}, ConfigError, r"'nope'"),
    "empty seeds": ({"seeds": []}, ConfigError, r"seeds must list at least one seed"),
    "duplicate seeds": ({"seeds": [0, 0]}, ConfigError, r"seeds must be distinct"),
    "negative epochs": ({"datasets.mnist5k.overrides": {"mkd": {"epochs": -1}}}, ConfigError, r"epochs ≥ 1"),
    "override of an unknown option": ({"datasets.mnist5k.overrides": {"mkd": {"lamda": 1}}}, ConfigError,
                                      r"overrides.mkd: unknown option\(s\) \['lamda'\]"),
    "override of an unknown method": ({"datasets.mnist5k.overrides": {"mdk": {"lam": 1}}}, RegistryError,
                                      r"unknown method 'mdk'"),
    "negative method epochs": ({"methods.mkd.epochs": -3}, ConfigError, r"epochs ≥ 1"),
    "image size not a multiple of the expert's stride": ({"datasets.mnist5k.image_size": 40}, ConfigError,
                                                         r"mnist5k/mkd: image_size 40 is not a multiple of 32"),
    "image size too small": ({"datasets.mnist5k.image_size": 4}, ConfigError, r"image_size must be ≥ 8"),
    "text where a number belongs": ({"methods.mkd.epochs": "ten"}, ConfigError, r"methods.mkd.epochs: expected int"),
    "unknown device": ({"device": "tpu"}, ConfigError, r"device must be one of"),
    "report folder equals results folder": ({"report_dir": "SAME", "results_dir": "SAME"}, ConfigError,
                                            r"must not contain each other"),
    "ablation of an unknown variant": ({"methods.mkd-hints-1.ablation_of": "mdk"}, ConfigError,
                                       r"ablation_of: 'mdk' is not an entry"),
    "extra protocol not run": ({"datasets.textures.protocols": ["multi-class"]}, ConfigError,
                               r"'one-class' is not one of its protocols"),
    "unknown category": ({"datasets.mnist5k.categories": ["0", "eleven"]}, Exception, r"unknown categories \['eleven'\]"),
    "unknown localisation method": ({"methods.mkd.localization": "gradcam"}, ConfigError, r"localization must be one of"),
    "own MVTec folder without categories": ({"datasets.mvtec_folder": {"source": "x"}}, Exception,
                                            r"list the categories of your data"),
    "variant name with shell syntax": ({"methods.v||touch$IFS\"x\";#": {"method": "mkd"}}, ConfigError,
                                       r"config.methods: 'v\|\|touch\$IFS\"x\";#' is not a usable name"),
    "variant name with a slash": ({"methods.a/b": {"method": "mkd"}}, ConfigError, r"'a/b' is not a usable name"),
    "variant name starting with a dot": ({"methods": {"mkd": {"method": "mkd"}, "..": {"method": "mkd"}}},
                                         ConfigError, r"'\.\.' is not a usable name"),
    "variant names differing only in case": ({"methods.MKD": {"method": "mkd"}}, ConfigError,
                                             r"'mkd' and 'MKD' both map to the name 'mkd'"),
    "protocol with a space": ({"datasets.mnist5k.protocols": ["one-class", "a b"]}, ConfigError,
                              r"protocols: 'a b' is not a usable name"),
    "own categories differing only in case": (
        {"datasets.mvtec_folder": {"source": "x", "categories": ["Wood", "wood"]}}, ConfigError,
        r"categories: 'Wood' and 'wood' both map to the name 'wood'.*model file"),
    "own categories with the same slug": (
        {"datasets.mvtec_folder": {"source": "x", "categories": ["läder", "lüder"]}}, ConfigError,
        r"'läder' and 'lüder' both map to the name 'l_der'"),
    "resources for an unknown rule": ({"datasets.mnist5k.resources": {"training": {"mem_mb": 1}}}, ConfigError,
                                      r"unknown rule"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_errors_name_the_key(case, tmp_path):
    changes, error, message = CONFIG_CASES[case]
    changes = {k: (str(tmp_path / "same") if v == "SAME" else v) for k, v in changes.items()}
    with pytest.raises(error, match=message):
        load_config(_cfg(tmp_path, **changes))
    assert not (tmp_path / "w").exists()  # nothing written


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    """PyYAML reads `1e-5` as a string; kdad takes it as the number it is (it used to reject it)."""
    path = tmp_path / "c.yaml"
    text = (ROOT / "tests" / "data" / "tiny.yaml").read_text().replace("WORK", str(tmp_path / "w"))
    path.write_text(text.replace("batch_size: 16,", "batch_size: 16, lr: 1e-5,", 1))
    from kdad.experiment import resolved_config
    assert resolved_config(load_config(path), "mnist5k", "mkd")[1].lr == 1e-5


def test_the_workflows_json_keeps_floats_floats(tmp_path):
    """The resolved config travels to every job as JSON; floats stay floats (YAML 1.1 read them back
    as strings and every run failed after data and hints were built)."""
    from kdad.experiment import dump, resolved_config
    cfg = load_config(_cfg(tmp_path, **{"methods.mkd.lr": 1.0e-5}))
    path = tmp_path / "config.json"
    path.write_text(dump(cfg))
    assert resolved_config(load_config(path), "mnist5k", "mkd")[1].lr == 1e-5


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the config"),
    ("seeds: [0\n", "not valid YAML"),
    ("- a\n- b\n", "must be a mapping"),
    ("", "config.datasets is empty"),
])
def test_config_files_that_cannot_be_used(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_cli_config_error_is_one_line_with_its_exit_code(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_cfg(tmp_path, **{"methods.mkd.lamda": 0.1})))
    proc = subprocess.run([sys.executable, "-m", "kdad", "plan", "--config", str(path)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 3 and proc.stderr.count("\n") == 1 and "lamda" in proc.stderr
    assert "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------------- data
def test_missing_fashion_mnist_source_says_what_to_place(tmp_path):
    from kdad.data import get_dataset
    (tmp_path / "src").mkdir()
    with pytest.raises(DatasetError, match="does not hold the four idx files"):
        get_dataset("fashion_mnist").prepare(PrepareRequest(tmp_path / "root", 32, tmp_path / "src"))
    assert not (tmp_path / "root").exists()


def test_a_corrupt_prepared_file_says_delete_and_prepare_again(tmp_path):
    bad = tmp_path / "d.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="delete it and prepare again"):
        PreparedDataset.load(bad)
    assert bad.read_bytes().startswith(b"PK")  # left for the user to inspect


def _mvtec_tree(root: Path, cats=("wood", "cable")) -> Path:
    from tests.test_mvtec import make_tree
    return make_tree(root, {c: ("RGB", 40) for c in cats})


def test_an_own_mvtec_format_folder_runs_with_its_own_categories(tmp_path):
    """Any MVTec-format folder (BTAD, MPDD, one's own data) with its own category names, from a folder
    or an archive without a published checksum."""
    from kdad.data import get_dataset
    tree = _mvtec_tree(tmp_path / "mine", ("knob", "panel"))
    spec = get_dataset("mvtec_folder")
    ds = spec.prepare(PrepareRequest(tmp_path / "root", 32, tree, categories=("knob", "panel")))
    assert ds.categories == ["knob", "panel"] and ds.test.masks.shape[1:] == (32, 32)
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(tree, arcname="mine")
    ds2 = spec.prepare(PrepareRequest(tmp_path / "root", 32, archive, categories=("panel",)))
    assert ds2.categories == ["panel"]
    cfg = load_config(_cfg(tmp_path, **{"datasets": {"mvtec_folder": {"source": str(tree), "categories": ["knob", "panel"],
                                                                     "image_size": 32,
                                                                     "protocols": ["one-class", "multi-class"]}}}))
    from kdad.experiment import plan
    assert {k.categories for k in plan(cfg)} == {("knob", "panel"), ("all",)}


def test_an_own_folder_with_a_missing_category_names_what_it_found(tmp_path):
    from kdad.data import get_dataset
    tree = _mvtec_tree(tmp_path / "mine", ("knob",))
    with pytest.raises(DatasetError, match=r"panel: category folder missing \(found: knob\)"):
        get_dataset("mvtec_folder").prepare(PrepareRequest(tmp_path / "root", 32, tree, categories=("knob", "panel")))


def _tar(archive: Path, tree: Path) -> Path:
    with tarfile.open(archive, "w:gz") as t:
        t.add(tree, arcname="mine")
    return archive


def test_an_archive_never_replaces_a_folder_kdad_did_not_create(tmp_path):
    """<data_root>/mvtec_folder/<name> holding the user's own files is refused, not deleted; a folder
    kdad extracted (it has the marker) is replaced when the archive changes."""
    from kdad.data import get_dataset
    spec = get_dataset("mvtec_folder")
    archive = _tar(tmp_path / "mine.tar.gz", _mvtec_tree(tmp_path / "mine", ("knob",)))
    own = tmp_path / "root" / "mvtec_folder" / "mine"
    own.mkdir(parents=True)
    (own / "precious.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"refusing to extract .*mine.tar.gz into .*mine: it exists and kdad did "
                                           r"not create it"):
        spec.prepare(PrepareRequest(tmp_path / "root", 32, archive, categories=("knob",)))
    assert (own / "precious.txt").read_text() == "mine"
    (own / "precious.txt").unlink()
    own.rmdir()
    assert spec.prepare(PrepareRequest(tmp_path / "root", 32, archive, categories=("knob",))).categories == ["knob"]
    os.utime(archive, ns=(1, 1))  # another archive under the same name: the kdad folder is re-extracted
    assert spec.prepare(PrepareRequest(tmp_path / "root", 32, archive, categories=("knob",))).categories == ["knob"]
    assert (own / ".kdad-extracted").is_file()


@pytest.mark.parametrize("name", [".hidden.tar.gz", "..tar.gz", "my data (v2).tar.gz"])
def test_an_archive_name_gives_a_safe_folder_of_its_own(tmp_path, name):
    """`.hidden.tar` used to extract into <data_root>/mvtec_folder itself (and delete it first)."""
    from kdad.data import get_dataset
    archive = _tar(tmp_path / name, _mvtec_tree(tmp_path / "mine", ("knob",)))
    parent = tmp_path / "root" / "mvtec_folder"
    parent.mkdir(parents=True)
    (parent / "precious.txt").write_text("mine")
    ds = get_dataset("mvtec_folder").prepare(PrepareRequest(tmp_path / "root", 32, archive, categories=("knob",)))
    assert ds.categories == ["knob"] and (parent / "precious.txt").read_text() == "mine"
    (folder,) = [p for p in parent.iterdir() if p.is_dir()]
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", folder.name) and (folder / ".kdad-extracted").is_file()


def test_a_corrupt_own_archive_is_one_error_and_leaves_no_folder(tmp_path):
    from kdad.data import get_dataset
    bad = tmp_path / "mine.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    with pytest.raises(DatasetError, match="mine.tar.gz"):
        get_dataset("mvtec_folder").prepare(PrepareRequest(tmp_path / "root", 32, bad, categories=("knob",)))
    assert not list((tmp_path / "root").rglob("*.png")) if (tmp_path / "root").exists() else True


def test_an_archive_escaping_its_folder_is_refused(tmp_path):
    import io
    from kdad.data import get_dataset
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as t:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DatasetError, match="outside|unsafe|escap"):
        get_dataset("mvtec_folder").prepare(PrepareRequest(tmp_path / "root", 32, evil, categories=("x",)))
    assert not (tmp_path / "outside.txt").exists()


def test_an_image_in_an_odd_mode_names_the_file_and_mode(tmp_path):
    from PIL import Image

    from kdad.data.mvtec import read_image
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8)).save(path)
    with pytest.raises(DatasetError, match=r"cmyk.jpg: unsupported image mode 'CMYK'"):
        read_image(path)


def test_a_truncated_image_names_the_file(tmp_path):
    from PIL import Image

    from kdad.data.mvtec import read_image
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="cut.png: unreadable or truncated"):
        read_image(path)


def test_a_download_with_the_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    import urllib.request

    from kdad.data.download import download

    class Response(io_bytes := __import__("io").BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=60: Response(b"tampered bytes"))
    with pytest.raises(DatasetError, match="sha256 .* expected"):
        download("https://example.invalid/x.tar", tmp_path / "x.tar", "0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_offline_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from kdad.data.download import download

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError, match="place it here"):
        download("https://example.invalid/x.tar", tmp_path / "x.tar", "0" * 64, how_to_get="place it here")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- weights
def test_a_configured_weights_file_that_does_not_exist(tmp_path):
    from kdad.experts import WeightsError, build_expert
    with pytest.raises(WeightsError, match=r"missing.pth \(set in the config\) does not exist"):
        build_expert("vgg16", tmp_path / "missing.pth")


def test_weights_of_another_network_are_refused_by_shape(tmp_path):
    from kdad.experts import WeightsError, build_expert
    import timm
    other = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    torch.save(other, tmp_path / "lite1.pth")
    with pytest.raises(WeightsError, match="lite1.pth"):
        build_expert("efficientnet_lite0", tmp_path / "lite1.pth")


# ------------------------------------------------------------------------- training and models
def test_a_diverging_training_is_one_line_and_saves_nothing(tmp_path, lite0_random):
    from kdad.mkd import MKD, MKDConfig
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", epochs=2, batch_size=8, lr=1e30), expert=lite0_random)
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*lr=1e\+30.*smaller learning rate") as err:
        model.fit(images, seed=0, checkpoint=tmp_path / "ck.pt")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ck.pt").exists() or torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] < 2


def test_a_model_file_of_other_options_or_broken_is_refused(tmp_path, lite0_random):
    from kdad.mkd import MKD, MKDConfig
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=8)
    path = MKD(cfg, expert=lite0_random).fit(images, seed=0).save(tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match=r"m.pt was trained with other options \(train_hints\)"):
        MKD(MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=8, train_hints=(3,)),
            expert=lite0_random).load(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="not a readable kdad model"):
        MKD(cfg, expert=lite0_random).load(path)
    with pytest.raises(ModelFileError, match="no such model file; run the train step"):
        MKD(cfg, expert=lite0_random).load(tmp_path / "absent.pt")


class _Planted:
    """Unpickling this object opens (creates) ``marker``: a stand-in for any code a planted .pt runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _plant(path: Path, marker: Path, blob: dict) -> Path:
    torch.save({**blob, "payload": _Planted(marker)}, path)
    return path


def test_the_planted_payload_would_run_without_weights_only(tmp_path):
    """The control for the two tests below: the payload is live (it runs with weights_only=False)."""
    _plant(tmp_path / "p.pt", tmp_path / "ran", {})
    torch.load(tmp_path / "p.pt", weights_only=False)
    assert (tmp_path / "ran").exists()


def test_a_model_file_holding_code_is_refused_and_not_run(tmp_path, lite0_random):
    from kdad.mkd import MKD, MKDConfig
    cfg = MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=8)
    path = _plant(tmp_path / "m.pt", tmp_path / "ran", {"format": 1, "state": {}})
    with pytest.raises(ModelFileError, match=r"m.pt: refusing to read this model file: it holds objects other than "
                                             r"tensors and plain data.*delete it") as err:
        MKD(cfg, expert=lite0_random).load(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ran").exists()


def test_a_checkpoint_holding_code_is_refused_and_not_run(tmp_path, lite0_random):
    from kdad.mkd import MKD, MKDConfig
    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    ckpt = _plant(tmp_path / "ck.pt", tmp_path / "ran", {"epoch": 1})
    model = MKD(MKDConfig(expert="efficientnet_lite0_random", epochs=1, batch_size=8), expert=lite0_random)
    with pytest.raises(TrainingError, match=r"refusing to resume from .*ck.pt.*delete it"):
        model.fit(images, seed=0, checkpoint=ckpt)
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------------ output folders
def _result(tmp_path: Path, name="r.json", **tables) -> Path:
    body = {"runs": [], "defects": [], "curves": [], "history": [], **tables}
    path = tmp_path / name
    path.write_text(json.dumps(body))
    return path


def test_aggregate_on_a_corrupt_result_names_it_and_keeps_the_results(tmp_path):
    from kdad.runs import aggregate
    good = _result(tmp_path, runs=[{"dataset": "d", "protocol": "one-class", "category": "c", "method": "m",
                                    "variant": "m", "seed": 0, "image_auroc": 0.5}])
    results = tmp_path / "results"
    aggregate([good], results)
    before = _snapshot(results)
    bad = tmp_path / "half.json"
    bad.write_text('{"runs": [')
    with pytest.raises(DatasetError, match=r"half.json: not a complete evaluation result.*delete it"):
        aggregate([good, bad], results)
    assert _snapshot(results) == before
    missing_table = _result(tmp_path, "old.json")
    json.loads(missing_table.read_text()).pop("curves")
    missing_table.write_text(json.dumps({"runs": []}))
    with pytest.raises(DatasetError, match="old.json"):
        aggregate([good, missing_table], results)
    assert _snapshot(results) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_aggregate_into_a_read_only_folder_says_so(tmp_path):
    from kdad.runs import aggregate
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o500)
    try:
        with pytest.raises(DatasetError, match="cannot write the results"):
            aggregate([_result(tmp_path)], results)
    finally:
        results.chmod(0o700)


def test_aggregate_into_a_path_that_is_a_file_says_so(tmp_path):
    from kdad.runs import aggregate
    results = tmp_path / "results"
    results.write_text("I am a file")
    with pytest.raises((DatasetError, NotADirectoryError, FileExistsError)):
        aggregate([_result(tmp_path)], results)
    assert results.read_text() == "I am a file"


def test_report_refuses_missing_results_and_keeps_the_report(tmp_path):
    from kdad.report import render
    report = tmp_path / "report"
    report.mkdir()
    (report / "keep.md").write_text("mine")
    with pytest.raises(ConfigError):
        render(tmp_path / "typo", report)
    assert (report / "keep.md").read_text() == "mine"


def test_result_files_are_readable_by_others(tmp_path):
    """Data and score files were written 0600 (a temporary file's mode); results are shared files."""
    from kdad.data.base import write_npz_atomic
    write_npz_atomic(tmp_path / "s.npz", {"a": np.zeros(3)})
    assert (tmp_path / "s.npz").stat().st_mode & 0o777 == 0o644
