"""The frozen expert's hint activations, computed once per (dataset, expert, input size, normalisation).

Stored as one float16 ``.npy`` per (split, hint) in a folder, memory-mapped on load, so every class,
protocol, seed and ablation variant reads them instead of running the expert again.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from kdad.experts import Expert


@torch.inference_mode()
def compute_hints(expert: Expert, images: np.ndarray | torch.Tensor, *, normalize: bool = True,
                  batch: int = 256, dtype=np.float16) -> list[np.ndarray]:
    """Hints of uint8 ``images`` [N, C, H, W] as numpy arrays [N, C_k, H_k, W_k] (float16 by default)."""
    images = torch.as_tensor(images)
    outs: list[np.ndarray] | None = None
    for i in range(0, len(images), batch):
        hints = expert(expert.preprocess(images[i:i + batch], normalize))
        if outs is None:
            outs = [np.empty((len(images), *h.shape[1:]), dtype=dtype) for h in hints]
        for out, h in zip(outs, hints):
            out[i:i + batch] = h.numpy().astype(dtype)
    if outs is None:  # no images: shapes from a dummy forward
        probe = expert(expert.preprocess(torch.zeros(1, 3, *images.shape[2:], dtype=torch.uint8), normalize))
        outs = [np.empty((0, *h.shape[1:]), dtype=dtype) for h in probe]
    return outs


def save_hint_cache(folder: str | os.PathLike, splits: dict[str, list[np.ndarray]], meta: dict) -> None:
    """Write ``<folder>/<split>_h<k>.npy`` + ``meta.json`` atomically (a temp folder renamed at the end)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for split, hints in splits.items():
        for k, h in enumerate(hints):
            np.save(tmp / f"{split}_h{k}.npy", h)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def load_hint_cache(folder: str | os.PathLike, split: str) -> list[np.ndarray]:
    """Memory-mapped hints of one split, in hint order."""
    folder = Path(folder)
    files = sorted(folder.glob(f"{split}_h*.npy"), key=lambda p: int(p.stem.split("_h")[-1]))
    if not files:
        raise FileNotFoundError(f"{folder} holds no hints for split {split!r}; run `kdad features` first")
    return [np.load(f, mmap_mode="r") for f in files]


def build_hint_cache(folder, expert: Expert, splits: dict[str, np.ndarray], *, normalize: bool, meta: dict) -> dict:
    t0 = time.perf_counter()
    n = sum(len(v) for v in splits.values())
    hints = {name: compute_hints(expert, images, normalize=normalize) for name, images in splits.items()}
    seconds = time.perf_counter() - t0
    meta = {**meta, "images": n, "seconds": round(seconds, 3), "images_per_second": round(n / max(seconds, 1e-9), 1)}
    save_hint_cache(folder, hints, meta)
    return meta
