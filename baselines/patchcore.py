"""PatchCore (Roth, Pemula, Zepeda, Schölkopf, Brox & Gehler, "Towards Total Recall in Industrial
Anomaly Detection", CVPR 2022).

The defaults are anomalib's (v2.7.0, the implementation most people run; checked against it by
``benchmarks/reference_check.py``), which follow the paper:

* Locally aware patch features (``aggregation: anomalib``): the frozen expert's mid-level hints
  ``hint_indices`` (default (1, 2), strides 8 and 16 — the paper's ResNet blocks 2 and 3; anomalib's
  ``layer2``, ``layer3``), each average-pooled over its 3×3 neighbourhood (``neighbourhood`` = p = 3,
  stride 1, zero padding counted in the mean at the border, as ``torch.nn.AvgPool2d(3, 1, 1)``),
  the others bilinearly upsampled to the *first* listed hint's resolution, concatenated per position.
  (The paper's own code additionally average-pools every layer's channels to a fixed dimension;
  anomalib, and this, keep the concatenation — a few hundred channels with the benchmark's experts.)
  The variant ``aggregation: valid`` is kdad's earlier one: border cells averaged over the valid
  cells only (``count_include_pad=False``), upsampling to the finest hint.
* Memory bank: greedy k-centre coreset (paper Alg. 1) of all training patches with sampling ratio
  ``coreset_ratio`` = 0.1 (anomalib's default; paper: 1–10 %), ⌊ratio · n⌋ patches (at least one), the
  first centre drawn from ``seed``. Distances for the selection are computed after a random Gaussian
  projection to ``projection_dims`` = 128 dims (the paper's code; anomalib projects sparsely to the
  Johnson–Lindenstrauss dimension) when the features are wider; the bank keeps the full features.
* Image score (paper Eq. 6–7, anomalib's ``num_neighbors`` = 9): the largest nearest-bank distance
  s* of the image's patches, reweighted by the density of the bank around that patch's nearest bank
  patch m*: s = (1 − e^{‖m^test,* − m*‖} / Σ_{m ∈ N_b(m*)} e^{‖m^test,* − m‖}) s*, with N_b(m*) the
  b = ``reweight_neighbours`` nearest bank patches of m* (m* itself included, as anomalib has it).
  ``reweight: false`` scores s* alone.
* Anomaly map: the nearest-bank distance of every patch, upsampled to the input size
  (``map_upsample``: ``nearest`` as anomalib, or ``bilinear`` as the paper and its code) and smoothed
  with a Gaussian, σ = ``blur_sigma`` = 4, kernel radius 4σ, mirrored borders (anomalib's blur).

``reweight``, ``reweight_neighbours``, ``map_upsample`` and ``blur_sigma`` only change evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from baselines._common import (ExpertHints, check_images, chunked_min_dist, gaussian_blur, require,
                               resize_maps, seed_everything)
from kdad.methods import Detector, MethodSpec, evaluation_field, register_method

AGGREGATIONS = ("anomalib", "valid")
UPSAMPLING = ("nearest", "bilinear")


@dataclass
class PatchCoreConfig:
    """PatchCore (Roth et al. 2022); see the module docstring for the sources."""

    hint_indices: tuple[int, ...] = (1, 2)
    neighbourhood: int = 3
    aggregation: str = "anomalib"         # anomalib (zero-padded 3×3 mean) | valid (mean of valid cells)
    coreset_ratio: float = 0.1
    projection_dims: int = 128            # 0 = select the coreset on the full features
    reweight: bool = evaluation_field(True)          # paper Eq. 7 (anomalib: num_neighbors > 1)
    reweight_neighbours: int = evaluation_field(9)   # b = |N_b(m*)|
    map_upsample: str = evaluation_field("nearest")  # nearest (anomalib) | bilinear (paper)
    blur_sigma: float = evaluation_field(4.0)
    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self.hint_indices = tuple(self.hint_indices)
        require(len(self.hint_indices) > 0, "hint_indices must not be empty")
        require(self.aggregation in AGGREGATIONS, f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        require(self.map_upsample in UPSAMPLING, f"map_upsample must be one of {UPSAMPLING}, got {self.map_upsample!r}")
        require(self.neighbourhood >= 1 and self.neighbourhood % 2 == 1, "neighbourhood must be odd and ≥ 1")
        require(0 < self.coreset_ratio <= 1, f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        require(self.projection_dims >= 0 and self.blur_sigma >= 0 and self.reweight_neighbours >= 1,
                "projection_dims ≥ 0, blur_sigma ≥ 0 and reweight_neighbours ≥ 1 are required")


def greedy_coreset(x: torch.Tensor, k: int, start: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``x`` chosen by greedy k-centre (farthest-point) selection from ``start``."""
    k = min(k, len(x))
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
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
        feats = [f.to(self.device) for f in self._hints(check_images(images), hints, self.config.hint_indices)]
        p, anomalib = self.config.neighbourhood, self.config.aggregation == "anomalib"
        feats = [F.avg_pool2d(f, p, stride=1, padding=p // 2, count_include_pad=anomalib) if p > 1 else f
                 for f in feats]
        size = feats[0].shape[-2:] if anomalib else max((f.shape[-2:] for f in feats), key=lambda s: s[0] * s[1])
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
        k = max(1, int(cfg.coreset_ratio * len(x)))
        if k >= len(x):
            self.bank_ = x.clone()
        else:
            sel = x
            if 0 < cfg.projection_dims < x.shape[1]:
                gen = torch.Generator().manual_seed(seed)
                proj = torch.randn(x.shape[1], cfg.projection_dims, generator=gen) / math.sqrt(cfg.projection_dims)
                sel = x @ proj.to(x.device)
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
        """Paper Eq. 7 for the most anomalous patch of every image (``worst`` [N, D], distances ``s_star``):
        s = (1 − softmax(‖m_test − m‖ over m ∈ N_b(m*))[m*]) · s*, N_b(m*) including m* itself."""
        b = min(self.config.reweight_neighbours, len(self.bank_))
        nearest = torch.cdist(worst, self.bank_).argmin(dim=1)                            # m*
        hood = torch.cdist(self.bank_[nearest], self.bank_).topk(b, largest=False).indices  # N_b(m*)
        d_hood = torch.linalg.vector_norm(worst[:, None] - self.bank_[hood], dim=2)       # ‖m_test − m‖
        d_star = torch.linalg.vector_norm(worst - self.bank_[nearest], dim=1)             # ‖m_test − m*‖
        ratio = torch.exp(d_star - torch.logsumexp(d_hood, dim=1))
        return (1.0 - ratio) * s_star

    def anomaly_map(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        images = check_images(images)
        dist, _ = self._distances(images, hints)
        size = tuple(images.shape[-2:])
        if self.config.map_upsample == "nearest":   # anomalib: F.interpolate's default mode
            maps = F.interpolate(dist[:, None], size=size, mode="nearest")[:, 0]
        else:
            maps = resize_maps(dist, size)
        maps = maps.cpu().numpy().astype(np.float32)
        # anomalib's Gaussian: radius 4σ, borders mirrored without repeating the edge (scipy's "mirror")
        return gaussian_blur(maps, self.config.blur_sigma, mode="mirror").astype(np.float32)

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        return self._distances(check_images(images), hints)[1].double().cpu().numpy()


register_method(MethodSpec("patchcore", PatchCoreConfig, PatchCore, localizes=True, expert_field="expert",
                           description="PatchCore (Roth et al. 2022): 10% greedy coreset of locally aware "
                                       "mid-level expert patches, nearest-neighbour distance"))
