"""The in-memory form every dataset is prepared into, and its on-disk file.

A *prepared* dataset is one ``.npz`` file holding decoded uint8 images at the model's input size,
so that training reads arrays, never image files. Two kinds exist:

- ``semantic`` (MNIST, Fashion-MNIST, CIFAR-10, OCT, ...): every image has a class index in
  ``category``; which classes are anomalous is decided later by the protocol.
- ``defect`` (MVTec AD, textures, HeadCT, BrainMRI): ``category`` is the object/texture category,
  ``anomalous`` says whether the image is defective, ``defect`` names the defect kind ("good" for
  normal images) and ``masks`` holds a pixel mask for every test image (all zero for good images).
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdad.atomic import write_atomic

KINDS = ("semantic", "defect")
FIELDS = ("images", "category", "anomalous", "defect", "masks", "level", "soft_masks")  # ImageSet's arrays


class DatasetError(RuntimeError):
    """A dataset cannot be found, verified or decoded. The message says what to do."""


@dataclass
class ImageSet:
    """One split: ``images`` uint8 [N, C, H, W] (C = 1 or 3), ``category`` int64 [N].

    Defect sets also carry ``anomalous`` bool [N], ``defect`` str [N] and, on the test split,
    ``masks`` uint8 [N, Hm, Wm] with values in {0, 1} (Hm, Wm may differ from H, W: pixel
    metrics are computed at mask resolution). Optional: ``level`` str [N], a difficulty level of
    each defect ("" for good images; generated sets grade their defects), and ``soft_masks`` uint8
    [N, Hm, Wm], the fraction of each mask pixel covered by the defect (0..255) when the masks
    were resized — the MKD paper's own pixel metric weighs pixels by it.
    """

    images: np.ndarray
    category: np.ndarray
    anomalous: np.ndarray | None = None
    defect: np.ndarray | None = None
    masks: np.ndarray | None = None
    level: np.ndarray | None = None
    soft_masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise DatasetError(f"images must be uint8 [N, 1|3, H, W], got {self.images.dtype} {self.images.shape}")
        for name in FIELDS[1:]:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise DatasetError(f"{name} has {len(value)} rows, images have {n}")
        if self.masks is not None and (self.masks.dtype != np.uint8 or self.masks.ndim != 3):
            raise DatasetError(f"masks must be uint8 [N, H, W], got {self.masks.dtype} {self.masks.shape}")
        if self.soft_masks is not None and (self.masks is None or self.soft_masks.shape != self.masks.shape
                                            or self.soft_masks.dtype != np.uint8):
            raise DatasetError("soft_masks must be uint8 with the shape of masks")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "ImageSet":
        """Rows ``index`` (a boolean mask or integer indices) of every field."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return ImageSet(**{name: pick(getattr(self, name)) for name in FIELDS})


@dataclass
class PreparedDataset:
    name: str
    kind: str
    categories: list[str]
    train: ImageSet
    test: ImageSet
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DatasetError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "defect" and (self.test.anomalous is None or self.test.masks is None):
            raise DatasetError(f"{self.name}: a defect dataset needs anomaly labels and masks on its test split")

    # ------------------------------------------------------------------ file form
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a killed write never leaves a half file under ``path``."""
        arrays: dict[str, np.ndarray] = {
            "name": np.array(self.name), "kind": np.array(self.kind),
            "categories": np.array(self.categories, dtype=str),
            "meta_keys": np.array(list(self.meta), dtype=str),
            "meta_values": np.array([str(v) for v in self.meta.values()], dtype=str),
        }
        for split in ("train", "test"):
            s: ImageSet = getattr(self, split)
            for key in FIELDS:
                value = getattr(s, key)
                if value is not None:
                    arrays[f"{split}_{key}"] = value
        write_npz_atomic(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PreparedDataset":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise DatasetError(f"{path}: not a readable prepared dataset ({err}); delete it and prepare again") from err
        splits = {}
        for split in ("train", "test"):
            splits[split] = ImageSet(**{k: data.get(f"{split}_{k}") for k in FIELDS})
        return cls(str(data["name"]), str(data["kind"]), [str(c) for c in data["categories"]],
                   splits["train"], splits["test"],
                   dict(zip(map(str, data["meta_keys"]), map(str, data["meta_values"]))))


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` into a temporary file beside ``path``, then rename over it."""
    write_atomic(path, lambda f: np.savez(f, **arrays))


def to_chw_uint8(image: np.ndarray, *, where: str = "image") -> np.ndarray:
    """HxW or HxWxC array (uint8/bool/uint16) to uint8 [C, H, W] with C in {1, 3}."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DatasetError(f"{where}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[2] in (1, 3):
        return np.ascontiguousarray(image.transpose(2, 0, 1))
    raise DatasetError(f"{where}: unsupported image shape {image.shape}")


def resize_images(images: np.ndarray, size: int, *, batch: int = 512) -> np.ndarray:
    """uint8 [N, C, H, W] → uint8 [N, C, size, size], bilinear with antialiasing (torch)."""
    import torch
    import torch.nn.functional as F

    if images.shape[-2:] == (size, size):
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[i:i + batch])).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i:i + batch] = y.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out
