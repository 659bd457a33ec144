"""One-class Deep SVDD (Ruff, Vandermeulen, Görnitz, Deecke, Siddiqui, Binder, Müller & Kloft,
"Deep One-Class Classification", ICML 2018).

A CNN φ without bias terms, with batch normalisation without affine parameters (eps 1e-4) and
leaky ReLUs (the paper's choices, which rule out the trivial constant solution), is trained on
normal images to minimise mean ‖φ(x) − c‖² plus weight decay; c = mean of the (pretrained)
network's outputs on the training set, with coordinates closer to 0 than ``center_eps`` pushed to ±eps
(a near-zero coordinate of c can be matched by zero weights). Score = ‖φ(x) − c‖².

Architectures (the paper's, chosen by the number of input channels with ``architecture: auto``):

* ``mnist`` (grey inputs): conv 5×5 ×8 → BN → LReLU → maxpool 2 → conv 5×5 ×4 → BN → LReLU →
  maxpool 2 → dense to ``rep_dim`` = 32;
* ``cifar`` (RGB inputs): conv 5×5 ×32, ×64, ×128, each with BN, LReLU, maxpool 2 → dense to 128.

The dense layer's input size follows the image size (the paper uses 28×28 / 32×32 images).

Preprocessing (paper): global contrast normalisation with the L1 norm per image, then min–max
scaling with the extremes of the training set (``gcn``). Pretraining (paper): φ as the encoder of
a convolutional autoencoder (a mirrored decoder, the authors' loss Σ_pixels (x̂ − x)²), then c.
c is computed in eval mode, as the authors' code does.

Optimisation (paper): Adam, lr 1e-4, weight decay λ = 1e-6, batch size 200, 250 + 100 epochs of
pretraining and 150 + 100 epochs of Deep SVDD (lr 1e-4, then 1e-5). Here: lr 1e-3 in both phases
(``pretrain_lr``, ``lr``; no milestone), 30 + 30 epochs, chosen from the *training losses* alone
(no labels, no test split): on the 6,000 images of a Fashion-MNIST class at 32 px (~5–7 s per
pretraining epoch, ~2 s per SVDD epoch, 1 thread) the pretraining loss falls by < 2 % per epoch
after ~25 epochs and the SVDD loss levels off from epoch ~20; with the paper's lr 1e-4, 20 + 40
epochs left both losses falling steeply. With 400 images (2 steps an epoch) 60 + 60 epochs are
needed for the losses to fall < 1 % per epoch (from epochs 42 / 52). On 200 texture tiles at 64 px
one pretraining epoch costs ~10 s: this method needs far more than a small budget there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines._common import check_images, cpu_state, pixels01, require, run_name, seed_everything
from kdad.methods import Detector, MethodSpec, register_method, resume_fingerprint
from kdad.training import train

ARCHITECTURES = {"mnist": ((8, 4), 32), "cifar": ((32, 64, 128), 128)}


@dataclass
class DeepSVDDConfig:
    """One-class Deep SVDD (Ruff et al. 2018); see the module docstring for sources and deviations."""

    architecture: str = "auto"            # auto (mnist for grey, cifar for RGB) | mnist | cifar
    epochs: int = 30                      # Deep SVDD epochs (paper: 150 + 100)
    pretrain_epochs: int = 30             # autoencoder pretraining epochs (paper: 250 + 100)
    batch_size: int = 200
    lr: float = 1e-3                      # paper 1e-4 (then 1e-5); see the module docstring
    pretrain_lr: float = 1e-3
    weight_decay: float = 1e-6
    center_eps: float = 0.1
    gcn: bool = True                      # global contrast normalisation (L1) + training min–max scaling

    def __post_init__(self) -> None:
        require(self.architecture in ("auto", *ARCHITECTURES),
                f"architecture must be auto, mnist or cifar, got {self.architecture!r}")
        require(self.epochs >= 1 and self.pretrain_epochs >= 0, "epochs must be ≥ 1 and pretrain_epochs ≥ 0")
        require(self.batch_size >= 2 and self.lr > 0 and self.pretrain_lr > 0 and self.center_eps >= 0,
                "batch_size ≥ 2, lr > 0, pretrain_lr > 0 and center_eps ≥ 0 are required")


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-4, affine=False)


class Encoder(nn.Module):
    """φ: bias-free convs + affine-free BN + LeakyReLU + max-pooling, then a bias-free dense layer."""

    def __init__(self, in_channels: int, size: tuple[int, int], widths: tuple[int, ...], rep_dim: int) -> None:
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 5, padding=2, bias=False), _bn(w), nn.LeakyReLU(0.01), nn.MaxPool2d(2)]
            c = w
        self.conv = nn.Sequential(*layers)
        h, w = size[0] >> len(widths), size[1] >> len(widths)
        self.shape = (c, h, w)
        self.fc = nn.Linear(c * h * w, rep_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


class Decoder(nn.Module):
    """Mirror of :class:`Encoder` for pretraining: dense → reshape → (upsample, conv 5×5, BN,
    LReLU)* → conv → sigmoid."""

    def __init__(self, out_channels: int, shape: tuple[int, int, int], widths: tuple[int, ...], rep_dim: int) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = shape
        self.fc = nn.Linear(rep_dim, c * h * w, bias=False)
        layers = []
        for nxt in (*reversed(widths[:-1]), None):
            layers += [nn.Upsample(scale_factor=2, mode="nearest")]
            if nxt is None:
                layers += [nn.Conv2d(c, out_channels, 5, padding=2, bias=False), nn.Sigmoid()]
            else:
                layers += [nn.Conv2d(c, nxt, 5, padding=2, bias=False), _bn(nxt), nn.LeakyReLU(0.01)]
                c = nxt
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(F.leaky_relu(self.fc(z), 0.01).view(-1, *self.shape))


class DeepSVDD(Detector):
    name = "deep_svdd"

    def _optimiser(self, params, lr: float):
        return torch.optim.Adam(params, lr=lr, weight_decay=self.config.weight_decay)

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], then (``gcn``) global contrast normalisation with the L1 norm per image and
        min–max scaling with the training set's extremes (``scale_``), as the paper preprocesses."""
        x = pixels01(check_images(images))
        if self.config.gcn:
            x = x - x.mean(dim=(1, 2, 3), keepdim=True)
            x = x / x.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
            lo, hi = self.scale_
            x = (x - lo) / max(hi - lo, 1e-8)
        return x

    def _build(self) -> None:
        c, h, w = self.shape_
        widths, rep_dim = ARCHITECTURES[self.arch_]
        self.net_ = Encoder(c, (h, w), widths, rep_dim).to(self.device)

    @torch.no_grad()
    def _center(self, x_all: torch.Tensor, batch: int) -> torch.Tensor:
        """c = mean output of the (initial or pretrained) network in eval mode, as the authors' code
        does; coordinates closer to 0 than ``center_eps`` pushed to ±eps."""
        self.net_.eval()
        c = torch.cat([self.net_(x_all[i:i + batch].to(self.device)) for i in range(0, len(x_all), batch)]).mean(0)
        eps = self.config.center_eps
        c[(c.abs() < eps) & (c < 0)] = -eps
        c[(c.abs() < eps) & (c >= 0)] = eps
        return c

    def _distance(self, x: torch.Tensor) -> torch.Tensor:
        return (self.net_(x) - self.center_).pow(2).sum(dim=1)

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "DeepSVDD":
        cfg = self.config
        images = check_images(images)
        require(len(images) >= 2, "Deep SVDD needs at least 2 training images")
        self.arch_ = cfg.architecture if cfg.architecture != "auto" else ("mnist" if images.shape[1] == 1 else "cifar")
        widths, rep_dim = ARCHITECTURES[self.arch_]
        h, w = images.shape[-2:]
        k = 2 ** len(widths)
        require(h % k == 0 and w % k == 0, f"the {self.arch_} network needs sides divisible by {k}, got {h}×{w}")
        self.shape_ = (int(images.shape[1]), int(h), int(w))
        self.scale_ = (0.0, 1.0)
        if cfg.gcn:
            x = self._inputs(images)  # GCN with the identity scaling, then the training extremes
            self.scale_ = (float(x.min()), float(x.max()))
        x_all = self._inputs(images)
        n, what = len(x_all), run_name(self, seed)
        seed_everything(seed)
        self._build()
        fingerprint = resume_fingerprint(self.name, cfg, seed, n)
        self.history_ = []

        pre_ckpt = None if checkpoint is None else Path(checkpoint).with_name(Path(checkpoint).name + ".pretrain")
        if cfg.pretrain_epochs > 0:
            decoder = Decoder(self.shape_[0], self.net_.shape, widths, rep_dim).to(self.device)
            opt = self._optimiser([*self.net_.parameters(), *decoder.parameters()], cfg.pretrain_lr)

            def ae_step(idx: torch.Tensor) -> torch.Tensor:  # the authors' loss: Σ_pixels (x̂ − x)², batch mean
                x = x_all[idx].to(self.device, non_blocking=True)
                return (decoder(self.net_(x)) - x).pow(2).flatten(1).sum(dim=1).mean()

            # the pretraining's own fingerprint: more SVDD epochs reuse the same pretrained network
            pre_fp = resume_fingerprint(self.name, dataclasses.replace(cfg, epochs=1, pretrain_epochs=1), seed, n)
            self.history_ += train({"encoder": self.net_, "decoder": decoder}, opt, ae_step, n,
                                   epochs=cfg.pretrain_epochs, batch_size=cfg.batch_size, seed=seed, what=what,
                                   phase="pretrain", checkpoint=pre_ckpt, fingerprint=pre_fp + "-pretrain",
                                   lr_hint=cfg.pretrain_lr)

        self.center_ = self._center(x_all, cfg.batch_size)
        opt = self._optimiser(self.net_.parameters(), cfg.lr)

        def step(idx: torch.Tensor) -> torch.Tensor:
            return self.svdd_loss(x_all[idx].to(self.device, non_blocking=True))

        self.history_ += train({"encoder": self.net_}, opt, step, n, epochs=cfg.epochs, batch_size=cfg.batch_size,
                               seed=seed, what=what, phase="train", checkpoint=checkpoint,
                               fingerprint=fingerprint, lr_hint=cfg.lr)
        self.net_.eval()
        if pre_ckpt is not None:
            pre_ckpt.unlink(missing_ok=True)  # the runner removes ``checkpoint`` once the model is saved
        return self

    def svdd_loss(self, x: torch.Tensor) -> torch.Tensor:
        """One-class Deep SVDD objective of a batch: mean ‖φ(x) − c‖² (weight decay is the optimiser's)."""
        return self._distance(x).mean()

    @torch.inference_mode()
    def score(self, images: torch.Tensor, *, hints=None, batch: int = 512) -> np.ndarray:
        x = self._inputs(images)
        self.net_.eval()
        d = [self._distance(x[i:i + batch].to(self.device)).cpu() for i in range(0, len(x), batch)]
        return (torch.cat(d) if d else torch.zeros(0)).double().numpy()

    # the network is stored as a state dict (not a pickled module); its shape comes from arch_/shape_
    def fitted_state(self) -> dict:
        return {"net_": cpu_state(self.net_), "arch_": self.arch_, "shape_": self.shape_, "scale_": self.scale_,
                "center_": self.center_.detach().cpu(), "history_": self.history_}

    def load_fitted_state(self, state: dict) -> None:
        self.arch_, self.shape_, self.scale_ = state["arch_"], tuple(state["shape_"]), tuple(state["scale_"])
        self._build()
        self.net_.load_state_dict(state["net_"])
        self.net_.eval()
        self.center_ = state["center_"].to(self.device)
        self.history_ = state.get("history_", [])


register_method(MethodSpec("deep_svdd", DeepSVDDConfig, DeepSVDD, localizes=False, expert_field=None,
                           description="One-class Deep SVDD (Ruff et al. 2018), LeNet-type CNN, no AE "
                                       "pretraining by default"))
