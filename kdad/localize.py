"""Interpretability maps: the input gradient of a per-image loss, as MKD localises anomalies.

Nothing here knows MKD: a caller gives ``loss_fn(x, clean) -> per-image loss [N]`` (``clean`` is
False when ``x`` is a perturbed copy of the batch — SmoothGrad's noisy images, integrated
gradients' path — so the caller can reuse what it cached for the clean images only), and, for
guided backpropagation, the modules whose ReLUs are guided.

Every method works on a whole batch per backward pass: in eval mode each image's loss depends on
that image alone, so the gradient of the *sum* of per-image losses w.r.t. the batch is the stack of
per-image gradients.

Methods (each maps a batch [N, C, H, W] to saliency [N, H, W]):

- ``gradients``: ∂loss/∂x (what the paper reports);
- ``smooth_grad``: the mean over ``samples`` noisy copies, noise std = ``noise`` × the image's value
  range (Smilkov et al. 2017 use 10–20 %; the official MKD code's is 0.25 %: ``noise: 0.0025``);
- ``guided_backprop``: gradients with negative gradients stopped at every ReLU of the guided
  modules (Springenberg et al. 2015);
- ``integrated_gradients``: (x − x₀) ⊙ the mean gradient along the straight path from the baseline
  x₀ in ``steps`` Riemann steps (Sundararajan et al. 2017).

Normalisation (declared by the caller; the MKD paper's pixel metric assumes ``official``):

- ``official`` — the official MKD code's, per image: Σ_channels |g|, then (s − min) / (p99 − min)
  clipped to [0, 1]; SmoothGrad averages the normalised maps of its samples and guided backprop /
  SmoothGrad are min–max normalised once more, as that code does. Maps are in [0, 1].
- ``none`` — Σ_channels |g| (SmoothGrad: the mean over samples), in the loss's own units, comparable
  across images.

A Gaussian filter of σ = ``blur_sigma`` pixels follows (:func:`blur`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

METHODS = ("gradients", "smooth_grad", "guided_backprop", "integrated_gradients")
NORMALIZATIONS = ("official", "none")

LossFn = Callable[[torch.Tensor, bool], torch.Tensor]


def input_gradient(loss_fn: LossFn, x: torch.Tensor, clean: bool = True) -> torch.Tensor:
    """∂(Σ per-image loss)/∂x for a batch ``x`` (one backward pass)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(x, clean).sum(), x)
    return grad


def saliency(grad: torch.Tensor, normalization: str) -> torch.Tensor:
    """[N, C, H, W] attribution → [N, H, W]: Σ_c |g|, and the official per-image normalisation."""
    s = grad.abs().sum(dim=1)
    if normalization == "none":
        return s
    flat = s.flatten(1)
    lo = flat.amin(dim=1)
    hi = torch.quantile(flat.double(), 0.99, dim=1).to(flat.dtype)
    span = (hi - lo).view(-1, 1, 1)
    # a constant map (zero gradient everywhere) stays 0 instead of dividing by zero
    return torch.where(span > 0, ((s - lo.view(-1, 1, 1)) / span.clamp_min(1e-30)).clamp(0, 1), torch.zeros_like(s))


def _minmax(s: torch.Tensor) -> torch.Tensor:
    lo = s.flatten(1).amin(1).view(-1, 1, 1)
    hi = s.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(hi > lo, (s - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(s))


def attribution(loss_fn: LossFn, x: torch.Tensor, method: str, *, normalization: str = "official",
                guided: Iterable[nn.Module] = (), noise: float = 0.15, samples: int = 16, steps: int = 16,
                baseline: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Saliency [N, H, W] of a batch ``x`` (already preprocessed) by ``method``; see the module docstring."""
    if method not in METHODS:
        raise ValueError(f"unknown localisation method {method!r}; known: {', '.join(METHODS)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown map normalisation {normalization!r}; known: {', '.join(NORMALIZATIONS)}")
    if method == "gradients":
        return saliency(input_gradient(loss_fn, x), normalization)
    if method == "guided_backprop":
        with guided_relus(guided):
            s = saliency(input_gradient(loss_fn, x), normalization)
        return _minmax(s) if normalization == "official" else s
    if method == "smooth_grad":
        gen = torch.Generator(device=x.device).manual_seed(seed)  # maps are deterministic given the model
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp_min(1e-8).view(-1, 1, 1, 1)
        total = torch.zeros(x.shape[0], *x.shape[2:], device=x.device)
        for _ in range(samples):
            eps = torch.randn(x.shape, generator=gen, device=x.device) * (noise * span)
            total += saliency(input_gradient(loss_fn, x + eps, clean=False), normalization)
        s = total / samples
        return _minmax(s) if normalization == "official" else s
    x0 = torch.zeros_like(x) if baseline is None else baseline.expand_as(x)
    total = torch.zeros_like(x)
    for k in range(1, steps + 1):
        total += input_gradient(loss_fn, x0 + (k / steps) * (x - x0), clean=False)
    return saliency((x - x0) * total / steps, normalization)


def blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter of each [H, W] map (not across images); σ ≤ 0 leaves the maps as they are."""
    if sigma <= 0:
        return maps
    return gaussian_filter(maps, sigma=(0, sigma, sigma), mode="reflect").astype(maps.dtype, copy=False)


@contextmanager
def guided_relus(modules: Iterable[nn.Module]):
    """While active, every ``nn.ReLU`` inside ``modules`` passes back only positive gradients
    (its own gradient already zeroes where its input was negative)."""
    handles = [m.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp(min=0),))
               for module in modules for m in module.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
