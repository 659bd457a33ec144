"""Localisation by interpretability maps of the MKD loss w.r.t. the input pixels.

Every method works on a whole batch per backward pass: in eval mode each image's loss depends on
that image alone, so the gradient of the *sum* of per-image losses w.r.t. the batch is the stack of
per-image gradients. Chunks of ``config.map_batch`` images bound the memory.

- ``gradients``: ∂loss/∂x (what the paper reports).
- ``smooth_grad``: the mean gradient over ``smooth_grad_samples`` noisy copies, noise std =
  ``smooth_grad_noise`` × the image's value range (Smilkov et al. 2017 use 10–20 %; the official MKD
  code's std ≈ 0.0025 on [0, 1] inputs is ``smooth_grad_noise: 0.0025``).
- ``guided_backprop``: gradients with negative gradients stopped at every ReLU of the cloner
  (Springenberg et al. 2015), through forward-pre/backward hooks of today's PyTorch.
- ``integrated_gradients``: (x − x₀) ⊙ mean of ∂loss/∂x along the straight path from a black
  image x₀, ``ig_steps`` Riemann steps (Sundararajan et al. 2017).

``grad_through="both"`` lets the gradient flow through the expert too (the official code);
``"cloner"`` stops the gradient at the expert (the paper's text): the expert's activations are a
constant target. For plain gradients and guided backprop that target is the clean image's
activations already computed for its score (cached hints), so the expert runs no pass at all; for
SmoothGrad and integrated gradients the expert runs forward only, on each perturbed input. The map is |gradient| summed over channels, then a Gaussian filter of σ = ``blur_sigma``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import gaussian_filter

METHODS = ("gradients", "smooth_grad", "guided_backprop", "integrated_gradients")


def localize(model, images: torch.Tensor, *, hints: Sequence[torch.Tensor] | None = None,
             method: str | None = None) -> np.ndarray:
    """Maps [N, H, W] float32 for uint8 ``images`` [N, C, H, W] from an :class:`kdad.mkd.MKD`."""
    cfg = model.config
    method = method or cfg.localization
    if method not in METHODS:
        raise ValueError(f"unknown localisation method {method!r}; known: {', '.join(METHODS)}")
    model.cloner.eval()
    maps = []
    for i in range(0, len(images), cfg.map_batch):
        x = model.preprocess(images[i:i + cfg.map_batch])
        target = None
        if cfg.grad_through == "cloner" and hints is not None:
            target = [h[i:i + cfg.map_batch].float() for h in hints]
        grad = _attribution(model, x, target, method)
        maps.append(grad.abs().sum(dim=1).numpy())
    out = np.concatenate(maps).astype(np.float32)
    if cfg.blur_sigma > 0:
        out = gaussian_filter(out, sigma=cfg.blur_sigma, axes=(1, 2), mode="reflect")
    return out


def _grad(model, x: torch.Tensor, target=None) -> torch.Tensor:
    """∂(Σ per-image loss)/∂x. ``target``: fixed expert hints for ``x``; without them the expert runs
    on ``x`` — inside autograd when ``grad_through == "both"``, as a constant otherwise."""
    if target is None and model.config.grad_through == "cloner":
        with torch.no_grad():
            target = model.expert(x)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = model.per_image_loss(x, target).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _attribution(model, x: torch.Tensor, target, method: str) -> torch.Tensor:
    cfg = model.config
    if method == "gradients":
        return _grad(model, x, target)
    if method == "guided_backprop":
        with guided_relus(model.cloner):
            return _grad(model, x, target)
    if method == "smooth_grad":
        gen = torch.Generator().manual_seed(0)  # maps are deterministic given the model
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp_min(1e-8).view(-1, 1, 1, 1)
        total = torch.zeros_like(x)
        for _ in range(cfg.smooth_grad_samples):
            noise = torch.randn(x.shape, generator=gen) * (cfg.smooth_grad_noise * span)
            total += _grad(model, x + noise)
        return total / cfg.smooth_grad_samples
    # integrated gradients from a black image (zeros before normalisation)
    black = model.preprocess(torch.zeros(1, x.shape[1], *x.shape[2:], dtype=torch.uint8)).expand_as(x)
    total = torch.zeros_like(x)
    for k in range(1, cfg.ig_steps + 1):
        total += _grad(model, black + (k / cfg.ig_steps) * (x - black))
    return (x - black) * total / cfg.ig_steps


@contextmanager
def guided_relus(module: nn.Module):
    """While active, every ``nn.ReLU`` in ``module`` passes back only positive gradients."""
    handles = [m.register_full_backward_hook(lambda _m, gin, _gout: (gin[0].clamp(min=0),))
               for m in module.modules() if isinstance(m, nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
