"""Convolutional autoencoders trained on normal images: per-pixel L2 (``ae_l2``) or SSIM (``ae_ssim``).

Bergmann, Löwe, Fauser, Sattlegger & Steger, "Improving Unsupervised Defect Segmentation by Applying
Structural Similarity to Autoencoders", VISAPP 2019 — the SSIM-AE and its L2 counterpart.

* training loss: mean squared error (``loss: l2``) or 1 − mean SSIM (``loss: ssim``), SSIM with an
  11×11 Gaussian window, σ = 1.5, C1 = 0.01², C2 = 0.03² for data range 1 (Wang et al. 2004's
  constants, the paper's window size 11);
* anomaly map: per-pixel squared error averaged over channels (l2), or 1 − the local SSIM map
  (ssim; same window, averaged over channels; equal to :func:`skimage.metrics.structural_similarity`'s
  map, tested, but computed with torch on the method's device);
* image score: the mean of the map.

Architecture (ours, for inputs whose sides are divisible by 8): encoder = three 4×4 stride-2 convs
(``widths`` 16, 32, 64 channels; the paper's layers have 32–128 filters, halved here for CPU speed:
~4× fewer multiply-adds), each followed by LeakyReLU(0.2) as in the paper, then a linear 3×3 conv
to ``latent_channels`` = 16 channels at stride 8 (4×4×16 = 256 numbers for a 32×32 image,
8×8×16 for 64×64: a 4–12× bottleneck); decoder mirrors it with transposed convs and a
sigmoid output. The paper's network is deeper (128×128 patches, 9 conv layers, a 100-d dense
bottleneck); with 32–64 px inputs a stride-8 spatial bottleneck plays the same role.

Optimisation: Adam with weight decay 1e-5 as in the paper (which trains 200 epochs with lr 2e-4 on
thousands of augmented patches); here lr 1e-3, batch 64, no augmentation, and ``epochs`` = 100,
chosen from the *training loss* alone (no labels, no test split; ``benchmarks/baseline_budgets.py``
records it per epoch): on 400 images of a class (7 steps an epoch) the loss falls by < 1 % per
epoch from epoch 44 (L2) / 58 (SSIM); on 200 texture tiles (4 steps an epoch) it first sits at the
mean-image plateau for ~10–30 epochs, then falls, by < 1 % per epoch from epoch ~74 (SSIM, 64 px).
On 6,000 images (94 steps an epoch) the L2 loss falls by < 2 % per epoch from epoch 17: fewer
epochs suffice there (``overrides: {ae_l2: {epochs: 20}}``). Detection at these budgets on
development data: ``python -m benchmarks.baseline_budgets --dataset fashion_mnist --method ae_l2 ...``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from baselines._common import check_images, cpu_state, pixels01, require, run_name, seed_everything
from kdad.methods import Detector, MethodSpec, register_method, resume_fingerprint
from kdad.training import train

LOSSES = ("l2", "ssim")


@dataclass
class AEConfig:
    """Convolutional autoencoder (Bergmann et al. 2019); see the module docstring for the sources."""

    loss: str = "l2"                       # l2 | ssim
    epochs: int = 100                      # small sets need it (module docstring); 6,000 images: ~20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    widths: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 16
    ssim_window: int = 11
    ssim_sigma: float = 1.5

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        require(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        require(len(self.widths) == 3, "widths must list 3 channel counts (three stride-2 stages)")
        require(self.epochs >= 1 and self.batch_size >= 1 and self.lr > 0, "epochs ≥ 1, batch_size ≥ 1, lr > 0")
        require(self.ssim_window % 2 == 1 and self.ssim_window >= 3, "ssim_window must be odd and ≥ 3")


@dataclass
class AESSIMConfig(AEConfig):
    loss: str = "ssim"


class ConvAE(nn.Module):
    def __init__(self, channels: int, widths: tuple[int, ...], latent: int) -> None:
        super().__init__()
        a, b, c = widths
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, a, 4, 2, 1), act(),
            nn.Conv2d(a, b, 4, 2, 1), act(),
            nn.Conv2d(b, c, 4, 2, 1), act(),
            nn.Conv2d(c, latent, 3, 1, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, c, 3, 1, 1), act(),
            nn.ConvTranspose2d(c, b, 4, 2, 1), act(),
            nn.ConvTranspose2d(b, a, 4, 2, 1), act(),
            nn.ConvTranspose2d(a, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    g = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-g.pow(2) / (2 * sigma ** 2))
    return g / g.sum()


def _symmetric_pad(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad H and W by ``pad`` mirroring about the edge, the edge pixel repeated (…c b a | a b c…)."""
    if pad > min(t.shape[-2:]):
        raise ValueError(f"SSIM window radius {pad} exceeds the image size {tuple(t.shape[-2:])}")
    t = torch.cat([t[..., :pad].flip(-1), t, t[..., -pad:].flip(-1)], dim=-1)
    return torch.cat([t[..., :pad, :].flip(-2), t, t[..., -pad:, :].flip(-2)], dim=-2)


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
             data_range: float = 1.0) -> torch.Tensor:
    """Differentiable local SSIM [N, C, H, W] (Wang et al. 2004) with a separable Gaussian window,
    population (co)variances and half-sample symmetric padding (scipy's "reflect", as in
    :func:`skimage.metrics.structural_similarity`); channels are treated independently."""
    c = x.shape[1]
    g = _gaussian_window(window, sigma).to(x)
    k = 5 * c  # the five local moments of every channel, filtered in one grouped convolution
    stats = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    stats = _symmetric_pad(stats, window // 2)
    stats = F.conv2d(stats, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)
    stats = F.conv2d(stats, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
    mx, my, xx, yy, xy = stats.split(c, dim=1)
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


class Autoencoder(Detector):
    @property
    def name(self) -> str:
        return f"ae_{self.config.loss}"

    def _loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "l2":
            return F.mse_loss(recon, x)
        return 1.0 - ssim_map(recon, x, self.config.ssim_window, self.config.ssim_sigma).mean()

    def _build(self, channels: int) -> ConvAE:
        return ConvAE(channels, self.config.widths, self.config.latent_channels).to(self.device)

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "Autoencoder":
        cfg = self.config
        images = check_images(images)
        h, w = images.shape[-2:]
        require(h % 8 == 0 and w % 8 == 0, f"the autoencoder needs sides divisible by 8, got {h}×{w}")
        seed_everything(seed)  # the initial weights come from the seed
        self.channels_ = int(images.shape[1])
        self.net_ = self._build(self.channels_)
        opt = torch.optim.Adam(self.net_.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        x_all = pixels01(images)

        def step(idx: torch.Tensor) -> torch.Tensor:
            x = x_all[idx].to(self.device, non_blocking=True)
            return self._loss(self.net_(x), x)

        self.history_ = train({"net": self.net_}, opt, step, len(x_all), epochs=cfg.epochs, batch_size=cfg.batch_size,
                              seed=seed, what=run_name(self, seed), checkpoint=checkpoint,
                              fingerprint=resume_fingerprint(self.name, cfg, seed, len(x_all)), lr_hint=cfg.lr)
        self.net_.eval()
        return self

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs in [0, 1], reconstructions), both on ``self.device``."""
        x = pixels01(check_images(images)).to(self.device)
        self.net_.eval()
        return x, torch.cat([self.net_(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else x

    @torch.inference_mode()
    def anomaly_map(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        x, r = self.reconstruct(images)
        if self.config.loss == "l2":
            maps = (x - r).pow(2).mean(dim=1)
        else:  # 1 − local SSIM (equal to skimage's structural_similarity map, tested), channel mean
            maps = 1.0 - ssim_map(r.double(), x.double(), self.config.ssim_window, self.config.ssim_sigma).mean(dim=1)
        return maps.float().cpu().numpy()

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        return self.anomaly_map(images).reshape(len(images), -1).mean(axis=1).astype(np.float64)

    # the network is stored as a state dict (not a pickled module); its shape comes from the config
    def fitted_state(self) -> dict:
        return {"net_": cpu_state(self.net_), "channels_": self.channels_, "history_": self.history_}

    def load_fitted_state(self, state: dict) -> None:
        self.channels_ = state["channels_"]
        self.net_ = self._build(self.channels_)
        self.net_.load_state_dict(state["net_"])
        self.net_.eval()
        self.history_ = state.get("history_", [])


register_method(MethodSpec("ae_l2", AEConfig, Autoencoder, localizes=True, expert_field=None,
                           description="Convolutional autoencoder, per-pixel L2 residual (Bergmann et al. 2019)"))
register_method(MethodSpec("ae_ssim", AESSIMConfig, Autoencoder, localizes=True, expert_field=None,
                           description="Convolutional SSIM autoencoder, 1 - local SSIM map (Bergmann et al. 2019)"))
