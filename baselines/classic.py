"""Classic shallow detectors (scikit-learn) on raw pixels or on pooled expert features.

Registry names ``ocsvm``, ``kde`` and ``iforest``. Each has ``features``:

* ``"pixels"`` — the image flattened, pixels scaled to [0, 1];
* ``"expert"`` — every hint of the frozen expert global-average-pooled and concatenated, then
  (``standardize``) standardised with the *training* mean/std per dimension (a std below 10⁻³ of
  the median one is raised to it: a nearly constant feature is not blown up to unit variance).

Then, for OC-SVM and KDE, PCA fitted on the training set reduces to at most ``pca_dims`` dimensions
(only when there are more). Nothing is chosen on test data or labels.

Numerical stability: KDE whitens, and whitening divides every component by its standard
deviation. Components of almost no variance (a few hundred images of 496 correlated pooled
activations, or of 1,024 pixels, are nearly singular) would be scaled up to unit variance together
with the rounding noise of the features: between two machines of the same kind KDE-expert moved by
9.4 and KDE on pixels by 4.3 image-AUROC points. KDE therefore keeps only the components whose
variance is at least ``eig_floor`` = 5 % of the largest one (amplification ≤ 4.5× the leading
component's), which made the float16-perturbation test of ``tests/test_baselines.py`` pass
(1 %: 0.5–1.5 points; 3 %: < 0.1; 5 %: ≤ 0.01 on Fashion-MNIST's Lite0 features).

Sources of the defaults:

* One-class SVM — Schölkopf et al., "Estimating the support of a high-dimensional distribution",
  Neural Computation 2001: RBF kernel; ν = 0.1 (an upper bound on the fraction of training
  outliers, the value common in the deep one-class literature, e.g. Ruff et al. 2018 report
  OC-SVM baselines with ν ∈ {0.01, 0.1}); γ = scikit-learn's "scale" heuristic 1 / (d · Var(X)),
  a label-free choice instead of a grid search on test labels. Score = −decision_function.
* Kernel density estimation — Gaussian kernel on PCA-*whitened* data (≤ 64 dims, above the
  eigenvalue floor below), so that the identity-covariance form of Scott's rule applies:
  h = n^(−1/(d+4)) (Scott, "Multivariate Density Estimation", 1992). Score = −log density.
* Isolation Forest — Liu, Ting & Zhou, "Isolation forest", ICDM 2008: t = 100 trees, sub-sampling
  size ψ = 256 (min(256, n)), as recommended there. Score = −score_samples (the paper's s(x, n)
  anomaly score up to sign convention), random_state = seed.

No localisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines._common import ExpertHints, check_images, pixels01, pooled, require, seed_everything
from kdad.methods import Detector, MethodSpec, ModelFileError, register_method

FEATURES = ("pixels", "expert")


@dataclass
class _FeatureConfig:
    features: str = "pixels"              # pixels | expert
    expert: str = "efficientnet_lite0"
    expert_weights: str | None = None
    normalize: bool = True                # expert's mean/std on its input (features: expert only)
    standardize: bool = True              # features: expert only — training mean/std per dimension

    def __post_init__(self) -> None:
        require(self.features in FEATURES, f"features must be one of {FEATURES}, got {self.features!r}")


@dataclass
class OCSVMConfig(_FeatureConfig):
    """One-class SVM (Schölkopf et al. 2001); see the module docstring for the sources."""

    nu: float = 0.1
    gamma: str = "scale"                  # scale | auto (scikit-learn heuristics)
    pca_dims: int = 64                    # PCA (fitted on train) when the features have more dims

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 < self.nu <= 1, f"nu must be in (0, 1], got {self.nu}")
        require(self.gamma in ("scale", "auto"), f"gamma must be 'scale' or 'auto', got {self.gamma!r}")
        require(self.pca_dims >= 1, "pca_dims must be ≥ 1")


@dataclass
class KDEConfig(_FeatureConfig):
    """Gaussian KDE on PCA-whitened features, bandwidth by Scott's rule (Scott 1992)."""

    pca_dims: int = 64
    eig_floor: float = 0.05               # keep components with variance ≥ floor × the largest
    bandwidth: float | None = None        # None = Scott's rule n^(-1/(d+4)) on whitened data

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.pca_dims >= 1, "pca_dims must be ≥ 1")
        require(0 <= self.eig_floor < 1, "eig_floor must be in [0, 1)")
        require(self.bandwidth is None or self.bandwidth > 0, "bandwidth must be > 0")


@dataclass
class IForestConfig(_FeatureConfig):
    """Isolation Forest (Liu et al. 2008): 100 trees, ψ = 256."""

    n_estimators: int = 100
    max_samples: int = 256                # ψ; min(ψ, n) is used

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.n_estimators >= 1 and self.max_samples >= 2, "n_estimators ≥ 1 and max_samples ≥ 2")


class PCA:
    """Principal components of the training features (float64 eigen-decomposition of the covariance).

    ``transform`` centres and projects onto at most ``dims`` components, only those whose variance is
    at least ``floor`` × the largest one; with ``whiten`` it divides each by its standard deviation.
    The floor bounds what whitening can amplify: without it, components of almost no variance
    (nearly singular features: 496 correlated pooled activations from a few hundred images) are
    scaled up to unit variance, and with them the last-bit differences between two machines'
    features (KDE-expert moved by 9 image-AUROC points between two machines of the same kind).
    """

    def __init__(self, dims: int, *, whiten: bool = False, floor: float = 0.0) -> None:
        self.dims, self.whiten, self.floor = dims, whiten, floor

    def fit(self, x: np.ndarray) -> "PCA":
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        xc = x - self.mean_
        # eigenvectors from the smaller Gram side; signs fixed so that two runs agree
        if xc.shape[0] < xc.shape[1]:
            vals, u = np.linalg.eigh(xc @ xc.T)
            order = np.argsort(vals)[::-1]
            vals, u = np.clip(vals[order], 0, None), u[:, order]
            keep = vals > vals[0] * 1e-12 if len(vals) and vals[0] > 0 else np.zeros(len(vals), bool)
            vecs = (xc.T @ u[:, keep]) / np.sqrt(vals[keep])
            vals = vals[keep]
        else:
            vals, vecs = np.linalg.eigh(xc.T @ xc)
            order = np.argsort(vals)[::-1]
            vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
        var = vals / max(len(x) - 1, 1)
        k = int(np.sum(var >= self.floor * var[0])) if len(var) and var[0] > 0 else 0
        k = max(1, min(self.dims, k, len(var)))
        vecs = vecs[:, :k] * np.sign(vecs[np.abs(vecs[:, :k]).argmax(axis=0), np.arange(k)])
        self.components_, self.explained_variance_ = vecs, var[:k]
        self.n_components_ = k
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean_) @ self.components_
        return z / np.sqrt(np.maximum(self.explained_variance_, 1e-300)) if self.whiten else z

    # stored as plain data (kdad.methods.to_plain), not as a pickled object
    def state(self) -> dict:
        return dict(vars(self))

    @classmethod
    def from_state(cls, state: dict) -> "PCA":
        pca = cls(int(state["dims"]), whiten=bool(state["whiten"]), floor=float(state["floor"]))
        pca.mean_, pca.components_ = np.asarray(state["mean_"]), np.asarray(state["components_"])
        pca.explained_variance_, pca.n_components_ = np.asarray(state["explained_variance_"]), int(state["n_components_"])
        return pca


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n), the mean path length of an unsuccessful search in a binary search tree of n points
    (Liu et al. 2008), with c(≤1) = 0 and c(2) = 1: the same arithmetic as scikit-learn's."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationTrees:
    """A fitted scikit-learn IsolationForest as arrays (its trees' nodes), scored without it.

    ``score_samples`` reproduces scikit-learn's (float32 inputs compared with float64 thresholds,
    depth + c(leaf size) − 1 summed tree by tree, 2^(−mean / c(ψ))), so a model stored as plain
    data scores exactly as the forest it came from."""

    KEYS = ("left", "right", "feature", "threshold", "leaf_depth")

    def __init__(self, trees: list[dict], max_samples: int) -> None:
        self.trees, self.max_samples = trees, int(max_samples)

    @classmethod
    def from_forest(cls, forest) -> "IsolationTrees":
        if forest._max_features != forest.n_features_in_:
            raise ValueError("IsolationTrees stores forests that use every feature (max_features=1.0)")
        trees = []
        for est in forest.estimators_:
            t = est.tree_
            leaf_depth = t.compute_node_depths() + _average_path_length(t.n_node_samples) - 1.0
            trees.append({"left": t.children_left.astype(np.int64), "right": t.children_right.astype(np.int64),
                          "feature": t.feature.astype(np.int64), "threshold": t.threshold.astype(np.float64),
                          "leaf_depth": leaf_depth.astype(np.float64)})
        return cls(trees, forest._max_samples)

    def state(self) -> dict:
        return {"trees": self.trees, "max_samples": self.max_samples}

    @classmethod
    def from_state(cls, state: dict) -> "IsolationTrees":
        trees = [{k: np.asarray(t[k]) for k in cls.KEYS} for t in state["trees"]]
        for t in trees:
            n = len(t["left"])
            if any(len(t[k]) != n for k in cls.KEYS) or n < 1 or ((t["left"] >= n) | (t["right"] >= n)).any():
                raise ValueError("inconsistent Isolation Forest tree arrays")
        return cls(trees, state["max_samples"])

    def _leaves(self, tree: dict, x: np.ndarray) -> np.ndarray:
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        while True:
            inner = tree["left"][node] >= 0
            if not inner.any():
                return node
            i, n = rows[inner], node[inner]
            go_left = x[i, tree["feature"][n]] <= tree["threshold"][n]
            node[i] = np.where(go_left, tree["left"][n], tree["right"][n])

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        depths = np.zeros(len(x))
        for tree in self.trees:
            depths += tree["leaf_depth"][self._leaves(tree, x)]
        denominator = len(self.trees) * float(_average_path_length(np.array([self.max_samples]))[0])
        mean = depths / denominator if denominator != 0 else np.ones_like(depths)
        return -(2 ** -mean)


class _Classic(Detector):
    """Feature extraction (+ training standardisation + optional PCA) around one sklearn model."""

    pca_whiten = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self._hints = ExpertHints(config.expert, config.expert_weights, config.normalize)

    def _raw(self, images: torch.Tensor, hints) -> np.ndarray:
        images = check_images(images)
        if self.config.features == "pixels":
            return pixels01(images).flatten(1).double().numpy()
        return pooled(self._hints(images, hints))

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if self.mean_ is not None:
            x = (x - self.mean_) / self.std_
        if self.pca_ is not None:
            x = self.pca_.transform(x)
        return x

    def _prepare_fit(self, images, seed: int, hints) -> np.ndarray:
        seed_everything(seed)
        x = self._raw(images, hints)
        require(len(x) >= 2, "at least 2 training images are needed")
        self.mean_ = self.std_ = self.pca_ = None
        if self.config.features == "expert" and self.config.standardize:
            self.mean_ = x.mean(axis=0)
            std = x.std(axis=0)
            # a nearly constant feature is not blown up to unit variance (its noise would be)
            self.std_ = np.maximum(std, 1e-3 * max(float(np.median(std)), 1e-12))
        x = self._transform(x)
        dims = getattr(self.config, "pca_dims", None)
        if dims is not None and (x.shape[1] > dims or self.pca_whiten):
            k = min(dims, x.shape[1], len(x) - 1)
            floor = self.config.eig_floor if self.pca_whiten else 0.0
            self.pca_ = PCA(k, whiten=self.pca_whiten, floor=floor).fit(x)
            x = self.pca_.transform(x)
        return x

    def score(self, images: torch.Tensor, *, hints=None) -> np.ndarray:
        return np.asarray(self._score(self._transform(self._raw(images, hints))), dtype=np.float64)

    # stored as plain data (arrays, numbers), never as a pickled scikit-learn object
    def fitted_state(self) -> dict:
        return {"mean_": self.mean_, "std_": self.std_, "pca_": None if self.pca_ is None else self.pca_.state(),
                "model_": self._model_state()}

    def load_fitted_state(self, state: dict) -> None:
        self.mean_, self.std_ = state["mean_"], state["std_"]
        self.pca_ = None if state["pca_"] is None else PCA.from_state(state["pca_"])
        try:
            self._load_model_state(state["model_"])
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ModelFileError(f"the stored {type(self).__name__} model is inconsistent ({err}); train it again") from None


class OCSVM(_Classic):
    def fit(self, images, *, seed: int, hints=None, checkpoint=None) -> "OCSVM":
        from sklearn.svm import OneClassSVM  # here, not at import (job start-up)

        x = self._prepare_fit(images, seed, hints)
        self.model_ = OneClassSVM(kernel="rbf", nu=self.config.nu, gamma=self.config.gamma).fit(x)
        return self

    def _model_state(self) -> dict:
        return self.model_.__getstate__()  # the fitted attributes: arrays, numbers, strings

    def _load_model_state(self, state: dict) -> None:
        from sklearn.svm import OneClassSVM

        sv, coef = state["support_vectors_"], state["dual_coef_"]
        if (sv.ndim != 2 or coef.shape != (1, len(sv)) or state["_dual_coef_"].shape != coef.shape
                or len(state["support_"]) != len(sv) or state["kernel"] != "rbf"):
            raise ValueError("support vectors, coefficients and counts disagree")
        model = OneClassSVM.__new__(OneClassSVM)
        model.__setstate__(dict(state))  # sets attributes only; the class is this code's, not the file's
        self.model_ = model

    def _score(self, x):
        return -self.model_.decision_function(x)


class KDE(_Classic):
    pca_whiten = True

    def fit(self, images, *, seed: int, hints=None, checkpoint=None) -> "KDE":
        from sklearn.neighbors import KernelDensity

        x = self._prepare_fit(images, seed, hints)
        n, d = x.shape
        self.bandwidth_ = self.config.bandwidth or float(n ** (-1.0 / (d + 4)))
        self.model_ = KernelDensity(kernel="gaussian", bandwidth=self.bandwidth_).fit(x)
        return self

    # the density is its training points and bandwidth; loading rebuilds the (deterministic) tree
    def _model_state(self) -> dict:
        return {"points": np.asarray(self.model_.tree_.data), "bandwidth": self.bandwidth_}

    def _load_model_state(self, state: dict) -> None:
        from sklearn.neighbors import KernelDensity

        self.bandwidth_ = float(state["bandwidth"])
        self.model_ = KernelDensity(kernel="gaussian", bandwidth=self.bandwidth_).fit(np.asarray(state["points"]))

    def _score(self, x):
        return -self.model_.score_samples(x)


class IForest(_Classic):
    def fit(self, images, *, seed: int, hints=None, checkpoint=None) -> "IForest":
        from sklearn.ensemble import IsolationForest

        x = self._prepare_fit(images, seed, hints)
        forest = IsolationForest(n_estimators=self.config.n_estimators,
                                 max_samples=min(self.config.max_samples, len(x)), random_state=seed).fit(x)
        self.model_ = IsolationTrees.from_forest(forest)  # what a loaded model scores with too
        return self

    def _model_state(self) -> dict:
        return self.model_.state()

    def _load_model_state(self, state: dict) -> None:
        self.model_ = IsolationTrees.from_state(state)

    def _score(self, x):
        return -self.model_.score_samples(x)


register_method(MethodSpec("ocsvm", OCSVMConfig, OCSVM, localizes=False, expert_field="expert",
                           description="One-class SVM, RBF kernel, nu=0.1 (Schölkopf et al. 2001) on pixels "
                                       "or pooled expert features"))
register_method(MethodSpec("kde", KDEConfig, KDE, localizes=False, expert_field="expert",
                           description="Gaussian kernel density on PCA-whitened pixels or pooled expert "
                                       "features, Scott's bandwidth"))
register_method(MethodSpec("iforest", IForestConfig, IForest, localizes=False, expert_field="expert",
                           description="Isolation Forest, 100 trees, psi=256 (Liu et al. 2008) on pixels or "
                                       "pooled expert features"))
