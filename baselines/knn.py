"""Deep nearest-neighbour anomaly detection (Bergman, Cohen & Hoshen, "Deep Nearest Neighbor
Anomaly Detection", arXiv 2002.10445, 2020).

Every image is described by the frozen expert's activations, global-average-pooled; the anomaly
score of a test image is its mean Euclidean distance to its ``k`` nearest training descriptors.

Defaults and deviations:

* k = 2 — the paper's default (it reports that small k, e.g. 2, works best);
* plain Euclidean distance, no L2 normalisation (``l2_normalize: false``), as in the paper;
* descriptor — the paper pools the penultimate layer of an ImageNet ResNet; here it is the
  concatenation of the pooled hints ``hint_indices`` (default: all four) of the benchmark's expert,
  so that every method sees the same frozen network.

No localisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from baselines._common import ExpertHints, check_images, chunked_min_dist, pooled, require, seed_everything
from kdad.methods import Detector, MethodSpec, evaluation_field, register_method


@dataclass
class KNNConfig:
    """kNN distance on pooled expert features (Bergman et al. 2020)."""

    k: int = evaluation_field(2)          # only scoring reads it: the bank is every training image
    hint_indices: tuple[int, ...] = (0, 1, 2, 3)
    l2_normalize: bool = False
    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True

    def __post_init__(self) -> None:
        self.hint_indices = tuple(self.hint_indices)
        require(self.k >= 1, "k must be ≥ 1")
        require(len(self.hint_indices) > 0, "hint_indices must not be empty")


class KNN(Detector):
    def __init__(self, config: KNNConfig) -> None:
        super().__init__(config)
        self._hints = ExpertHints(config.expert, config.expert_weights, config.normalize)

    def _features(self, images, hints) -> torch.Tensor:
        x = torch.from_numpy(pooled(self._hints(check_images(images), hints, self.config.hint_indices))).float()
        x = x.to(self.device)
        return F.normalize(x, dim=1) if self.config.l2_normalize else x

    def fit(self, images: torch.Tensor, *, seed: int, hints=None, checkpoint=None) -> "KNN":
        seed_everything(seed)  # nothing random; kept for uniformity
        self.bank_ = self._features(images, hints)
        require(len(self.bank_) >= 1, "no training images")
        return self

    @torch.inference_mode()
    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        require(len(self.bank_) >= self.config.k, f"k={self.config.k} needs at least k training images")
        d = chunked_min_dist(self._features(images, hints), self.bank_, k=self.config.k)
        return d.mean(dim=1).double().cpu().numpy()


register_method(MethodSpec("knn", KNNConfig, KNN, localizes=False, expert_field="expert",
                           description="Deep kNN: mean distance to the k=2 nearest pooled expert "
                                       "descriptors (Bergman et al. 2020)"))
