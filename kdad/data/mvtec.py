"""MVTec AD, and a loader for any folder laid out like it.

Layout (one folder per category)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect_type>/*.png            # defect_type "good" = normal
    <root>/<category>/ground_truth/<defect_type>/<stem>_mask.png   # every non-good test image

:func:`load_mvtec_folder` reads such a tree into a ``defect``
:class:`~kdad.data.base.PreparedDataset`; the ``mvtec_ad`` dataset uses it on the official
archive (15 categories, 3,629 train / 467 good test / 1,258 defective test images, 700–1024 px,
three grayscale categories: grid, screw, zipper).

Image modes are handled explicitly:

- ``L`` and ``RGB`` are kept. When a set mixes gray and colour images (or ``channels=3`` is
  asked for) the gray ones are repeated to three channels so that the arrays stack.
- ``1`` (bilevel) becomes ``L``.
- ``RGBA`` / ``LA``: alpha is dropped when fully opaque; otherwise the image is composited on
  black (``value * alpha / 255``), i.e. what a transparent pixel shows on a dark background.
- ``P`` (palette): converted to RGB; if every pixel is gray (R = G = B) it is kept as ``L``.
  A palette with transparency goes through the RGBA rule.
- ``I;16*`` and ``I`` (16-bit): scaled to 8 bit (``round(v * 255 / 65535)``).
- anything else (CMYK, YCbCr, float, ...) is a :class:`DatasetError` naming the file and mode.

Masks are read, binarised (> 127), and if needed resized to ``mask_size`` with PIL bilinear
(area-weighted when shrinking) and thresholded at 0.5. A thin defect whose every pixel falls
under 0.5 coverage would vanish; such masks keep every pixel with any coverage instead (counted in
``meta["masks_thin_kept"]``), so no defective image ends up with an empty mask.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from kdad.data import DatasetSpec, PrepareRequest, register
from kdad.data.base import DatasetError, ImageSet, PreparedDataset, resize_images, to_chw_uint8
from kdad.data.download import download, extraction_name, safe_extract, verify

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
                    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper")

# Official archive (MVTec's own share link, the one published on
# https://www.mvtec.com/company/research/datasets/mvtec-ad and used by common AD libraries).
# The sha256 is of the 5,264,982,680-byte archive; it could not be recomputed here (offline) but
# agrees with the digest several independent projects report for their downloaded copy.
MVTEC_URL = ("https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
             "420938113-1629952094/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
MVTEC_DIR = "mvtec_ad"
VERIFIED_MARKER = ".verified"
MVTEC_HOME = "https://www.mvtec.com/company/research/datasets/mvtec-ad"


# ---------------------------------------------------------------------------- decoding
def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    """[H, W, 2|4] uint8 with alpha last → gray/RGB; composite on black unless fully opaque."""
    color, alpha = arr[..., :-1], arr[..., -1:]
    if alpha.min() < 255:
        color = ((color.astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)
    return color[..., 0] if color.shape[-1] == 1 else np.ascontiguousarray(color)


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    """A loaded PIL image → uint8 [H, W] or [H, W, 3] following the module's mode rules."""
    mode = im.mode
    if mode in ("L", "RGB"):
        return np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only)
    if mode == "1":
        return np.asarray(im.convert("L"), dtype=np.uint8)
    if mode in ("RGBA", "LA"):
        return _drop_alpha(np.asarray(im, dtype=np.uint8))
    if mode == "P":
        if "transparency" in im.info:
            return _drop_alpha(np.asarray(im.convert("RGBA"), dtype=np.uint8))
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        return rgb
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DatasetError(f"{path}: mode {mode} values outside 0..65535; convert it to 8 or 16 bit")
        return ((arr * 255 + 32767) // 65535).astype(np.uint8)
    raise DatasetError(f"{path}: unsupported image mode {mode!r}; convert it to L, RGB, RGBA, P or 16-bit gray")


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` to uint8 [H, W] or [H, W, 3]; any failure is a DatasetError naming the file."""
    try:
        with Image.open(path) as im:
            im.load()
            return _decode(im, path)
    except DatasetError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DatasetError(f"{path}: unreadable or truncated image ({err}); replace the file") from err


def _resize_mask(mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """bool [H, W] → (uint8 {0,1} [size, size], uint8 coverage 0..255 [size, size], thin-defect
    fallback used). The coverage is the bilinearly resized mask (PIL, area-weighted when shrinking):
    the soft ground truth of the MKD paper's own pixel metric."""
    if mask.shape == (size, size):
        return mask.astype(np.uint8), mask.astype(np.uint8) * 255, False
    cover = np.asarray(Image.fromarray(mask.astype(np.float32), mode="F")
                       .resize((size, size), Image.Resampling.BILINEAR))
    soft = np.clip(np.round(cover * 255), 0, 255).astype(np.uint8)
    out = cover >= 0.5
    if mask.any() and not out.any():
        return (cover > 1e-3).astype(np.uint8), soft, True
    return out.astype(np.uint8), soft, False


# ---------------------------------------------------------------------------- folder loader
def _category_files(root: Path, category: str) -> tuple[list[Path], list[tuple[Path, str, Path | None]]]:
    """Train files and (test file, defect type, mask file or None) for one category, checked."""
    cdir = root / category
    if not cdir.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise DatasetError(f"{cdir}: category folder missing (found: {', '.join(known) or 'nothing'}); "
                           "check the dataset root and the category names")
    good = cdir / "train" / "good"
    train = _list_images(good) if good.is_dir() else []
    if not train:
        raise DatasetError(f"{good}: no training images (empty or missing category); re-extract the dataset")
    tdir = cdir / "test"
    if not tdir.is_dir():
        raise DatasetError(f"{tdir}: test folder missing")
    test: list[tuple[Path, str, Path | None]] = []
    gt = cdir / "ground_truth"
    for ddir in sorted(p for p in tdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        defect = ddir.name
        for f in _list_images(ddir):
            if defect == "good":
                test.append((f, defect, None))
                continue
            if not gt.is_dir():
                raise DatasetError(f"{gt}: ground_truth folder missing, needed for the mask of {f}")
            mask = gt / defect / f"{f.stem}_mask.png"
            if not mask.is_file():
                raise DatasetError(f"{mask}: mask missing for defective test image {f}")
            test.append((f, defect, mask))
    if not test:
        raise DatasetError(f"{tdir}: no test images")
    return train, test


def load_mvtec_folder(root: Path, categories: Sequence[str], image_size: int, *, name: str,
                      mask_size: int | None = None, channels: int | None = None,
                      workers: int | None = None) -> PreparedDataset:
    """Read an MVTec-format tree into a ``defect`` dataset.

    ``category`` indexes ``categories``; images are resized to ``image_size`` square, test masks
    to ``mask_size`` (default ``image_size``), uint8 {0, 1}, all zero for good images; the train
    split has no masks. ``channels=3`` forces gray images to three channels; by default they stay
    one channel unless the set also holds colour images.
    """
    root = Path(root)
    mask_size = image_size if mask_size is None else mask_size
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1, 3 or None, got {channels}")
    if not categories:
        raise DatasetError(f"{name}: no categories given")

    train_rows: list[tuple[Path, int]] = []
    test_rows: list[tuple[Path, int, str, Path | None]] = []
    for ci, category in enumerate(categories):
        train, test = _category_files(root, category)
        train_rows += [(f, ci) for f in train]
        test_rows += [(f, ci, d, m) for f, d, m in test]

    def image(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        arr = read_image(path)
        chw = to_chw_uint8(arr, where=str(path))
        return resize_images(chw[None], image_size)[0], arr.shape[:2]

    def test_item(row: tuple[Path, int, str, Path | None]) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray]:
        path, _, _, mpath = row
        img, shape = image(path)
        if mpath is None:
            empty = np.zeros((mask_size, mask_size), np.uint8)
            return img, empty, False, empty
        m = read_image(mpath)
        if m.shape[:2] != shape:
            raise DatasetError(f"{mpath}: mask is {m.shape[1]}x{m.shape[0]} but its image {path} is "
                               f"{shape[1]}x{shape[0]}")
        if m.ndim == 3:
            m = m.max(axis=2)
        mask, soft, thin = _resize_mask(m > 127, mask_size)
        return img, mask, thin, soft

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        train_imgs = [img for img, _ in pool.map(lambda r: image(r[0]), train_rows)]
        test_items = list(pool.map(test_item, test_rows))

    test_imgs = [t[0] for t in test_items]
    found = {a.shape[0] for a in train_imgs + test_imgs}
    if channels == 1 and 3 in found:
        raise DatasetError(f"{name}: channels=1 asked for but {root} holds colour images")
    out_c = channels or max(found)

    def stack(imgs: list[np.ndarray]) -> np.ndarray:
        return np.stack([np.repeat(a, out_c, axis=0) if a.shape[0] != out_c else a for a in imgs])

    n_train = len(train_rows)
    train_set = ImageSet(stack(train_imgs), np.array([c for _, c in train_rows], np.int64),
                         np.zeros(n_train, bool), np.array(["good"] * n_train, dtype=str), None)
    test_set = ImageSet(stack(test_imgs), np.array([r[1] for r in test_rows], np.int64),
                        np.array([r[3] is not None for r in test_rows]),
                        np.array([r[2] for r in test_rows], dtype=str),
                        np.stack([t[1] for t in test_items]), soft_masks=np.stack([t[3] for t in test_items]))
    meta = {"source": str(root), "image_size": image_size, "mask_size": mask_size, "channels": out_c,
            "masks_thin_kept": sum(t[2] for t in test_items)}
    return PreparedDataset(name, "defect", list(categories), train_set, test_set, meta)


# ---------------------------------------------------------------------------- MVTec AD
def _how_to_get(archive: Path) -> str:
    return (f"Download MVTec AD from {MVTEC_HOME} (licence CC BY-NC-SA 4.0: non-commercial use) and "
            f"place {MVTEC_ARCHIVE} at {archive}, or set `source:` in the config to the archive or to "
            "an extracted copy.")


def _locate_root(folder: Path, categories: Sequence[str]) -> Path:
    """The folder holding the category folders: ``folder`` or its only sub-folder."""
    if (folder / categories[0]).is_dir():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.is_dir() else []
    if len(subs) == 1 and (subs[0] / categories[0]).is_dir():
        return subs[0]
    return folder


def _extract_verified(archive: Path, dest: Path) -> Path:
    """Verify ``archive`` against MVTEC_SHA256, extract it to ``dest`` and mark it verified."""
    verify(archive, MVTEC_SHA256)
    marker = dest / VERIFIED_MARKER
    if marker.is_file() and marker.read_text().strip() == MVTEC_SHA256:
        return dest
    try:
        safe_extract(archive, dest)
    except DatasetError:
        raise
    except Exception as err:  # e.g. lzma.LZMAError / zlib.error on a corrupt stream
        raise DatasetError(f"{archive}: truncated or corrupt archive ({type(err).__name__}: {err}); "
                           "delete it and download it again") from err
    marker.write_text(MVTEC_SHA256 + "\n")
    return dest


def _extracted(dest: Path) -> bool:
    marker = dest / VERIFIED_MARKER
    return marker.is_file() and marker.read_text().strip() == MVTEC_SHA256


def prepare_mvtec_ad(req: PrepareRequest) -> PreparedDataset:
    categories = list(req.categories or MVTEC_CATEGORIES)
    dest = Path(req.root) / MVTEC_DIR
    archive = Path(req.root) / MVTEC_ARCHIVE
    if req.source is not None:
        src = Path(req.source).expanduser()
        if src.is_dir():
            folder = src
        elif src.is_file():
            folder = _extract_verified(src, dest)
        else:
            raise DatasetError(f"source {src} does not exist. {_how_to_get(archive)}")
    elif _extracted(dest):
        folder = dest
    else:
        if not archive.is_file():
            download(MVTEC_URL, archive, MVTEC_SHA256, how_to_get=_how_to_get(archive))
        folder = _extract_verified(archive, dest)
    return load_mvtec_folder(_locate_root(folder, categories), categories, req.image_size, name="mvtec_ad",
                             channels=3)


def prepare_mvtec_folder(req: PrepareRequest) -> PreparedDataset:
    """Any dataset in MVTec AD's folder layout with its own category names (BTAD, MPDD, one's own
    data): ``source`` is the folder (or a .tar/.zip archive of it, extracted safely; no checksum —
    it is the user's own file) and the config lists the categories."""
    if req.source is None:
        raise DatasetError("mvtec_folder needs `source:` (a folder in MVTec AD's layout, or an archive of one) "
                           "in its dataset entry of the config")
    if not req.categories:
        raise DatasetError("mvtec_folder needs `categories:` (the names of its category folders) in the config")
    src = Path(req.source).expanduser()
    if src.is_dir():
        folder = src
    elif src.is_file():
        folder = Path(req.root) / "mvtec_folder" / extraction_name(src)
        marker = folder / VERIFIED_MARKER
        stamp = f"{src.resolve()} {src.stat().st_size} {src.stat().st_mtime_ns}"
        if not (marker.is_file() and marker.read_text().strip() == stamp):
            try:
                safe_extract(src, folder)
            except DatasetError:
                raise
            except Exception as err:
                raise DatasetError(f"{src}: truncated or corrupt archive ({type(err).__name__}: {err})") from err
            marker.write_text(stamp + "\n")
    else:
        raise DatasetError(f"source {src} does not exist")
    return load_mvtec_folder(_locate_root(folder, req.categories), req.categories, req.image_size,
                             name="mvtec_folder")


register(DatasetSpec(
    name="mvtec_folder", kind="defect", categories=(), image_size=128, channels=3, has_masks=True,
    prepare=prepare_mvtec_folder, open_categories=True,
    description="any folder in MVTec AD's layout with its own categories (e.g. BTAD, MPDD, your data): "
                "`source:` and `categories:` in the config",
))

register(DatasetSpec(
    name="mvtec_ad", kind="defect", categories=MVTEC_CATEGORIES, image_size=128, channels=3, has_masks=True,
    prepare=prepare_mvtec_ad,
    description="MVTec AD (Bergmann et al., CVPR 2019): 15 object/texture categories, pixel masks; "
                "CC BY-NC-SA 4.0, download manually from " + MVTEC_HOME,
))

__all__ = ["MVTEC_CATEGORIES", "MVTEC_SHA256", "MVTEC_URL", "load_mvtec_folder", "prepare_mvtec_ad",
           "prepare_mvtec_folder", "read_image"]
