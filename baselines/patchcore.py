"""PatchCore (Roth, Pemula, Zepeda, Schölkopf, Brox & Gehler, "Towards Total Recall in Industrial
Anomaly Detection", CVPR 2022).

* Locally aware patch features: the frozen expert's mid-level hints ``hint_indices`` (default
  (1, 2), strides 8 and 16 — the paper's ResNet blocks 2 and 3), each averaged over its 3×3
  neighbourhood (``neighbourhood`` = p = 3, stride 1, borders averaged over the valid cells), the
  coarser ones bilinearly upsampled to the finest one's resolution, concatenated per position.
  (The paper additionally average-pools every layer's channels to a fixed dimension; here the
  concatenation is kept as it is — at most a few hundred channels with the benchmark's experts.)
* Memory bank: greedy k-centre coreset (paper Alg. 1) of all training patches with sampling ratio
  ``coreset_ratio`` = 0.1 (paper: 1–10 %; 10 % for its smaller benchmarks), the first centre drawn
  from ``seed``. Distances for the selection are computed after a random Gaussian projection to
  ``projection_dims`` = 128 dims (Johnson–Lindenstrauss, as in the paper) when the features are wider;
  the bank keeps the full features.
* Anomaly map: Euclidean distance of every test patch to its nearest bank patch, bilinearly upsampled
  to the input size and smoothed with a Gaussian, σ = 4 (paper). Image score: the maximum patch
  distance s* (before upsampling). The paper's reweighting of s* by the density of the bank around
  the nearest bank patch m* (Eq. 7: s = (1 − e^{‖m^test − m*‖} / Σ_{m ∈ N_b(m*)} e^{‖m^test − m‖}) s*)
  is implemented but off by default (``reweight: false``); ``reweight_neighbours`` = b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from baselines._common import (ExpertHints, check_images, chunked_min_dist, gaussian_blur, require,
                               resize_maps, seed_everything)
from kdad.methods import Detector, MethodSpec, register_method


@dataclass
class PatchCoreConfig:
    """PatchCore (Roth et al. 2022); see the module docstring for the sources."""

    hint_indices: tuple[int, ...] = (1, 2)
    neighbourhood: int = 3
    coreset_ratio: float = 0.1
    projection_dims: int = 128            # 0 = select the coreset on the full features
    blur_sigma: float = 4.0
    reweight: bool = False
    reweight_neighbours: int = 9
    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self.hint_indices = tuple(self.hint_indices)
        require(len(self.hint_indices) > 0, "hint_indices must not be empty")
        require(self.neighbourhood >= 1 and self.neighbourhood % 2 == 1, "neighbourhood must be odd and ≥ 1")
        require(0 < self.coreset_ratio <= 1, f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        require(self.projection_dims >= 0 and self.blur_sigma >= 0 and self.reweight_neighbours >= 1,
                "projection_dims ≥ 0, blur_sigma ≥ 0 and reweight_neighbours ≥ 1 are required")


def greedy_coreset(x: torch.Tensor, k: int, start: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``x`` chosen by greedy k-centre (farthest-point) selection from ``start``."""
    k = min(k, len(x))
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = start
    # squared distances ‖x‖² − 2 x·c + ‖c‖² (same argmax; one matrix–vector product per pick,
    # ~20× faster than forming x − c)
    sq = x.pow(2).sum(dim=1)
    min_d = torch.addmv(sq, x, x[start], alpha=-2.0) + sq[start]
    for j in range(1, k):
        nxt = int(torch.argmax(min_d))
        chosen[j] = nxt
        torch.minimum(min_d, torch.addmv(sq, x, x[nxt], alpha=-2.0) + sq[nxt], out=min_d)
    return chosen


class PatchCore(Detector):
    def __init__(self, config: PatchCoreConfig) -> None:
        super().__init__(config)
        self._hints = ExpertHints(config.expert, config.expert_weights, config.normalize)

    def _patches(self, images, hints) -> torch.Tensor:
        """Locally aware patch features [N, D, h, w] at the finest chosen hint's resolution."""
        feats = self._hints(check_images(images), hints, self.config.hint_indices)
        p = self.config.neighbourhood
        feats = [F.avg_pool2d(f, p, stride=1, padding=p // 2, count_include_pad=False) if p > 1 else f
                 for f in feats]
        size = max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
        feats = [f if f.shape[-2:] == size else
                 F.interpolate(f, size=tuple(size), mode="bilinear", align_corners=False) for f in feats]
        return torch.cat(feats, dim=1)

    @torch.inference_mode()
    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "PatchCore":
        cfg = self.config
        rng = seed_everything(seed)
        feats = self._patches(images, hints)
        x = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).contiguous()
        require(len(x) > 0, "no training patches")
        k = max(1, math.ceil(cfg.coreset_ratio * len(x)))
        if k >= len(x):
            self.bank_ = x
        else:
            sel = x
            if 0 < cfg.projection_dims < x.shape[1]:
                gen = torch.Generator().manual_seed(seed)
                proj = torch.randn(x.shape[1], cfg.projection_dims, generator=gen) / math.sqrt(cfg.projection_dims)
                sel = x @ proj
            self.bank_ = x[greedy_coreset(sel, k, int(rng.integers(len(x))))].clone()
        return self

    @torch.inference_mode()
    def _distances(self, images, hints) -> tuple[torch.Tensor, torch.Tensor]:
        """(nearest-bank distances [N, h, w], image scores [N])."""
        feats = self._patches(images, hints)
        n, d, h, w = feats.shape
        q = feats.permute(0, 2, 3, 1).reshape(-1, d)
        dist = chunked_min_dist(q, self.bank_).view(n, h * w)
        scores = dist.max(dim=1)
        s = scores.values
        if self.config.reweight and len(self.bank_) > 1 and n > 0:
            s = self._reweight(q.view(n, h * w, d)[torch.arange(n), scores.indices], s)
        return dist.view(n, h, w), s

    def _reweight(self, worst: torch.Tensor, s_star: torch.Tensor) -> torch.Tensor:
        """Paper Eq. 7 for the most anomalous patch of every image (``worst`` [N, D], distances ``s_star``)."""
        b = min(self.config.reweight_neighbours, len(self.bank_))
        nearest = torch.cdist(worst, self.bank_).argmin(dim=1)                            # m*
        hood = torch.cdist(self.bank_[nearest], self.bank_).topk(b, largest=False).indices  # N_b(m*)
        d_hood = torch.linalg.vector_norm(worst[:, None] - self.bank_[hood], dim=2)       # ‖m_test − m‖
        ratio = torch.exp(s_star - torch.logsumexp(d_hood, dim=1))
        return (1.0 - ratio) * s_star

    def anomaly_map(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        images = check_images(images)
        dist, _ = self._distances(images, hints)
        maps = resize_maps(dist, tuple(images.shape[-2:])).numpy().astype(np.float32)
        return gaussian_blur(maps, self.config.blur_sigma).astype(np.float32)

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        return self._distances(check_images(images), hints)[1].double().numpy()


register_method(MethodSpec("patchcore", PatchCoreConfig, PatchCore, localizes=True, expert_field="expert",
                           description="PatchCore (Roth et al. 2022): 10% greedy coreset of locally aware "
                                       "mid-level expert patches, nearest-neighbour distance"))
