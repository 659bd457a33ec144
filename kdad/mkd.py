"""Multiresolution Knowledge Distillation (Salehi et al., CVPR 2021): loss, training, scoring.

The expert is frozen; the cloner learns, on normal images only, to reproduce the expert's hint
activations. For hint k with flattened activations c_k (cloner) and s_k (expert) of one image:

    direction_k = 1 − cos(c_k, s_k)            (paper Eq. 2)
    value_k     = mean((c_k − s_k)²)           (paper Eq. 1, per element)
    loss        = Σ_k direction_k + λ Σ_k value_k        (``lam_on="value"``: the official code)
    loss        = λ Σ_k direction_k + Σ_k value_k        (``lam_on="direction"``: the paper's Eq. 3)

averaged over the batch in training. The same per-image loss over the *score* hints is the
anomaly score (the official code scores on hints 2–4 only). Localisation = the input gradient of
that loss (see :mod:`kdad.localize`).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdad.cloner import Cloner, build_cloner
from kdad.experts import Expert, build_expert


class TrainingError(RuntimeError):
    """Training diverged (NaN/inf loss) or cannot continue; the message says where."""


@dataclass
class MKDConfig:
    """Every knob of MKD. Unknown keys are rejected by :func:`kdad.config.from_dict`."""

    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True            # expert's mean/std on the input (paper: False for MNIST, MVTec)
    cloner: str = "compact"           # compact (cfg B and its analogues) | equal (expert's widths)
    train_hints: tuple[int, ...] = (0, 1, 2, 3)   # positions in the expert's hint list
    score_hints: tuple[int, ...] = (1, 2, 3)      # official code: block 2 dropped at test time
    terms: str = "both"               # both | direction | value (loss-term ablation)
    lam: float = 0.01
    lam_on: str = "value"             # value (official code) | direction (paper's formula)
    epochs: int = 51
    batch_size: int = 64
    lr: float = 1e-3
    localization: str = "gradients"   # see kdad.localize.METHODS
    grad_through: str = "both"        # both (official code) | cloner (the paper's text)
    blur_sigma: float = 4.0           # 0 disables the Gaussian filter
    smooth_grad_noise: float = 0.15   # SmoothGrad noise std as a fraction of the input range
    smooth_grad_samples: int = 16
    ig_steps: int = 16                # integrated gradients: Riemann steps from a black image
    map_batch: int = 32               # images per backward pass when computing maps

    def __post_init__(self) -> None:
        self.train_hints = tuple(self.train_hints)
        self.score_hints = tuple(self.score_hints)
        for name, allowed in (("cloner", ("compact", "equal")), ("terms", ("both", "direction", "value")),
                              ("lam_on", ("value", "direction")), ("grad_through", ("both", "cloner"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"mkd.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.train_hints or not self.score_hints:
            raise ValueError("train_hints and score_hints must not be empty")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs ≥ 0, batch_size ≥ 1 and lr > 0 are required")


def mkd_loss(cloner_hints: Sequence[torch.Tensor], expert_hints: Sequence[torch.Tensor], *,
             lam: float, lam_on: str = "value", terms: str = "both") -> torch.Tensor:
    """Per-image MKD loss [N] over the given (aligned) hints; see the module docstring."""
    direction = value = 0.0
    for c, s in zip(cloner_hints, expert_hints, strict=True):
        c, s = c.flatten(1), s.flatten(1).to(c.dtype)
        direction = direction + (1.0 - F.cosine_similarity(c, s, dim=1, eps=1e-8))
        value = value + (c - s).pow(2).mean(dim=1)
    w_dir, w_val = (1.0, lam) if lam_on == "value" else (lam, 1.0)
    if terms == "direction":
        return w_dir * direction
    if terms == "value":
        return w_val * value
    return w_dir * direction + w_val * value


class MKD(nn.Module):
    """The Detector for MKD: ``fit(images, seed=…)``, ``score(images)``, ``anomaly_map(images)``.

    Images are uint8 tensors [N, 1|3, H, W]. ``hints`` (optional, every method of this class) are the
    expert's activations for exactly those images, as made by :func:`kdad.features.compute_hints`
    (float16 is fine); given them, the frozen expert is never run again for training or scoring.
    """

    def __init__(self, config: MKDConfig | None = None, *, expert: Expert | None = None,
                 cloner: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config or MKDConfig()
        self.expert = expert if expert is not None else build_expert(self.config.expert, self.config.expert_weights)
        n = len(self.expert.hints)
        for h in (*self.config.train_hints, *self.config.score_hints):
            if not 0 <= h < n:
                raise ValueError(f"hint index {h} out of range: {self.config.expert} has {n} hints")
        self.cloner = cloner if cloner is not None else build_cloner(self.expert, self.config.cloner)
        self.history: list[dict] = []

    # ------------------------------------------------------------------ helpers
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.expert.preprocess(images, self.config.normalize)

    @torch.inference_mode()
    def expert_hints(self, images: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
        outs = [self.expert(self.preprocess(images[i:i + batch])) for i in range(0, len(images), batch)]
        return [torch.cat(parts) for parts in zip(*outs)]

    def loss(self, cloner_hints, expert_hints, which: Sequence[int]) -> torch.Tensor:
        c = self.config
        return mkd_loss([cloner_hints[i] for i in which], [expert_hints[i] for i in which],
                        lam=c.lam, lam_on=c.lam_on, terms=c.terms)

    # ------------------------------------------------------------------ Detector interface
    def fit(self, images: torch.Tensor, *, seed: int, hints: Sequence[torch.Tensor] | None = None,
            checkpoint: str | os.PathLike | None = None, log: Callable[[str], None] | None = None) -> "MKD":
        """Train the cloner on normal ``images`` for ``config.epochs`` epochs; the last epoch is kept.

        ``checkpoint``: a file written atomically after every epoch; when it exists at the start,
        training resumes from it (same seed ⇒ same result as an uninterrupted run).
        """
        cfg = self.config
        log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        torch.manual_seed(seed)
        if isinstance(self.cloner, Cloner):  # initialisation from the seed, not from construction time
            self.cloner.apply(_reset_parameters)
        self.history = []
        if hints is None:
            hints = self.expert_hints(images)
        targets = [hints[i] for i in cfg.train_hints]
        n = len(images)
        if n == 0:
            raise TrainingError("no training images")
        opt = torch.optim.Adam(self.cloner.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(seed)
        start = 0
        if checkpoint is not None and Path(checkpoint).is_file():
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            self.cloner.load_state_dict(state["cloner"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.history, start = state["history"], state["epoch"]
            log(f"resuming from {checkpoint} at epoch {start}")
        self.cloner.train()
        for epoch in range(start, cfg.epochs):
            t0, total = time.perf_counter(), 0.0
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                if len(idx) < 2 and n >= 2:  # BatchNorm cannot train on a single image
                    continue
                out = self.cloner(self.preprocess(images[idx]))
                loss = mkd_loss([out[h] for h in cfg.train_hints], [t[idx] for t in targets],
                                lam=cfg.lam, lam_on=cfg.lam_on, terms=cfg.terms).mean()
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at epoch {epoch + 1}, batch {i // cfg.batch_size}"
                                        f" (lr={cfg.lr}); nothing was saved for this run")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            seconds = time.perf_counter() - t0
            self.history.append({"epoch": epoch + 1, "loss": total / n, "seconds": seconds})
            log(f"epoch {epoch + 1}/{cfg.epochs}  loss {total / n:.5f}  {n / max(seconds, 1e-9):.0f} img/s")
            if checkpoint is not None:
                _save_atomic({"cloner": self.cloner.state_dict(), "optimizer": opt.state_dict(),
                              "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                              "history": self.history, "epoch": epoch + 1}, checkpoint)
        self.cloner.eval()
        return self

    @torch.inference_mode()
    def score(self, images: torch.Tensor, *, hints: Sequence[torch.Tensor] | None = None,
              batch: int = 256) -> np.ndarray:
        """Per-image anomaly score: the MKD loss over ``config.score_hints`` (higher = more anomalous)."""
        self.cloner.eval()
        scores = []
        for i in range(0, len(images), batch):
            x = self.preprocess(images[i:i + batch])
            target = self.expert(x) if hints is None else [h[i:i + batch] for h in hints]
            scores.append(self.loss(self.cloner(x), target, self.config.score_hints))
        return torch.cat(scores).numpy().astype(np.float64)

    def anomaly_map(self, images: torch.Tensor, *, hints: Sequence[torch.Tensor] | None = None) -> np.ndarray:
        """Per-pixel maps [N, H, W] (float32) by ``config.localization``; see :mod:`kdad.localize`."""
        from kdad.localize import localize

        return localize(self, images, hints=hints)

    def per_image_loss(self, x: torch.Tensor, expert_hints: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Score loss [N] of *preprocessed* input ``x`` with autograd on; the expert runs on ``x``
        unless fixed ``expert_hints`` are given (gradient through the cloner only)."""
        target = self.expert(x) if expert_hints is None else expert_hints
        return self.loss(self.cloner(x), target, self.config.score_hints)


def _reset_parameters(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight)
    elif isinstance(m, nn.BatchNorm2d):
        m.reset_parameters()
        m.reset_running_stats()


def _save_atomic(obj, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def copy_of_expert(expert: Expert) -> nn.Module:
    """A cloner that *is* the expert (a trainable deep copy): the MKD score of any image is 0."""
    clone = copy.deepcopy(expert)
    return clone
