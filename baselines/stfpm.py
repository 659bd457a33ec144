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

Optimisation: SGD, lr 0.4, momentum 0.9, weight decay 1e-4, batch size 32 — the paper's values
(anomalib uses weight decay 1e-3). The loss is *summed* over the batch's images for the gradient,
as the official code and anomalib do (``MSELoss(reduction="sum")``): a per-image mean would make
the step 32× smaller than the one lr 0.4 was chosen for. The training history records the
per-image mean. This large step was stable for a randomly initialised EfficientNet-Lite0 student
on Fashion-MNIST at 32 px and texture tiles at 64 and 128 px; ``clip_grad_norm`` > 0 (not in the
paper) clips each step's gradient norm should another expert or dataset diverge.

Epochs: ``epochs`` = 100, the paper's. At 128 px one epoch of 200 tiles costs 4–5 s on one
thread; a smaller budget for a run is chosen on development data (``textures_dev``:
``python -m benchmarks.baseline_budgets --dataset textures_dev --method stfpm ...``), never on a
test split. Refitting on features
perturbed at float16 precision (``tests/stability.py``; textures brick, 64 px) moved the image
AUROC by 1.6 points after 2 epochs, 0.67 after 20 and 0.54 after 60: SGD at lr 0.4 turns last-bit
differences into another student, a spread of the order of a seed's, so report several seeds.
The teacher sees exactly the input of the hints (the expert's preprocessing with ``normalize``),
and so does the student.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines._common import (ExpertHints, check_images, cpu_state, mean_value_sum_gradient, require, resize_maps,
                               run_name, seed_everything)
from kdad.experts import Expert, build_expert, expert_class
from kdad.methods import Detector, MethodSpec, register_method, resume_fingerprint
from kdad.training import train


@dataclass
class STFPMConfig:
    """STFPM (Wang et al. 2021); see the module docstring for the sources and the one addition."""

    hint_indices: tuple[int, ...] = (0, 1, 2)
    epochs: int = 100                     # the paper's; see the module docstring for measured budgets
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
        require(self.epochs >= 1 and self.batch_size >= 2 and self.lr > 0 and self.clip_grad_norm >= 0,
                "epochs ≥ 1, batch_size ≥ 2, lr > 0 and clip_grad_norm ≥ 0 are required")


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
    name = "stfpm"

    def __init__(self, config: STFPMConfig) -> None:
        super().__init__(config)
        self._hints = ExpertHints(config.expert, config.expert_weights, config.normalize)
        n = len(expert_class(config.expert).hints)
        for i in config.hint_indices:
            require(0 <= i < n, f"hint index {i} out of range: {config.expert} has {n} hints")
        self._arch: Expert | None = None

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if self._arch is None:  # the architecture's preprocessing (mean/std), built once
            self._arch = build_expert(_random_name(self.config.expert))
        return self._arch.preprocess(images.to(self.device, non_blocking=True), self.config.normalize)

    def _new_student(self) -> Student:
        return Student(build_expert(_random_name(self.config.expert)),
                       last_hint=max(self.config.hint_indices)).to(self.device)

    def _student(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.student_(x)
        return [out[i] for i in self.config.hint_indices]

    def per_image_loss(self, images: torch.Tensor, teacher: list[torch.Tensor]) -> torch.Tensor:
        """Paper Eq. 1–2 for every image of a batch: Σ_l mean_ij ½‖f̂_t − f̂_s‖² → [N]."""
        maps = _layer_maps(self._student(self._preprocess(images)), teacher)
        return sum(m.mean(dim=(1, 2)) for m in maps)

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "STFPM":
        cfg = self.config
        images = check_images(images)
        require(len(images) >= 2, "STFPM needs at least 2 training images")
        rng = seed_everything(seed)
        teacher = [t.to(self.device) for t in self._hints(images, hints, cfg.hint_indices)]  # may build experts
        # the architecture's own random initialisation, drawn from the seed whether or not the line
        # above consumed random numbers (and different from a random-weight teacher built from ``seed``)
        torch.manual_seed(int(rng.integers(2 ** 62)))
        self.student_ = self._new_student()
        opt = torch.optim.SGD(self.student_.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)

        def step(idx: torch.Tensor) -> torch.Tensor:
            dev_idx = idx.to(self.device)
            return mean_value_sum_gradient(self.per_image_loss(images[idx], [t[dev_idx] for t in teacher]))

        self.history_ = train({"student": self.student_}, opt, step, len(images), epochs=cfg.epochs,
                              batch_size=cfg.batch_size, seed=seed, what=run_name(self, seed),
                              checkpoint=checkpoint, fingerprint=resume_fingerprint(self.name, cfg, seed, len(images)),
                              clip_grad_norm=cfg.clip_grad_norm, lr_hint=cfg.lr)
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
            maps = _layer_maps(self._student(self._preprocess(images[i:i + batch])),
                               [t[i:i + batch].to(self.device) for t in teacher])
            prod = torch.ones(len(maps[0]), *size, device=self.device)
            for m in maps:
                prod = prod * resize_maps(m, size)
            out.append(prod.cpu())
        return (torch.cat(out) if out else torch.zeros(0, *size)).numpy().astype(np.float32)

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        maps = self.anomaly_map(images, hints=hints)
        return maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)

    # the student is stored as a state dict (not a pickled module): its architecture is the expert's
    def fitted_state(self) -> dict:
        return {"student_": cpu_state(self.student_), "history_": self.history_}

    def load_fitted_state(self, state: dict) -> None:
        self.student_ = self._new_student()
        self.student_.load_state_dict(state["student_"])
        self.student_.eval()
        self.history_ = state.get("history_", [])


register_method(MethodSpec("stfpm", STFPMConfig, STFPM, localizes=True, expert_field="expert",
                           description="Student-Teacher Feature Pyramid Matching (Wang et al. 2021), "
                                       "student = randomly initialised copy of the expert"))
