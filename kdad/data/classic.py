"""MNIST and Fashion-MNIST from the idx files torchvision (and LeCun's / Zalando's sites) use.

Fashion-MNIST is found, in this order: ``source`` from the config, Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), a copy under the data
root, and finally a download into the data root. Every file is checked against its md5.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from kdad.data import DatasetSpec, PrepareRequest, register
from kdad.data.base import DatasetError, ImageSet, PreparedDataset, resize_images
from kdad.data.download import download, verify

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

# md5 sums as published by torchvision's dataset classes (the files are the original releases)
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# sha256 of the *decompressed* files, computed from Debian's dataset-fashion-mnist 2020 package, which
# recompresses the upstream files (so its .gz md5 sums differ from the ones above while the idx
# content is the same size, 54,950,048 bytes in all). A local copy passes if either check passes.
FASHION_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")

MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_CLASSES = tuple(str(d) for d in range(10))


def read_idx(path: str | Path) -> np.ndarray:
    """Decode one (gzipped) idx file: magic (0, 0, dtype=0x08 for uint8, ndim), big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: cannot read idx file ({err}); delete it and fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not a uint8 idx file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DatasetError(f"{path}: idx header says {dims} ({expected} bytes) but holds {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _verify_idx(path: Path, md5: str, content_sha256: str | None) -> None:
    """Pass if the .gz has the upstream md5, or its decompressed bytes have the recorded sha256."""
    try:
        verify(path, md5, "md5")
        return
    except DatasetError:
        if content_sha256 is None:
            raise
    try:
        with gzip.open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except (OSError, EOFError) as err:
        raise DatasetError(f"{path}: truncated or corrupt gzip file ({err}); delete it and fetch it again") from err
    if digest != content_sha256:
        raise DatasetError(f"{path}: neither the md5 of the file nor the sha256 of its content matches the "
                           "published dataset; delete it and fetch it again")


def _locate(name: str, req: PrepareRequest, md5: dict[str, str], url: str, debian: Path | None,
            content: dict[str, str]) -> Path:
    """Folder holding the four verified idx files, downloading them into the data root if needed."""
    local = req.root / name
    # a configured source is the only place looked at: falling back to another copy would hide a typo
    candidates = [req.source] if req.source is not None else [c for c in (debian, local) if c is not None]
    for folder in candidates:
        if folder is not None and all((Path(folder) / f).is_file() for f in FILES):
            for f in FILES:
                _verify_idx(Path(folder) / f, md5[f], content.get(f))
            return Path(folder)
    if req.source is not None:
        raise DatasetError(f"{req.source} does not hold the four idx files {', '.join(FILES)}")
    how = (f"Offline, place the four files {', '.join(FILES)} in {local}"
           + (f", or install Debian's package (apt-get install dataset-fashion-mnist) which puts them in {debian}"
              if debian is not None else "")
           + ", or set `source:` for this dataset in the config.")
    for f in FILES:
        download(url + f, local / f, md5[f], "md5", how_to_get=how)
    return local


def _prepare_idx(name: str, classes: tuple[str, ...], req: PrepareRequest, md5, url, debian,
                 content) -> PreparedDataset:
    folder = _locate(name, req, md5, url, debian, content)
    arrays = [read_idx(folder / f) for f in FILES]
    splits = []
    for images, labels in (arrays[:2], arrays[2:]):
        if len(images) != len(labels):
            raise DatasetError(f"{folder}: {len(images)} images but {len(labels)} labels")
        x = resize_images(np.ascontiguousarray(images[:, None]), req.image_size)
        splits.append(ImageSet(x, labels.astype(np.int64)))
    return PreparedDataset(name, "semantic", list(classes), splits[0], splits[1], {"source": str(folder)})


register(DatasetSpec(
    "fashion_mnist", "semantic", FASHION_CLASSES, image_size=32, channels=1, has_masks=False,
    prepare=lambda req: _prepare_idx("fashion_mnist", FASHION_CLASSES, req, FASHION_MD5, FASHION_URL,
                                     FASHION_DEBIAN, FASHION_CONTENT_SHA256),
    description="Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test 28x28 grey images, 10 classes"))

register(DatasetSpec(
    "mnist", "semantic", MNIST_CLASSES, image_size=32, channels=1, has_masks=False,
    prepare=lambda req: _prepare_idx("mnist", MNIST_CLASSES, req, MNIST_MD5, MNIST_URL, None, {}),
    description="MNIST (LeCun et al.): 60,000 train / 10,000 test 28x28 grey digits"))
