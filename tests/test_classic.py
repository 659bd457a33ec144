"""MNIST / Fashion-MNIST idx loaders on tiny files in the real format."""

import gzip
import hashlib
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from kdad.data import PrepareRequest, classic, get_dataset
from kdad.data.base import DatasetError, PreparedDataset


def _idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _tiny(folder, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10}
    for name, a in arrays.items():
        _idx(folder / name, a)
    return arrays


def _accept(monkeypatch, folder):
    """Point the published checksums at the tiny files (the real ones are checked on the real data)."""
    md5 = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in classic.FILES}
    monkeypatch.setattr(classic, "FASHION_MD5", md5)
    monkeypatch.setattr(classic, "FASHION_DEBIAN", folder.parent / "no-debian-here")
    return md5


def _prepare(req):
    return classic._prepare_idx("fashion_mnist", classic.FASHION_CLASSES, req, classic.FASHION_MD5,
                                classic.FASHION_URL, classic.FASHION_DEBIAN, {})


def test_reads_idx_files_and_resizes(tmp_path, monkeypatch):
    arrays = _tiny(tmp_path / "src")
    _accept(monkeypatch, tmp_path / "src")
    ds = _prepare(PrepareRequest(tmp_path, 32, source=tmp_path / "src"))
    assert ds.train.images.shape == (20, 1, 32, 32) and ds.test.images.shape == (10, 1, 32, 32)
    np.testing.assert_array_equal(ds.train.category, arrays["train-labels-idx1-ubyte.gz"])
    ds.save(tmp_path / "fm.npz")
    again = PreparedDataset.load(tmp_path / "fm.npz")
    np.testing.assert_array_equal(again.test.images, ds.test.images)


def test_wrong_checksum_is_one_clear_error(tmp_path, monkeypatch):
    _tiny(tmp_path / "src")
    _accept(monkeypatch, tmp_path / "src")
    monkeypatch.setitem(classic.FASHION_MD5, "t10k-images-idx3-ubyte.gz", "0" * 32)
    with pytest.raises(DatasetError, match="t10k-images.*delete it"):
        _prepare(PrepareRequest(tmp_path, 32, source=tmp_path / "src"))


def test_truncated_idx_is_one_clear_error(tmp_path):
    _tiny(tmp_path / "src")
    path = tmp_path / "src" / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="header says"):
        classic.read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read idx"):
        classic.read_idx(path)


def test_offline_without_a_copy_says_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(classic, "FASHION_DEBIAN", tmp_path / "no-debian-here")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError) as err:
        _prepare(PrepareRequest(tmp_path / "root", 32))
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and str(tmp_path / "root" / "fashion_mnist") in message
    assert not list((tmp_path / "root").rglob("*.gz"))  # nothing half-written


def test_debian_copy_is_recognised_by_content():
    """Debian recompresses the files: their md5 differs, the content sha256 matches (when installed)."""
    if not (classic.FASHION_DEBIAN / classic.FILES[0]).is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    for f in classic.FILES:
        classic._verify_idx(classic.FASHION_DEBIAN / f, classic.FASHION_MD5[f], classic.FASHION_CONTENT_SHA256[f])
    spec = get_dataset("fashion_mnist")
    assert spec.categories[0] == "T-shirt/top" and spec.image_size == 32

