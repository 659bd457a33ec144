"""One-class Deep SVDD (Ruff, Vandermeulen, Görnitz, Deecke, Siddiqui, Binder, Müller & Kloft,
"Deep One-Class Classification", ICML 2018).

A CNN φ without bias terms, with batch normalisation without affine parameters (eps 1e-4) and
leaky ReLUs (the paper's choices, which rule out the trivial constant solution), is trained on
normal images to minimise mean ‖φ(x) − c‖² plus weight decay; c = mean of the *initial* network's
outputs on the training set, with coordinates closer to 0 than ``center_eps`` pushed to ±eps
(a near-zero coordinate of c can be matched by zero weights). Score = ‖φ(x) − c‖².

Architectures (the paper's, chosen by the number of input channels with ``architecture: auto``):

* ``mnist`` (grey inputs): conv 5×5 ×8 → BN → LReLU → maxpool 2 → conv 5×5 ×4 → BN → LReLU →
  maxpool 2 → dense to ``rep_dim`` = 32;
* ``cifar`` (RGB inputs): conv 5×5 ×32, ×64, ×128, each with BN, LReLU, maxpool 2 → dense to 128.

The dense layer's input size follows the image size (the paper uses 28×28 / 32×32 images).

Optimisation (paper): Adam, lr 1e-4, weight decay λ = 1e-6, batch size 200. The paper trains
150 + 100 epochs (lr 1e-4, then 1e-5) after pretraining φ as the encoder of a deep convolutional
autoencoder (250 + 100 epochs) and preprocesses with global contrast normalisation. The benchmark's
defaults are deliberately cheaper: ``epochs`` = 20 at lr 1e-4, **no** autoencoder pretraining
(``pretrain_epochs`` = 0; any value > 0 pretrains the encoder with a mirrored decoder on the MSE
loss with the same optimiser settings before c is computed) and pixels scaled to [0, 1] without
global contrast normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines._common import check_images, pixels01, require, seed_everything
from kdad.methods import Detector, MethodSpec, register_method

ARCHITECTURES = {"mnist": ((8, 4), 32), "cifar": ((32, 64, 128), 128)}


@dataclass
class DeepSVDDConfig:
    """One-class Deep SVDD (Ruff et al. 2018); see the module docstring for sources and deviations."""

    architecture: str = "auto"            # auto (mnist for grey, cifar for RGB) | mnist | cifar
    epochs: int = 20
    pretrain_epochs: int = 0              # autoencoder pretraining epochs (paper: 250 + 100)
    batch_size: int = 200
    lr: float = 1e-4
    weight_decay: float = 1e-6
    center_eps: float = 0.1

    def __post_init__(self) -> None:
        require(self.architecture in ("auto", *ARCHITECTURES),
                f"architecture must be auto, mnist or cifar, got {self.architecture!r}")
        require(self.epochs >= 0 and self.pretrain_epochs >= 0, "epochs and pretrain_epochs must be ≥ 0")
        require(self.batch_size >= 2 and self.lr > 0 and self.center_eps >= 0,
                "batch_size ≥ 2, lr > 0 and center_eps ≥ 0 are required")


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
    def __init__(self, config: DeepSVDDConfig) -> None:
        super().__init__(config)

    def _batches(self, n: int, gen: torch.Generator):
        order = torch.randperm(n, generator=gen)
        b = self.config.batch_size
        for i in range(0, n, b):
            idx = order[i:i + b]
            if len(idx) >= 2 or n < 2:  # BatchNorm in training mode needs two samples
                yield idx

    def _optimiser(self, params):
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "DeepSVDD":
        cfg = self.config
        images = check_images(images)
        require(len(images) >= 2, "Deep SVDD needs at least 2 training images")
        arch = cfg.architecture if cfg.architecture != "auto" else ("mnist" if images.shape[1] == 1 else "cifar")
        widths, rep_dim = ARCHITECTURES[arch]
        h, w = images.shape[-2:]
        k = 2 ** len(widths)
        require(h % k == 0 and w % k == 0, f"the {arch} network needs sides divisible by {k}, got {h}×{w}")
        seed_everything(seed)
        gen = torch.Generator().manual_seed(seed)
        x_all = pixels01(images)
        self.net_ = Encoder(images.shape[1], (h, w), widths, rep_dim)
        self.history_ = {"pretrain": [], "train": []}

        if cfg.pretrain_epochs > 0:
            decoder = Decoder(images.shape[1], self.net_.shape, widths, rep_dim)
            ae = nn.Sequential(self.net_, decoder).train()
            opt = self._optimiser(ae.parameters())
            for _ in range(cfg.pretrain_epochs):
                total = 0.0
                for idx in self._batches(len(x_all), gen):
                    loss = F.mse_loss(ae(x_all[idx]), x_all[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(idx)
                self.history_["pretrain"].append(total / len(x_all))

        # centre: mean output of the (initial or pretrained) network, training-mode BN as in the loss
        self.net_.train()
        with torch.no_grad():
            out = torch.cat([self.net_(x_all[idx]) for idx in self._batches(len(x_all), gen)])
        c = out.mean(dim=0)
        eps = cfg.center_eps
        c[(c.abs() < eps) & (c < 0)] = -eps
        c[(c.abs() < eps) & (c >= 0)] = eps
        self.center_ = c

        opt = self._optimiser(self.net_.parameters())
        for epoch in range(cfg.epochs):
            total = 0.0
            for idx in self._batches(len(x_all), gen):
                loss = (self.net_(x_all[idx]) - c).pow(2).sum(dim=1).mean()
                if not torch.isfinite(loss):
                    raise RuntimeError(f"Deep SVDD loss became {loss.item()} at epoch {epoch + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            self.history_["train"].append(total / len(x_all))
        self.net_.eval()
        return self

    @torch.inference_mode()
    def score(self, images: torch.Tensor, *, hints=None, batch: int = 512) -> np.ndarray:
        x = pixels01(check_images(images))
        self.net_.eval()
        d = [(self.net_(x[i:i + batch]) - self.center_).pow(2).sum(dim=1) for i in range(0, len(x), batch)]
        return (torch.cat(d) if d else torch.zeros(0)).double().numpy()


register_method(MethodSpec("deep_svdd", DeepSVDDConfig, DeepSVDD, localizes=False, expert_field=None,
                           description="One-class Deep SVDD (Ruff et al. 2018), LeNet-type CNN, no AE "
                                       "pretraining by default"))
