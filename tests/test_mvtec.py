"""The MVTec-format folder loader and the mvtec_ad archive / download handling, on tiny trees."""

from __future__ import annotations

import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdad.data import DATASETS, PrepareRequest
from kdad.data import mvtec
from kdad.data.base import DatasetError
from kdad.data.download import file_digest
from kdad.data.mvtec import MVTEC_CATEGORIES, load_mvtec_folder, prepare_mvtec_ad, read_image


def _image(rng, mode: str, size: int) -> Image.Image:
    shape = (size, size) if mode == "L" else (size, size, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _mask(size: int, box=(0.25, 0.25, 0.5, 0.6)) -> Image.Image:
    m = np.zeros((size, size), np.uint8)
    y0, x0, y1, x1 = (int(v * size) for v in box)
    m[y0:y1, x0:x1] = 255
    return Image.fromarray(m, "L")


def make_tree(root: Path, cats: dict[str, tuple[str, int]], *, n_train=3, n_good=2, n_defect=2, seed=0) -> Path:
    """An MVTec-format tree: {category: (mode, size)}, defect type "broken" with masks."""
    rng = np.random.default_rng(seed)
    for cat, (mode, size) in cats.items():
        for sub, n in (("train/good", n_train), ("test/good", n_good), ("test/broken", n_defect)):
            d = root / cat / sub
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(rng, mode, size).save(d / f"{i:03d}.png")
        gt = root / cat / "ground_truth" / "broken"
        gt.mkdir(parents=True, exist_ok=True)
        for i in range(n_defect):
            _mask(size).save(gt / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "mv", {"gray": ("L", 40), "color": ("RGB", 48)})


def test_load_shapes_labels_masks(tree):
    ds = load_mvtec_folder(tree, ["gray", "color"], 32, name="t")
    assert ds.kind == "defect" and ds.categories == ["gray", "color"]
    tr, te = ds.train, ds.test
    assert tr.images.shape == (6, 3, 32, 32) and tr.images.dtype == np.uint8
    assert tr.category.tolist() == [0, 0, 0, 1, 1, 1]
    assert not tr.anomalous.any() and set(tr.defect) == {"good"} and tr.masks is None
    # gray category is repeated to 3 identical channels because the set also holds RGB
    assert (tr.images[:3, 0] == tr.images[:3, 1]).all() and (tr.images[:3, 1] == tr.images[:3, 2]).all()
    assert te.images.shape == (8, 3, 32, 32) and te.masks.shape == (8, 32, 32) and te.masks.dtype == np.uint8
    assert te.category.tolist() == [0] * 4 + [1] * 4
    assert te.anomalous.tolist() == [True, True, False, False] * 2  # "broken" sorts before "good"
    assert te.defect.tolist() == ["broken", "broken", "good", "good"] * 2
    assert set(np.unique(te.masks)) <= {0, 1}
    assert not te.masks[~te.anomalous].any()
    assert all(m.any() for m in te.masks[te.anomalous])
    # the box covers rows 25%..50%, cols 25%..60% → about 0.25 * 0.35 of the pixels
    assert abs(te.masks[te.anomalous].mean() - 0.25 * 0.35) < 0.03

    rev = load_mvtec_folder(tree, ["color", "gray"], 32, name="t")
    assert rev.train.category.tolist() == [0, 0, 0, 1, 1, 1]
    assert (rev.train.images[:3] == tr.images[3:]).all()

    # round trip through the prepared file
    path = tree.parent / "t.npz"
    ds.save(path)
    back = type(ds).load(path)
    assert (back.test.masks == te.masks).all() and back.test.defect.tolist() == te.defect.tolist()


def test_gray_only_keeps_one_channel_and_mask_size(tree):
    ds = load_mvtec_folder(tree, ["gray"], 20, name="t", mask_size=10)
    assert ds.train.images.shape == (3, 1, 20, 20) and ds.test.masks.shape == (4, 10, 10)
    forced = load_mvtec_folder(tree, ["gray"], 20, name="t", channels=3)
    assert forced.train.images.shape == (3, 3, 20, 20)


def test_thin_defect_survives_downscaling(tmp_path):
    root = make_tree(tmp_path / "mv", {"c": ("L", 64)}, n_defect=1)
    m = np.zeros((64, 64), np.uint8)
    m[10:50, 30] = 255  # a 1-px line: under 0.5 coverage everywhere at 8x8
    Image.fromarray(m).save(root / "c/ground_truth/broken/000_mask.png")
    ds = load_mvtec_folder(root, ["c"], 16, name="t", mask_size=8)
    assert ds.test.masks[ds.test.anomalous].any()
    assert ds.meta["masks_thin_kept"] == 1


# ---------------------------------------------------------------------------- odd modes
def test_odd_modes(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (12, 12), dtype=np.uint8)

    opaque = np.concatenate([rgb, np.full((12, 12, 1), 255, np.uint8)], axis=2)
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    assert (read_image(tmp_path / "opaque.png") == rgb).all()

    half = opaque.copy()
    half[..., 3] = 128
    Image.fromarray(half, "RGBA").save(tmp_path / "half.png")
    expect = (rgb.astype(np.uint32) * 128 + 127) // 255
    assert (read_image(tmp_path / "half.png") == expect).all()  # composited on black

    Image.fromarray(gray, "L").convert("P").save(tmp_path / "pgray.png")
    got = read_image(tmp_path / "pgray.png")
    assert got.ndim == 2 and (got == gray).all()

    Image.fromarray(rgb, "RGB").quantize(16).save(tmp_path / "pcolor.png")
    got = read_image(tmp_path / "pcolor.png")
    assert got.shape == (12, 12, 3)

    Image.fromarray((gray.astype(np.uint16) * 257)).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    assert (read_image(tmp_path / "i16.png") == gray).all()

    Image.fromarray(rgb, "RGB").convert("CMYK").save(tmp_path / "cmyk.jpg")
    with pytest.raises(DatasetError, match=r"cmyk\.jpg.*CMYK"):
        read_image(tmp_path / "cmyk.jpg")


def test_odd_modes_in_a_tree(tmp_path):
    root = make_tree(tmp_path / "mv", {"c": ("RGB", 24)})
    rng = np.random.default_rng(2)
    train = root / "c/train/good"
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "RGBA").save(train / "100.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).quantize(8).save(train / "101.png")
    Image.fromarray(rng.integers(0, 65536, (24, 24), dtype=np.uint16)).save(train / "102.png")
    ds = load_mvtec_folder(root, ["c"], 16, name="t")
    assert ds.train.images.shape == (6, 3, 16, 16)


# ---------------------------------------------------------------------------- bad inputs
def _break(kind: str, root: Path) -> str:
    """Damage the tree; return a piece of the path the error must name."""
    c = root / "color"
    if kind == "missing ground_truth":
        for p in sorted((c / "ground_truth").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (c / "ground_truth").rmdir()
        return str(c / "ground_truth")
    if kind == "missing mask":
        (c / "ground_truth/broken/001_mask.png").unlink()
        return "001_mask.png"
    if kind == "mask size":
        _mask(30).save(c / "ground_truth/broken/000_mask.png")
        return "000_mask.png"
    if kind == "empty category":
        for p in (c / "train/good").iterdir():
            p.unlink()
        return str(c / "train/good")
    if kind == "truncated png":
        p = c / "test/good/001.png"
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        return str(p)
    if kind == "unknown category":
        return str(root / "nope")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing ground_truth", "missing mask", "mask size", "empty category",
                                  "truncated png", "unknown category"])
def test_bad_inputs_raise_dataset_error(tree, kind):
    needle = _break(kind, tree)
    cats = ["gray", "nope"] if kind == "unknown category" else ["gray", "color"]
    with pytest.raises(DatasetError) as info:
        load_mvtec_folder(tree, cats, 16, name="t")
    assert needle in str(info.value)


# ---------------------------------------------------------------------------- mvtec_ad archive handling
@pytest.fixture
def full_tree(tmp_path):
    """A minimal tree with all 15 categories (gray for grid, screw, zipper, as in the real set)."""
    cats = {c: ("L" if c in ("grid", "screw", "zipper") else "RGB", 16) for c in MVTEC_CATEGORIES}
    return make_tree(tmp_path / "src" / "mvtec_anomaly_detection", cats, n_train=1, n_good=1, n_defect=1)


def _tar(folder: Path, out: Path, *, arcname: str = ".") -> Path:
    with tarfile.open(out, "w:xz") as t:
        t.add(folder, arcname=arcname)
    return out


def test_registered():
    spec = DATASETS.get("mvtec_ad")
    assert spec.kind == "defect" and spec.categories == MVTEC_CATEGORIES and spec.has_masks
    assert spec.image_size == 128 and spec.channels == 3


def test_prepare_from_folder_and_archive(tmp_path, full_tree, monkeypatch):
    ds = prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=full_tree.parent))
    assert ds.train.images.shape == (15, 3, 16, 16) and ds.test.masks.shape == (30, 16, 16)
    assert ds.test.anomalous.sum() == 15

    archive = _tar(full_tree.parent, tmp_path / "mvtec.tar.xz")
    monkeypatch.setattr(mvtec, "MVTEC_SHA256", file_digest(archive))
    root = tmp_path / "data"
    ds2 = prepare_mvtec_ad(PrepareRequest(root=root, image_size=16, source=archive))
    assert (ds2.test.images == ds.test.images).all()
    assert (root / "mvtec_ad" / ".verified").is_file()

    # the archive in its default place, no extracted copy yet
    root2 = tmp_path / "data2"
    root2.mkdir()
    os.link(archive, root2 / mvtec.MVTEC_ARCHIVE)
    ds3 = prepare_mvtec_ad(PrepareRequest(root=root2, image_size=16))
    assert (ds3.train.images == ds.train.images).all()
    # now the verified extraction is used and the archive is not needed
    (root2 / mvtec.MVTEC_ARCHIVE).unlink()
    prepare_mvtec_ad(PrepareRequest(root=root2, image_size=16))


def test_wrong_checksum(tmp_path, full_tree):
    archive = _tar(full_tree.parent, tmp_path / "mvtec.tar.xz")
    with pytest.raises(DatasetError, match="sha256"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=archive))
    assert not (tmp_path / "data" / "mvtec_ad").exists()


def test_corrupt_archives(tmp_path, monkeypatch):
    junk = tmp_path / "junk.tar.xz"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DatasetError, match="sha256"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=junk))
    monkeypatch.setattr(mvtec, "MVTEC_SHA256", file_digest(junk))
    with pytest.raises(DatasetError, match="junk.tar.xz"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=junk))

    # a real xz stream damaged in the middle (lzma raises its own error type underneath)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as t:
        payload = np.random.default_rng(1).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
        info = tarfile.TarInfo("bottle/blob.bin")
        info.size = len(payload)
        t.addfile(info, io.BytesIO(payload))
    data = bytearray(buf.getvalue())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(mvtec, "MVTEC_SHA256", file_digest(bad))
    with pytest.raises(DatasetError, match="bad.tar.xz"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=bad))
    assert not (tmp_path / "data" / "mvtec_ad").exists()


def test_unsafe_archive_refused(tmp_path, monkeypatch):
    evil = tmp_path / "evil.tar.xz"
    with tarfile.open(evil, "w:xz") as t:
        info = tarfile.TarInfo("../evil")
        info.size = 4
        t.addfile(info, io.BytesIO(b"evil"))
    monkeypatch.setattr(mvtec, "MVTEC_SHA256", file_digest(evil))
    with pytest.raises(DatasetError, match="unsafe"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path / "data", image_size=16, source=evil))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()


def test_download_failure_says_where_to_put_the_archive(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as info:
        prepare_mvtec_ad(PrepareRequest(root=root, image_size=16))
    msg = str(info.value)
    assert str(root / mvtec.MVTEC_ARCHIVE) in msg and "mvtec.com" in msg and "source" in msg
    assert not list(root.glob("*.part"))


def test_missing_source(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_mvtec_ad(PrepareRequest(root=tmp_path, image_size=16, source=tmp_path / "nowhere"))
