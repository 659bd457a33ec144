"""Student–Teacher Feature Pyramid Matching (Wang, Wu, Cui & Li, "Student-Teacher Feature Pyramid
Matching for Anomaly Detection", BMVC 2021; arXiv 2103.04257).

Teacher = the frozen expert; its hints ``hint_indices`` (default the first three: strides 4, 8, 16,
the paper's conv2_x–conv4_x of ResNet-18) are the feature pyramid. Student = the *same*
architecture with random weights (``<expert>_random`` copied and made trainable, BatchNorm
included), trained on normal images only to match the teacher. With channel-wise L2 normalised
features f̂ at position (i, j) of layer l:

    loss  = Σ_l  1/(h_l w_l) Σ_ij  ½ ‖f̂_t(i, j) − f̂_s(i, j)‖²          (paper Eq. 1–2)
    map   = Π_l  bilinear-upsample( ½ ‖f̂_t − f̂_s‖² )  to the input size   (paper Eq. 3)
    score = max of the map (the paper's image-level score)

Optimisation: SGD, lr 0.4, momentum 0.9, weight decay 1e-4, batch size 32 — the paper's values.
This large learning rate was stable for a randomly initialised EfficientNet-Lite0 student on
1000 Fashion-MNIST images at 32 px and 200 RGB texture tiles at 64 px (the loss falls steadily), so
no safeguard is on by default; ``clip_grad_norm`` > 0 (not in the paper) clips each step's gradient
norm should another expert or dataset diverge. Epochs: the paper trains 100 epochs on MVTec; the
benchmark default is 20. The teacher sees exactly the input of the
hints (the expert's preprocessing with ``normalize``), and so does the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines._common import ExpertHints, check_images, require, resize_maps, seed_everything
from kdad.experts import Expert, build_expert
from kdad.methods import Detector, MethodSpec, register_method


@dataclass
class STFPMConfig:
    """STFPM (Wang et al. 2021); see the module docstring for the sources and the one addition."""

    hint_indices: tuple[int, ...] = (0, 1, 2)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad_norm: float = 0.0           # 0 = no clipping (paper); > 0 = max gradient norm per step
    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self.hint_indices = tuple(self.hint_indices)
        require(len(self.hint_indices) > 0, "hint_indices must not be empty")
        require(self.epochs >= 0 and self.batch_size >= 2 and self.lr > 0 and self.clip_grad_norm >= 0,
                "epochs ≥ 0, batch_size ≥ 2, lr > 0 and clip_grad_norm ≥ 0 are required")


class Student(nn.Module):
    """A random-weight expert made trainable: every parameter learns and BatchNorm trains."""

    def __init__(self, expert: Expert, last_hint: int | None = None) -> None:
        super().__init__()
        self.net = expert
        if last_hint is not None:
            _truncate(expert, last_hint)
        for p in self.net.parameters():
            p.requires_grad_(True)
        self.net.to(memory_format=torch.channels_last)  # 3–5× faster depthwise convs on CPU (oneDNN)

    def train(self, mode: bool = True) -> "Student":
        self.training = mode
        nn.Module.train(self.net, mode)  # bypass Expert.train, which always stays in eval mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x.contiguous(memory_format=torch.channels_last))


def _truncate(expert: Expert, last_hint: int) -> None:
    """Drop the layers after hint ``last_hint`` (they cost time and never reach the loss); experts
    of unknown structure are left whole."""
    body = getattr(expert, "body", None)
    stage_out = getattr(body, "_stage_out_idx", None)  # timm EfficientNetFeatures: {stage: output #}
    if isinstance(stage_out, dict) and isinstance(getattr(body, "blocks", None), nn.Sequential):
        stages = sorted(stage_out)
        if 0 not in stages and last_hint < len(stages):
            body.blocks = body.blocks[:stages[last_hint]]  # output after block i is taken when i + 1 ∈ stages
        return
    features, taps = getattr(expert, "features", None), getattr(expert, "hint_indices", None)
    if isinstance(features, nn.Sequential) and taps is not None and last_hint < len(taps):
        expert.features = features[:taps[last_hint] + 1]


def _random_name(expert: str) -> str:
    """The registry name of ``expert``'s architecture with random weights."""
    return expert if expert.endswith("_random") else expert + "_random"


def _layer_maps(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer ½‖f̂_t − f̂_s‖² at every position: [N, h_l, w_l] each."""
    return [0.5 * (F.normalize(s, dim=1) - F.normalize(t, dim=1)).pow(2).sum(dim=1)
            for s, t in zip(student, teacher, strict=True)]


class STFPM(Detector):
    def __init__(self, config: STFPMConfig) -> None:
        super().__init__(config)
        self._hints = ExpertHints(config.expert, config.expert_weights, config.normalize)
        self._template = build_expert(_random_name(config.expert))  # the student's architecture
        n = len(self._template.hints)
        for i in config.hint_indices:
            require(0 <= i < n, f"hint index {i} out of range: {config.expert} has {n} hints")

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self._template.preprocess(images, self.config.normalize)

    def _student(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.student_(x)
        return [out[i] for i in self.config.hint_indices]

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "STFPM":
        cfg = self.config
        images = check_images(images)
        require(len(images) >= 2, "STFPM needs at least 2 training images")
        rng = seed_everything(seed)
        teacher = self._hints(images, hints, cfg.hint_indices)  # may build (random) experts: uses the RNG
        # the architecture's own random initialisation, drawn from the seed whether or not the line
        # above consumed random numbers (and different from a random-weight teacher built from ``seed``)
        torch.manual_seed(int(rng.integers(2 ** 62)))
        self.student_ = Student(build_expert(_random_name(cfg.expert)), last_hint=max(cfg.hint_indices))
        opt = torch.optim.SGD(self.student_.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        self.history_ = []
        self.student_.train()
        n = len(images)
        for epoch in range(cfg.epochs):
            total = 0.0
            order = torch.randperm(n, generator=gen)
            for i in range(0, n, cfg.batch_size):
                idx = order[i:i + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm cannot train on one image
                    continue
                maps = _layer_maps(self._student(self._preprocess(images[idx])), [t[idx] for t in teacher])
                loss = sum(m.mean(dim=(1, 2)) for m in maps).mean()
                if not torch.isfinite(loss):
                    raise RuntimeError(f"STFPM loss became {loss.item()} at epoch {epoch + 1} (lr={cfg.lr})")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.student_.parameters(), cfg.clip_grad_norm)
                opt.step()
                total += loss.item() * len(idx)
            self.history_.append(total / n)
        self.student_.eval()
        return self

    @torch.inference_mode()
    def anomaly_map(self, images: torch.Tensor, *, hints=None, batch: int = 128) -> np.ndarray:
        images = check_images(images)
        teacher = self._hints(images, hints, self.config.hint_indices)
        size = tuple(images.shape[-2:])
        self.student_.eval()
        out = []
        for i in range(0, len(images), batch):
            maps = _layer_maps(self._student(self._preprocess(images[i:i + batch])), [t[i:i + batch] for t in teacher])
            prod = torch.ones(len(maps[0]), *size)
            for m in maps:
                prod = prod * resize_maps(m, size)
            out.append(prod)
        return (torch.cat(out) if out else torch.zeros(0, *size)).numpy().astype(np.float32)

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        maps = self.anomaly_map(images, hints=hints)
        return maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)


register_method(MethodSpec("stfpm", STFPMConfig, STFPM, localizes=True, expert_field="expert",
                           description="Student-Teacher Feature Pyramid Matching (Wang et al. 2021), "
                                       "student = randomly initialised copy of the expert"))
