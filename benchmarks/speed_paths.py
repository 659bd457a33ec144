"""The speed benchmark's measured paths (run by :mod:`benchmarks.speed`): its settings and constants,
and what each worker process runs: kdad's path (:class:`KdadWorker`), the official code's pattern
(:class:`ReferenceWorker`) and the machine's fp32 matrix-multiply rate (:class:`MatmulWorker`), with
the FLOP count of a training step that the run's GFLOP/s rows use (:func:`_step_flops`)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

# ============================================================================================ settings


@dataclasses.dataclass(frozen=True)
class Setting:
    expert: str
    size: int
    channels: int            # 1 = grey (repeated to 3 by preprocessing), 3 = RGB
    n_train: int             # images per model's training set (memory and epoch length of a real run)
    n_test: int
    lam: float
    maps: bool               # localisation measured (the 128×128 defect settings)
    what: str
    epochs: int = 51         # the paper's epochs for this kind of dataset


SETTINGS = {
    "fmnist_vgg16_32": Setting("vgg16_random", 32, 1, 6000, 10000, 0.01, False,
                               "(a) paper Fashion-MNIST: VGG16, 32×32, cfg-B cloner, batch 64"),
    "mvtec_vgg16_128": Setting("vgg16_random", 128, 3, 240, 115, 0.5, True,
                               "(b) paper MVTec AD: VGG16, 128×128 (≈ mean category size)", 601),
    "lite0_32": Setting("efficientnet_lite0", 32, 1, 6000, 10000, 0.01, False,
                        "(c) offline default: EfficientNet-Lite0 (ImageNet), 32×32"),
    "lite0_128": Setting("efficientnet_lite0", 128, 3, 240, 115, 0.5, True,
                         "(c) offline default: EfficientNet-Lite0 (ImageNet), 128×128", 601),
}

BATCH = 64
KDAD_EPOCHS = 51       # kdad's paper config (the official code evaluates its epoch-50 checkpoint: 51 epochs)
OFFICIAL_EPOCHS = 52   # official train.py: range(num_epochs + 1) with num_epochs 51
OFFICIAL_TEST_PASSES = 7  # detection_test at epochs 0, 10, …, 50 (6) + test.py's final pass (1)
OFFICIAL_SG_SAMPLES = 50
KDAD_SG_SAMPLES = 16   # MKDConfig.smooth_grad_samples
PROTOCOL = {"classes": 10, "train_per_class": 6000, "test_images": 10000, "train_total": 60000}


def weights_label(expert: str) -> str:
    return "random (timing only)" if expert.endswith("_random") else "ImageNet"


# ============================================================================================ paths
# Each class is built and called inside a worker process (benchmarks/speed_worker.py): every method
# named in a command is one timed operation and answers a dict.


def _images(n: int, s: Setting, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, s.channels, s.size, s.size), dtype=np.uint8))


def _tile(hints: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Hint arrays of ``n`` images made by repeating the computed ones (same dtype and size as a real cache)."""
    return [np.ascontiguousarray(np.take(h, np.arange(n) % len(h), axis=0)) for h in hints]


def _step_flops(module: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one training step of ``module`` on ``x``: 3 × its forward's (FlopCounterMode). The
    backward is taken as 2 × the forward (input and weight gradients): torch's counter gives
    2.97–2.99 × for VGG16 and the cfg-B cloner, but overcounts the backward of depthwise
    convolutions (44 × the forward for EfficientNet-Lite0), so it is not used for the backward."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return 3.0 * counter.get_total_flops()


class KdadWorker:
    """kdad's path: cached float16 hints, cloner-only training and scoring, batched maps."""

    def __init__(self, spec: dict) -> None:
        from kdad.experts import build_expert
        from kdad.mkd import MKD, MKDConfig

        self.s = Setting(**spec["setting"])
        self.sizes = spec["sizes"]
        self.expert = build_expert(self.s.expert)
        cfg = MKDConfig(expert=self.s.expert, epochs=1, batch_size=BATCH, lam=self.s.lam,
                        map_batch=self.sizes["map_batch"])
        self.model = MKD(cfg, expert=self.expert)
        self.train_images = _images(self.s.n_train, self.s, 1)
        self.test_images = _images(self.s.n_test, self.s, 2)
        from kdad.features import compute_hints

        m = min(self.sizes["tile_from"], self.s.n_train)
        computed = compute_hints(self.expert, self.train_images[:m], normalize=cfg.normalize)
        self.hint_bytes = sum(h[0].nbytes for h in computed)
        self.train_hints = _tile(computed, self.s.n_train)
        self.test_hints = _tile(computed, self.s.n_test)
        self.model.fit(self.train_images[:2 * BATCH], seed=0, hints=[h[:2 * BATCH] for h in self.train_hints])

    def flops(self) -> dict:
        """FLOPs per image of one cloner training step (see :func:`_step_flops`)."""
        x = self.model.preprocess(self.train_images[:2])
        return {"flops_per_image": _step_flops(self.model.cloner_, x) / 2, "hint_bytes_per_image": self.hint_bytes}

    def fit_memory(self) -> dict:
        """fit with 0 epochs on the whole training set: its float32 targets, no training (memory only)."""
        self.model.config.epochs = 0
        try:
            self.model.fit(self.train_images, seed=0, hints=self.train_hints)
        finally:
            self.model.config.epochs = 1
        return {"seconds": 0.0, "images": self.s.n_train}

    def hints(self, n: int) -> dict:
        from kdad.features import compute_hints

        t0 = time.perf_counter()
        compute_hints(self.expert, self.train_images[:n], normalize=self.model.config.normalize)
        return {"seconds": time.perf_counter() - t0, "images": n}

    def train(self, n: int, seed: int = 0) -> dict:
        t0 = time.perf_counter()
        self.model.fit(self.train_images[:n], seed=seed, hints=[h[:n] for h in self.train_hints])
        wall = time.perf_counter() - t0
        epoch = self.model.history_[-1]["seconds"]
        return {"seconds": epoch, "images": n, "overhead_seconds": wall - epoch}

    def score(self, n: int) -> dict:
        t0 = time.perf_counter()
        self.model.score(self.test_images[:n], hints=[h[:n] for h in self.test_hints])
        return {"seconds": time.perf_counter() - t0, "images": n}

    def map(self, n: int, method: str, through: str, samples: int = 1) -> dict:
        cfg = self.model.config
        cfg.grad_through, cfg.smooth_grad_samples = through, samples
        t0 = time.perf_counter()
        self.model.anomaly_map(self.test_images[:n], hints=[h[:n] for h in self.test_hints], method=method)
        return {"seconds": time.perf_counter() - t0, "images": n}


class ReferenceWorker:
    """The official code's computation pattern, on the same expert and cloner modules as kdad."""

    def __init__(self, spec: dict) -> None:
        from kdad.cloner import build_cloner
        from kdad.experts import build_expert
        from kdad.mkd import MKDConfig

        self.s = Setting(**spec["setting"])
        self.sizes = spec["sizes"]
        self.expert = build_expert(self.s.expert)
        for p in self.expert.parameters():  # official Vgg16: pretrained features, never frozen
            p.requires_grad_(True)
        self.cloner = build_cloner(self.expert)
        self.cfg = MKDConfig(expert=self.s.expert, lam=self.s.lam)
        self.opt = torch.optim.Adam(self.cloner.parameters(), lr=self.cfg.lr)
        self.train_images = _images(self.s.n_train, self.s, 1)
        self.test_images = _images(self.s.n_test, self.s, 2)
        self.gen = torch.Generator().manual_seed(0)
        self.train(BATCH)  # warm-up (oneDNN primitives)

    def _x(self, images: torch.Tensor) -> torch.Tensor:
        return self.expert.preprocess(images, self.cfg.normalize)

    def _loss(self, x: torch.Tensor, which) -> torch.Tensor:
        from kdad.mkd import mkd_loss

        c, e = self.cloner(x), self.expert(x)  # the expert's graph is built: its weights require grad
        return mkd_loss([c[i] for i in which], [e[i] for i in which], lam=self.cfg.lam)

    def flops(self) -> dict:
        x = self._x(self.train_images[:2])
        return {"flops_per_image": (_step_flops(self.cloner, x) + _step_flops(self.expert, x)) / 2}

    def train(self, n: int, seed: int = 0) -> dict:
        """``n`` training images in batches of 64 as train.py's loop: forward both, backward, Adam step."""
        self.cloner.train()
        order = torch.randperm(self.s.n_train, generator=self.gen)[:n]
        t0 = time.perf_counter()
        for b in range(0, n, BATCH):
            x = self._x(self.train_images[order[b:b + BATCH]])
            loss = self._loss(x, self.cfg.train_hints).mean()
            loss.item()
            self.opt.zero_grad()  # the cloner's only: the expert's gradients accumulate, as there
            loss.backward()
            self.opt.step()
        return {"seconds": time.perf_counter() - t0, "images": n}

    def score(self, n: int) -> dict:
        """detection_test: expert + cloner per batch of 64, no ``no_grad``."""
        self.cloner.eval()
        t0 = time.perf_counter()
        scores = [self._loss(self._x(self.test_images[i:i + BATCH]), self.cfg.score_hints).detach().numpy()
                  for i in range(0, n, BATCH)]
        seconds = time.perf_counter() - t0
        assert sum(len(s) for s in scores) == n
        self.cloner.train()
        return {"seconds": seconds, "images": n}

    def _grad(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        loss = self._loss(x, self.cfg.score_hints).sum()
        self.cloner.zero_grad()
        loss.backward()  # expert weight gradients computed and accumulated too
        return x.grad

    def map(self, n: int, method: str, through: str = "both", samples: int = 1) -> dict:
        """One image per backward pass; SmoothGrad: one backward pass per noisy sample of one image."""
        from kdad import localize as loc

        assert through == "both"
        self.cloner.eval()
        t0 = time.perf_counter()
        maps = []
        for i in range(n):
            x = self._x(self.test_images[i:i + 1])
            if method == "smooth_grad":
                span = float(x.max() - x.min())
                total = torch.zeros(x.shape[2:])
                for _ in range(samples):
                    total += loc.saliency(self._grad(x + 0.05 * span * torch.randn_like(x)), "official")[0]
                s = loc._minmax((total / samples)[None])
            elif method == "guided_backprop":
                with loc.guided_relus([self.cloner]):
                    s = loc._minmax(loc.saliency(self._grad(x), "official"))
            else:
                s = loc.saliency(self._grad(x), "official")
            maps.append(loc.blur(s.detach().numpy(), 4.0))
        seconds = time.perf_counter() - t0
        self.cloner.train()
        return {"seconds": seconds, "images": n}




class MatmulWorker:
    """The machine's fp32 matrix-multiply rate at the worker's torch threads: square float32 products."""

    def __init__(self, spec: dict) -> None:
        self.gen = torch.Generator().manual_seed(0)
        self.pairs: dict[int, tuple] = {}

    def matmul(self, n: int, size: int) -> dict:
        """``n`` products ``a @ b`` of ``size`` × ``size`` float32 matrices (2 · size³ FLOP each), timed
        after one untimed product (warm-up: allocation, the threads' start, the BLAS kernel's choice)."""
        if size not in self.pairs:
            self.pairs[size] = tuple(torch.randn(size, size, generator=self.gen) for _ in range(2))
        a, b = self.pairs[size]
        out = torch.empty(size, size)
        torch.mm(a, b, out=out)
        t0 = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        return {"seconds": time.perf_counter() - t0, "images": n,  # products: calibrate's unit
                "flop": 2.0 * size ** 3 * n}
