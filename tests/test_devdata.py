"""Studies that choose settings can only read development data (kdad.devdata)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from kdad import devdata
from kdad.data import DATASETS, DatasetSpec, PrepareRequest
from kdad.data.base import ImageSet, PreparedDataset
from kdad.devdata import DevDataError, dev_tasks, held_out

ROOT = Path(__file__).resolve().parents[1]
TEST_VALUE = 255  # every pixel of the fake set's test split: no development image may hold it


def _fake_prepare(req: PrepareRequest) -> PreparedDataset:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 60)
    train = ImageSet(rng.integers(0, 200, (len(labels), 1, 8, 8), dtype=np.uint8), labels)
    test = ImageSet(np.full((30, 1, 8, 8), TEST_VALUE, np.uint8), np.repeat(np.arange(3), 10))
    return PreparedDataset("devfake", "semantic", ["a", "b", "c"], train, test)


@pytest.fixture
def fake_semantic(monkeypatch):
    """A tiny semantic set, registered for this test only."""
    spec = DatasetSpec(name="devfake", kind="semantic", categories=("a", "b", "c"), image_size=8, channels=1,
                       has_masks=False, prepare=_fake_prepare)
    monkeypatch.setitem(DATASETS._entries, "devfake", spec)
    monkeypatch.setattr(devdata, "SEMANTIC_DEV", (*devdata.SEMANTIC_DEV, "devfake"))
    return "devfake"


@pytest.mark.parametrize("name", ["textures", "mvtec_ad", "mvtec_folder", "no_such_set"])
def test_reported_and_unknown_sets_are_refused(name, tmp_path):
    with pytest.raises(DevDataError, match="development"):
        next(dev_tasks(name, tmp_path))


def test_textures_refusal_names_its_development_part(tmp_path):
    with pytest.raises(DevDataError, match="textures_dev"):
        next(dev_tasks("textures", tmp_path))


def test_semantic_tasks_come_from_the_training_split_only(fake_semantic, tmp_path):
    tasks = list(dev_tasks(fake_semantic, tmp_path))
    assert [t.category for t in tasks] == ["a", "b", "c"]
    for t in tasks:
        assert (t.train != TEST_VALUE).all() and (t.val != TEST_VALUE).all()
        assert t.labels.sum() == (t.labels == 0).sum() == 60 // devdata.VAL_FRACTION
        assert len(t.train) == 60 - 60 // devdata.VAL_FRACTION


def test_held_out_is_disjoint_fixed_and_labelled():
    labels = np.repeat(np.arange(10), 60)
    fit, normal, other = held_out(labels, 3)
    assert set(fit).isdisjoint(normal) and set(fit).isdisjoint(other) and set(normal).isdisjoint(other)
    assert (labels[fit] == 3).all() and (labels[normal] == 3).all() and (labels[other] != 3).all()
    assert len(fit) + len(normal) == 60 and len(other) == len(normal) == 10
    again = held_out(labels, 3)
    assert all((a == b).all() for a, b in zip((fit, normal, other), again))


def test_unknown_category_is_an_error(fake_semantic, tmp_path):
    with pytest.raises(DevDataError, match="unknown category"):
        next(dev_tasks(fake_semantic, tmp_path, ["zebra"]))


LOADERS = {"get_dataset", "PrepareRequest", "load_mvtec_folder", "generate_textures", "prepare_textures"}
# compares kdad's PatchCore/STFPM with anomalib's on the same images: it selects no setting
NOT_A_STUDY = {"reference_check.py", "speed.py"}


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                                        if p.name not in NOT_A_STUDY and p.name != "__init__.py"))
def test_studies_read_data_only_through_devdata(path):
    """A study that imports a dataset loader or touches a `.test` split could select on test data."""
    tree = ast.parse((ROOT / "benchmarks" / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdad.data"):
            assert not LOADERS & {a.name for a in node.names}, f"{path} imports a dataset loader"
        if isinstance(node, ast.Attribute):
            assert node.attr not in LOADERS | {"test"}, f"{path} line {node.lineno}: .{node.attr}"


def test_textures_dev_is_the_development_part(tmp_path):
    from kdad.data import textures as tex

    task = next(dev_tasks("textures_dev", tmp_path, ["brick"]))
    folder = tex.textures_dir(tmp_path, 0, tex.TILE, ["brick"], part="dev")
    import json
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["part"] == "dev"
    assert task.masks is not None and len(task.masks) == len(task.val) == len(task.labels) == len(task.level)
    assert 0 < task.labels.sum() < len(task.labels)
