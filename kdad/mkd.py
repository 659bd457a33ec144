"""Multiresolution Knowledge Distillation (Salehi et al., CVPR 2021): loss, training, scoring, maps.

The expert is frozen; the cloner learns, on normal images only, to reproduce the expert's hint
activations. For hint k with flattened activations c_k (cloner) and s_k (expert) of one image:

    direction_k = 1 − cos(c_k, s_k)            (paper Eq. 2)
    value_k     = mean((c_k − s_k)²)           (paper Eq. 1, per element)
    loss        = Σ_k direction_k + λ Σ_k value_k        (``lam_on="value"``: the official code)
    loss        = λ Σ_k direction_k + Σ_k value_k        (``lam_on="direction"``: the paper's Eq. 3)

averaged over the batch in training. The same per-image loss over the *score* hints is the
anomaly score (the official code scores on hints 2–4 only). Localisation = the input gradient of
that loss, normalised per image and blurred (see :mod:`kdad.localize`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdad import localize as loc
from kdad.cloner import HEADS, Cloner, build_cloner
from kdad.experts import Expert, build_expert
from kdad.methods import Detector, MethodSpec, evaluation_field, register_method, resume_fingerprint
from kdad.training import TrainingError, train

__all__ = ["MKD", "MKDConfig", "TrainingError", "copy_of_expert", "mkd_loss"]


@dataclass
class MKDConfig:
    """Every knob of MKD. Unknown keys are rejected by :func:`kdad.config.from_dict`.

    Options marked ``evaluation_field`` only change scoring and maps: changing them re-evaluates a
    trained cloner instead of training a new one.
    """

    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = False           # the expert weights' own input normalisation; False = [0, 1] (official code)
    cloner: str = "compact"           # compact (cfg B and its analogues) | equal (expert's widths)
    cloner_head: str = "auto"         # auto | relu | linear: can the cloner's hints be negative (see kdad.cloner)
    train_hints: tuple[int, ...] = (0, 1, 2, 3)   # positions in the expert's hint list
    terms: str = "both"               # both | direction | value (loss-term ablation)
    lam: float = 0.01
    lam_on: str = "value"             # value (official code) | direction (the paper's formula)
    epochs: int = 51
    batch_size: int = 64
    lr: float = 1e-3
    bn_recalibrate: bool = False      # re-estimate BatchNorm statistics over the training set after training
    score_hints: tuple[int, ...] = evaluation_field((1, 2, 3))   # official code: block 2 dropped at test time
    localization: str = evaluation_field("gradients")            # see kdad.localize.METHODS
    map_normalization: str = evaluation_field("official")        # official (per image, [0, 1]) | none
    grad_through: str = evaluation_field("both")                 # both (official code) | cloner (the paper's text)
    blur_sigma: float = evaluation_field(4.0)                     # Gaussian σ in pixels; 0 disables it
    smooth_grad_noise: float = evaluation_field(0.15)            # noise std as a fraction of the input range
    smooth_grad_samples: int = evaluation_field(16)
    ig_steps: int = evaluation_field(16)                          # integrated gradients, from a black image
    map_batch: int = evaluation_field(32)                         # images per backward pass for maps
    # maps (and every pixel metric) on a fixed subset of each category's test images: this many good
    # and this many defective ones, spread evenly over the test order (no randomness); None = all.
    # For methods that cost many backward passes per image (SmoothGrad, integrated gradients)
    map_subset: int | None = evaluation_field(None)

    def __post_init__(self) -> None:
        self.train_hints = tuple(self.train_hints)
        self.score_hints = tuple(self.score_hints)
        for name, allowed in (("cloner", ("compact", "equal")), ("cloner_head", HEADS),
                              ("terms", ("both", "direction", "value")), ("lam_on", ("value", "direction")),
                              ("grad_through", ("both", "cloner")), ("localization", loc.METHODS),
                              ("map_normalization", loc.NORMALIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"mkd.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.train_hints or not self.score_hints:
            raise ValueError("train_hints and score_hints must not be empty")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.lam < 0:
            raise ValueError("epochs ≥ 1, batch_size ≥ 1, lr > 0 and lam ≥ 0 are required")
        if self.map_subset is not None and self.map_subset < 1:
            raise ValueError(f"mkd.map_subset must be ≥ 1 (images of each label) or null, got {self.map_subset}")
        if self.blur_sigma < 0 or self.smooth_grad_noise < 0 or min(self.smooth_grad_samples, self.ig_steps,
                                                                      self.map_batch) < 1:
            raise ValueError("blur_sigma and smooth_grad_noise must be ≥ 0; smooth_grad_samples, ig_steps "
                             "and map_batch ≥ 1")


def mkd_loss(cloner_hints: Sequence[torch.Tensor], expert_hints: Sequence[torch.Tensor], *,
             lam: float, lam_on: str = "value", terms: str = "both") -> torch.Tensor:
    """Per-image MKD loss [N] over the given (aligned) hints; see the module docstring."""
    direction = value = 0.0
    for c, s in zip(cloner_hints, expert_hints, strict=True):
        c, s = _flat(c), _flat(s).to(c.dtype)
        direction = direction + (1.0 - F.cosine_similarity(c, s, dim=1, eps=1e-8))
        value = value + (c - s).pow(2).mean(dim=1)
    w_dir, w_val = (1.0, lam) if lam_on == "value" else (lam, 1.0)
    if terms == "direction":
        return w_dir * direction
    if terms == "value":
        return w_val * value
    return w_dir * direction + w_val * value


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] → [N, C·H·W] in channels-last element order: both terms of the loss sum over all
    elements of an image, so the order does not change them, and for the channels-last activations
    the networks produce it is a view instead of a copy (measured 12 % faster training at 32 px, 27 %
    at 128 px; the loss is identical)."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1) if t.dim() == 4 else t.flatten(1)


class MKD(Detector):
    """MKD as a Detector. Images are uint8 tensors [N, 1|3, H, W]. ``hints`` (every method) are the
    expert's activations for exactly those images, as made by :func:`kdad.features.compute_hints`
    (float16 is fine); given them, the frozen expert is never run again for training or scoring.

    The fitted state is the cloner (``cloner_``) and the training history.
    """

    def __init__(self, config: MKDConfig | None = None, *, expert: Expert | None = None,
                 cloner: nn.Module | None = None) -> None:
        super().__init__(config or MKDConfig())
        cfg = self.config
        self.expert = expert if expert is not None else build_expert(cfg.expert, cfg.expert_weights)
        n = len(self.expert.hints)
        for h in (*cfg.train_hints, *cfg.score_hints):
            if not 0 <= h < n:
                raise ValueError(f"hint index {h} out of range: {cfg.expert} has {n} hints")
        self.cloner_ = cloner if cloner is not None else build_cloner(self.expert, cfg.cloner, cfg.cloner_head)
        self.cloner_.eval()

    @property
    def maps_in_unit_range(self) -> bool:  # type: ignore[override]
        return self.config.map_normalization == "official"

    def to(self, device) -> "MKD":
        super().to(device)
        self.expert.to(self.device)
        return self

    # ------------------------------------------------------------------ helpers
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.expert.preprocess(images.to(self.device, non_blocking=True), self.config.normalize)

    @torch.inference_mode()
    def expert_hints(self, images: torch.Tensor, batch: int = 256) -> list[torch.Tensor]:
        outs = [[h.cpu() for h in self.expert(self.preprocess(images[i:i + batch]))]
                for i in range(0, len(images), batch)]
        return [torch.cat(parts) for parts in zip(*outs)]

    def loss(self, cloner_hints, expert_hints, which: Sequence[int]) -> torch.Tensor:
        c = self.config
        return mkd_loss([cloner_hints[i] for i in which], [expert_hints[i] for i in which],
                        lam=c.lam, lam_on=c.lam_on, terms=c.terms)

    def _targets(self, images: torch.Tensor, hints, which: Sequence[int]) -> dict[int, torch.Tensor]:
        """{hint index: the expert's hint for ``images``} for the indices ``which``, float32 on the device
        (from the cached ``hints`` when given, else by running the expert)."""
        if hints is None:
            hints = self.expert_hints(images)
        return {i: torch.as_tensor(np.asarray(hints[i]) if not isinstance(hints[i], torch.Tensor) else hints[i])
                .to(self.device, torch.float32).contiguous(memory_format=torch.channels_last) for i in which}

    # ------------------------------------------------------------------ Detector interface
    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "MKD":
        """Train the cloner on normal ``images`` for ``config.epochs`` epochs; the last epoch is kept."""
        cfg = self.config
        what = f"mkd (seed {seed})"
        if len(images) == 0:
            raise TrainingError(f"{what}: no training images")
        torch.manual_seed(seed)  # initialisation from the seed, not from construction time
        if isinstance(self.cloner_, Cloner):
            self.cloner_.apply(_reset_parameters)
        self.cloner_.to(self.device)
        # cached hints: converted once to float32 on the device; without them (e.g. hints too large to
        # cache, CIFAR-10 at 224 px) the frozen expert runs on each batch, without autograd
        targets = self._targets(images, hints, cfg.train_hints) if hints is not None else None
        opt = torch.optim.Adam(self.cloner_.parameters(), lr=cfg.lr)

        def step(idx: torch.Tensor) -> torch.Tensor:
            x = self.preprocess(images[idx])
            if targets is None:
                with torch.no_grad():
                    target = self.expert(x)
            else:
                dev_idx = idx.to(self.device)
                target = {h: t[dev_idx] for h, t in targets.items()}
            return self.loss(self.cloner_(x), target, cfg.train_hints).mean()

        self.history_ = train({"cloner": self.cloner_}, opt, step, len(images), epochs=cfg.epochs,
                              batch_size=cfg.batch_size, seed=seed, what=what, checkpoint=checkpoint,
                              fingerprint=resume_fingerprint("mkd", cfg, seed, len(images)), lr_hint=cfg.lr)
        if cfg.bn_recalibrate:
            self.recalibrate_batchnorm(images, cfg.batch_size)
        self.cloner_.eval()
        return self

    @torch.no_grad()
    def recalibrate_batchnorm(self, images: torch.Tensor, batch: int) -> None:
        """Replace the BatchNorm running statistics (an exponential average over the last batches of
        training) by their plain average over one pass of the training set in batches under the final
        weights (as ``torch.optim.swa_utils.update_bn`` does)."""
        bns = [m for m in self.cloner_.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.cloner_.train()
        for i in range(0, len(images), batch):
            if len(images[i:i + batch]) >= 2:
                self.cloner_(self.preprocess(images[i:i + batch]))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        self.cloner_.eval()

    @torch.inference_mode()
    def score(self, images: torch.Tensor, *, hints=None, batch: int = 512) -> np.ndarray:
        """Per-image anomaly score: the MKD loss over ``config.score_hints`` (higher = more anomalous)."""
        self.cloner_.eval()
        which = self.config.score_hints
        scores = []
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            x = self.preprocess(chunk)
            target = self._targets(chunk, None if hints is None else [h[i:i + batch] for h in hints], which)
            scores.append(self.loss(self.cloner_(x), target, which).cpu())
        if not scores:
            return np.zeros(0)
        out = torch.cat(scores).double().numpy()
        if not np.isfinite(out).all():
            raise TrainingError(f"MKD scored {int((~np.isfinite(out)).sum())} image(s) as NaN/inf: the cloner "
                                "is broken (diverged training?)")
        return out

    def per_image_loss(self, x: torch.Tensor, expert_hints: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Score loss [N] of *preprocessed* input ``x`` with autograd on; the expert runs on ``x``
        (inside autograd) unless fixed ``expert_hints`` are given."""
        target = self.expert(x) if expert_hints is None else expert_hints
        return self.loss(self.cloner_(x), target, self.config.score_hints)

    def anomaly_map(self, images: torch.Tensor, *, hints=None, method: str | None = None,
                    blur_sigma: float | None = None) -> np.ndarray:
        """Per-pixel maps [N, H, W] (float32) by ``config.localization`` (or ``method``), normalised
        by ``config.map_normalization`` and blurred with ``config.blur_sigma`` (or ``blur_sigma``)."""
        cfg = self.config
        self.cloner_.eval()
        method = method or cfg.localization
        maps = []
        for i in range(0, len(images), cfg.map_batch):
            chunk = images[i:i + cfg.map_batch]
            x = self.preprocess(chunk)
            cached = None
            if cfg.grad_through == "cloner" and hints is not None:
                cached = self._targets(chunk, [h[i:i + cfg.map_batch] for h in hints], cfg.score_hints)

            def loss_fn(xx: torch.Tensor, clean: bool) -> torch.Tensor:
                if cfg.grad_through == "both":
                    return self.per_image_loss(xx)
                if clean and cached is not None:
                    return self.per_image_loss(xx, cached)
                with torch.no_grad():
                    target = self.expert(xx)
                return self.per_image_loss(xx, target)

            black = self.preprocess(torch.zeros(1, chunk.shape[1], *chunk.shape[2:], dtype=torch.uint8))
            s = loc.attribution(loss_fn, x, method, normalization=cfg.map_normalization, guided=[self.cloner_],
                                noise=cfg.smooth_grad_noise, samples=cfg.smooth_grad_samples, steps=cfg.ig_steps,
                                baseline=black)
            maps.append(s.detach().float().cpu().numpy())
        out = np.concatenate(maps) if maps else np.zeros((0, *images.shape[2:]), np.float32)
        return loc.blur(out.astype(np.float32), cfg.blur_sigma if blur_sigma is None else blur_sigma)

    # the cloner is stored as a state dict (not a pickled module): the architecture comes from the config
    def fitted_state(self) -> dict:
        return {"cloner_": {k: v.cpu() for k, v in self.cloner_.state_dict().items()}, "history_": self.history_}

    def load_fitted_state(self, state: dict) -> None:
        self.cloner_.load_state_dict(state["cloner_"])
        self.cloner_.eval()
        self.history_ = state.get("history_", [])


def _reset_parameters(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.reset_parameters()
        m.reset_running_stats()


def copy_of_expert(expert: Expert) -> nn.Module:
    """A cloner that *is* the expert (a deep copy): the MKD score of any image is 0."""
    return copy.deepcopy(expert)


register_method(MethodSpec("mkd", MKDConfig, MKD, localizes=True, expert_field="expert",
                           description="Multiresolution Knowledge Distillation (Salehi et al., CVPR 2021)"))
