"""The frozen expert's hint activations, computed once per (dataset, draw, expert, input convention).

Stored as one float16 ``.npy`` per (split, hint) in a folder and memory-mapped on load, so every
class, protocol, seed and ablation variant reads them instead of running the expert again; a job
copies the rows it needs into memory. When the hints of a dataset would take more than the
config's ``hint_cache_gb`` (CIFAR-10 at 224 px: ~17 GB for Lite0, ~48 GB for VGG16), nothing is
cached: ``meta.json`` says so and the methods run the expert on each batch instead.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kdad.data.base import DatasetError
from kdad.experts import Expert


def hint_bytes(expert: Expert, image_size: int, n_images: int, itemsize: int = 2) -> int:
    """Bytes the float16 hints of ``n_images`` images of side ``image_size`` take."""
    per_image = sum(h.channels * (image_size // h.stride) ** 2 for h in expert.hints)
    return per_image * n_images * itemsize


@torch.inference_mode()
def compute_hints(expert: Expert, images: np.ndarray | torch.Tensor, *, normalize: bool = True,
                  batch: int = 256, dtype=np.float16,
                  transform: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Hints of uint8 ``images`` [N, C, H, W] as numpy arrays [N, C_k, H_k, W_k] (float16 by default).

    ``transform`` turns a chunk of stored images into model inputs (the dataset's resize on load)."""
    n = len(images)
    outs: list[np.ndarray] | None = None
    device = next(expert.parameters()).device
    for i in range(0, n, batch):
        chunk = images[i:i + batch]
        if transform is not None:
            chunk = transform(np.asarray(chunk))
        x = torch.as_tensor(np.asarray(chunk) if not isinstance(chunk, torch.Tensor) else chunk).to(device)
        hints = expert(expert.preprocess(x, normalize))
        if outs is None:
            outs = [np.empty((n, *h.shape[1:]), dtype=dtype) for h in hints]
        for out, h in zip(outs, hints):
            out[i:i + batch] = h.cpu().numpy().astype(dtype)
    if outs is None:  # no images: shapes from a dummy forward
        side = images.shape[-1] if transform is None else transform(np.zeros((1, *images.shape[1:]), np.uint8)).shape[-1]
        probe = expert(expert.preprocess(torch.zeros(1, 3, side, side, dtype=torch.uint8, device=device), normalize))
        outs = [np.empty((0, *h.shape[1:]), dtype=dtype) for h in probe]
    return outs


def save_hint_cache(folder: str | os.PathLike, splits: dict[str, list[np.ndarray]], meta: dict) -> None:
    """Write ``<folder>/<split>_h<k>.npy`` + ``meta.json`` atomically (a temp folder renamed at the end)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split, hints in splits.items():
            for k, h in enumerate(hints):
                np.save(tmp / f"{split}_h{k}.npy", h)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_hint_cache(folder: str | os.PathLike, split: str, n_images: int | None = None) -> list[np.ndarray] | None:
    """Memory-mapped hints of one split, in hint order; None when the hints were too large to cache.

    Every file is checked against ``meta.json`` (and ``n_images``, the split's images) when opened:
    a damaged or partly replaced cache is a :class:`DatasetError` saying to delete it, not an
    IndexError in the middle of a training."""
    folder = Path(folder)
    redo = f"delete {folder} and run the workflow again (its features step rebuilds it)"
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        raise DatasetError(f"{folder} holds no readable meta.json; {redo}") from None
    if not meta.get("cached", True):
        return None
    files = sorted(folder.glob(f"{split}_h*.npy"), key=lambda p: int(p.stem.split("_h")[-1]))
    if not files:
        raise DatasetError(f"{folder} holds no hints for split {split!r}; {redo}")
    hints = []
    for f in files:
        try:
            hints.append(np.load(f, mmap_mode="r"))
        except (OSError, ValueError) as err:  # truncated: the header promises more than the file holds
            raise DatasetError(f"{f}: a damaged hint file ({err}); {redo}") from None
    shapes = [list(h.shape) for h in hints]
    want = (meta.get("shapes") or {}).get(split)
    if want is not None and shapes != want:
        raise DatasetError(f"{folder}: the {split} hints have shapes {shapes}, meta.json says {want}; {redo}")
    counts = {h.shape[0] for h in hints} | ({n_images} if n_images is not None else set())
    if len(counts) > 1:
        raise DatasetError(f"{folder}: the {split} hints cover {sorted(h.shape[0] for h in hints)} images, the "
                           f"prepared data {n_images}; {redo}")
    return hints


def build_hint_cache(folder, expert: Expert, splits: dict[str, np.ndarray], *, normalize: bool, meta: dict,
                     budget_bytes: float = float("inf"), image_size: int | None = None,
                     transform: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Compute and store the hints of every split, or — above ``budget_bytes`` — record that they
    are not cached."""
    t0 = time.perf_counter()
    n = sum(len(v) for v in splits.values())
    side = image_size or next(iter(splits.values())).shape[-1]
    size = hint_bytes(expert, side, n)
    if size > budget_bytes:
        meta = {**meta, "images": n, "cached": False, "bytes": size,
                "reason": f"{size / 2**30:.1f} GiB of hints exceed hint_cache_gb ({budget_bytes / 2**30:.1f} GiB): "
                          "methods run the expert on each batch"}
        save_hint_cache(folder, {}, meta)
        return meta
    hints = {name: compute_hints(expert, images, normalize=normalize, transform=transform)
             for name, images in splits.items()}
    seconds = time.perf_counter() - t0
    meta = {**meta, "images": n, "cached": True, "bytes": size, "seconds": round(seconds, 3),
            "shapes": {name: [list(h.shape) for h in hs] for name, hs in hints.items()},
            "images_per_second": round(n / max(seconds, 1e-9), 1)}
    save_hint_cache(folder, hints, meta)
    return meta
