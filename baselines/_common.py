"""Helpers shared by the baselines: expert hints, pooled features, pixels, seeding, map resizing.

Heavy libraries (scikit-learn, scikit-image, scipy) are imported inside the functions that use them:
every workflow job is a fresh Python process, and importing ``baselines`` registers every method.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kdad.experts import Expert, build_expert
from kdad.features import compute_hints


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch's and Python's global generators; return a numpy Generator from ``seed``."""
    torch.manual_seed(seed)
    random.seed(seed)
    return np.random.default_rng(seed)


class ExpertHints:
    """Lazily builds the frozen expert (only when hints are not supplied) and returns float32 hints.

    Hints computed here go through :func:`kdad.features.compute_hints` (float16, like the cache), so
    ``hints=None`` and cached hints give the same numbers.
    """

    def __init__(self, name: str, weights: str | None, normalize: bool) -> None:
        self.name, self.weights, self.normalize = name, weights, normalize
        self._expert: Expert | None = None

    @property
    def expert(self) -> Expert:
        if self._expert is None:
            self._expert = build_expert(self.name, self.weights)
        return self._expert

    def __call__(self, images: torch.Tensor, hints=None, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        if hints is None:
            hints = compute_hints(self.expert, images, normalize=self.normalize)
        if len(hints) and len(hints[0]) != len(images):
            raise ValueError(f"hints are for {len(hints[0])} images, got {len(images)} images")
        chosen = range(len(hints)) if indices is None else indices
        for i in chosen:
            if not 0 <= i < len(hints):
                raise ValueError(f"hint index {i} out of range: the expert {self.name} gives {len(hints)} hints")
        return [as_float(hints[i]) for i in chosen]


def as_float(h) -> torch.Tensor:
    """A hint (numpy array, float16 memmap or tensor) as a float32 tensor."""
    if isinstance(h, torch.Tensor):
        return h.detach().float()
    return torch.from_numpy(np.array(h, dtype=np.float32))  # a copy: memmaps may be read-only


def pooled(hints: Sequence[torch.Tensor]) -> np.ndarray:
    """Global-average-pooled hints concatenated: float64 [N, Σ C_k]."""
    return torch.cat([h.mean(dim=(2, 3)) for h in hints], dim=1).double().numpy()


def pixels01(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] → float32 in [0, 1]."""
    return torch.as_tensor(images).float().div(255.0)


def check_images(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, 1|3, H, W], got shape {tuple(images.shape)}")
    return images


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] → [N, H, W] by bilinear interpolation (align_corners=False)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def gaussian_blur(maps: np.ndarray, sigma: float, mode: str = "reflect") -> np.ndarray:
    """Gaussian filter of every [H, W] map (not across images), radius 4σ, borders by scipy's ``mode``;
    sigma ≤ 0 leaves them as they are."""
    if sigma <= 0:
        return maps
    from scipy import ndimage  # here, not at import: every job is a fresh process (start-up time)

    return ndimage.gaussian_filter(maps, sigma=(0, sigma, sigma), mode=mode, truncate=4.0)


def chunked_min_dist(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Euclidean distances [Q, k] from every query row to its ``k`` nearest ``bank`` rows, in chunks
    so that at most ``chunk`` × |bank| distances are held at once."""
    outs = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk], bank)
        outs.append(d.topk(k, dim=1, largest=False).values if k > 1 else d.min(dim=1, keepdim=True).values)
    if not outs:
        return queries.new_zeros((0, k))
    return torch.cat(outs)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def mean_value_sum_gradient(per_image: torch.Tensor) -> torch.Tensor:
    """A scalar whose *value* is the batch mean of ``per_image`` and whose *gradient* is that of the
    batch sum. For methods whose authors sum the loss over the batch (STFPM's ``MSELoss(reduction=
    "sum")``): the optimiser sees their gradient scale (their learning rate means what it meant
    there), while the training history records a per-image loss comparable across batch sizes."""
    total = per_image.sum()
    return total - total.detach() + per_image.detach().mean()


def cpu_state(module: torch.nn.Module) -> dict:
    """A module's state dict on the CPU (what a saved model stores instead of a pickled module)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def run_name(detector, seed: int) -> str:
    """How training messages name a run (the runner prefixes dataset, protocol and category)."""
    return f"{getattr(detector, 'name', type(detector).__name__)} (seed {seed})"


