"""The generated textures set: determinism, disjoint regions, defect masks, subtle cases, prepare()."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kdad.data import DATASETS, PrepareRequest, PreparedDataset
from kdad.data import textures
from kdad.data.base import DatasetError
from kdad.data.mvtec import load_mvtec_folder
from kdad.data.textures import (DEFECT_KINDS, TEXTURE_CATEGORIES, extract_tile, generate_textures, load_photo,
                                prepare_textures)

SMALL = dict(tile=128, n_train=5, n_test_good=3, n_test_defect=12)  # 2 defects of each kind


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    base = tmp_path_factory.mktemp("tex")
    a = generate_textures(base / "a", seed=3, **SMALL)
    return base, a, json.loads((a / "manifest.json").read_text())


def _png(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path))
    return a[..., None] if a.ndim == 2 else a


def test_same_seed_same_bytes_other_seed_differs(gen):
    base, a, _ = gen
    b = generate_textures(base / "b", seed=3, **SMALL)
    c = generate_textures(base / "c", seed=4, **SMALL)
    ha, hb, hc = tree_hash(a), tree_hash(b), tree_hash(c)
    assert ha == hb
    assert ha.keys() == hc.keys()
    differing = [k for k in ha if ha[k] != hc[k]]
    assert len(differing) > 0.9 * len(ha)
    assert not list(base.glob("*.partial*"))


def test_tree_layout(gen):
    _, a, manifest = gen
    for cat in TEXTURE_CATEGORIES:
        assert len(list((a / cat / "train/good").glob("*.png"))) == 5
        assert len(list((a / cat / "test/good").glob("*.png"))) == 3
        for kind in DEFECT_KINDS:  # every kind in every category, equal shares
            imgs = sorted((a / cat / "test" / kind).glob("*.png"))
            assert [p.name for p in imgs] == ["000.png", "001.png"]
            assert all((a / cat / "ground_truth" / kind / f"{p.stem}_mask.png").is_file() for p in imgs)
        assert not (a / cat / "ground_truth/good").exists()
    assert manifest["seed"] == 3 and manifest["kinds"] == list(DEFECT_KINDS)


def test_train_and_test_regions_are_disjoint(gen):
    _, a, manifest = gen
    tile = manifest["tile"]
    for cat in TEXTURE_CATEGORIES:
        rec = manifest["photos"][cat]
        boundary = rec["train_rows"][1]
        assert rec["test_rows"][0] == boundary
        photo = load_photo(cat)
        for rel, info in rec["files"].items():
            if info["split"] == "train":
                assert 0 <= info["y"] and info["y"] + tile <= boundary, rel
            else:
                assert boundary <= info["y"] and info["y"] + tile <= rec["height"], rel
            if "kind" not in info:  # normal tiles are exactly the recorded crop
                assert (_png(a / cat / rel) == extract_tile(photo, info["y"], info["x"], tile, info["rot"],
                                                            info["flip"])).all(), rel


def test_defect_masks_and_subtle_cases(gen):
    _, a, manifest = gen
    tile = manifest["tile"]
    changes = []
    for cat in TEXTURE_CATEGORIES:
        photo = load_photo(cat)
        for rel, info in manifest["photos"][cat]["files"].items():
            if "kind" not in info:
                continue
            img = _png(a / cat / rel).astype(int)
            mask = np.asarray(Image.open(a / cat / rel.replace("test/", "ground_truth/").replace(".png", "_mask.png")))
            assert set(np.unique(mask)) <= {0, 255}
            m = mask > 0
            assert 0 < m.sum() < 0.25 * tile * tile, rel
            assert m.sum() == info["mask_pixels"]
            orig = extract_tile(photo, info["y"], info["x"], tile, info["rot"], info["flip"]).astype(int)
            diff = np.abs(img - orig).mean(axis=2)
            # nothing changes away from the mask (soft edges reach at most a few pixels out)
            near = ndimage.binary_dilation(m, iterations=4)
            assert (diff[~near] == 0).all(), rel
            assert diff[m].mean() > 0, rel
            changes.append((info["kind"], diff[m].mean()))
    subtle = [k for k, c in changes if c < 15]
    assert len(subtle) >= 3, changes
    assert max(c for _, c in changes) > 30  # and some obvious ones


def test_loads_as_defect_set(gen):
    _, a, _ = gen
    ds = load_mvtec_folder(a, TEXTURE_CATEGORIES, 64, name="textures", mask_size=128)
    assert ds.train.images.shape == (20, 3, 64, 64)  # gray categories repeated next to RGB tissue
    assert ds.test.masks.shape == (60, 128, 128)
    assert not ds.test.masks[~ds.test.anomalous].any()
    assert all(m.any() for m in ds.test.masks[ds.test.anomalous])
    assert set(ds.test.defect[ds.test.anomalous]) == set(DEFECT_KINDS)


def test_existing_tree_is_reused_or_replaced(tmp_path):
    out = tmp_path / "t"
    small = dict(tile=128, n_train=2, n_test_good=1, n_test_defect=6, categories=("brick", "tissue"))
    generate_textures(out, seed=0, **small)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    before = tree_hash(out)
    generate_textures(out, seed=0, **small)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # not regenerated
    generate_textures(out, seed=1, **small)  # other settings: replaced
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and tree_hash(out) != before

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a generated textures tree"):
        generate_textures(other, seed=0, **small)
    assert (other / "notes.txt").read_text() == "keep me"


def test_category_subset_draws_the_same_tiles(tmp_path):
    small = dict(tile=128, n_train=2, n_test_good=1, n_test_defect=0)
    a = generate_textures(tmp_path / "a", seed=5, categories=("brick", "grass"), **small)
    b = generate_textures(tmp_path / "b", seed=5, categories=("grass",), **small)
    assert (a / "grass/train/good/000.png").read_bytes() == (b / "grass/train/good/000.png").read_bytes()


def test_prepare(tmp_path, monkeypatch):
    spec = DATASETS.get("textures")
    assert spec.kind == "defect" and spec.categories == TEXTURE_CATEGORIES and spec.channels == 3
    assert spec.image_size == 128 and spec.has_masks
    monkeypatch.setattr(textures, "N_TRAIN", 4)
    monkeypatch.setattr(textures, "N_TEST_GOOD", 2)
    monkeypatch.setattr(textures, "N_TEST_DEFECT", 6)
    ds = prepare_textures(PrepareRequest(root=tmp_path, image_size=64, seed=7))
    assert isinstance(ds, PreparedDataset) and ds.kind == "defect" and ds.name == "textures"
    assert ds.categories == list(TEXTURE_CATEGORIES)
    assert ds.train.images.shape == (16, 3, 64, 64) and not ds.train.anomalous.any()
    assert ds.test.images.shape == (32, 3, 64, 64) and ds.test.masks.shape == (32, 128, 128)
    assert ds.test.anomalous.sum() == 24 and set(np.unique(ds.test.masks)) <= {0, 1}
    assert (tmp_path / "textures-seed7-tile128" / "manifest.json").is_file()
    path = tmp_path / "textures.npz"
    ds.save(path)
    assert PreparedDataset.load(path).test.masks.sum() == ds.test.masks.sum()
