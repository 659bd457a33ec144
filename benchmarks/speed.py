"""Speed benchmark: kdad's MKD path against a reference path that repeats the official code's pattern.

Measured in the same run, interleaved (kdad, reference, reference, kdad, … so both see the same
machine load), every path in its own worker process (its peak RSS is its own):

- **kdad**: the frozen expert's hints computed once (``kdad.features.compute_hints``, float16),
  the cloner trained on them (``MKD.fit(..., hints=...)``), scored on them (``MKD.score``), maps
  batched (``MKD.anomaly_map``, through both networks or the cloner only).
- **reference** (the official code's computation pattern, github.com/rohban-lab/Knowledge_Distillation_AD):
  every training batch runs the expert again with its parameters requiring gradients (not detached,
  nothing under ``no_grad``: autograd builds and back-propagates the expert's graph and accumulates
  its weight gradients); detection scoring runs expert + cloner per batch of 64 (graph built);
  maps one image per backward pass with the expert's weight gradients enabled; SmoothGrad = one
  backward pass of one image per noisy sample (50 samples).

Settings: the paper's Fashion-MNIST (VGG16, 32×32, grey → 3 channels, cfg-B cloner, batch 64),
MVTec AD (VGG16, 128×128) and the offline default (EfficientNet-Lite0 at 32×32 and 128×128).
VGG16's ImageNet file is not available offline: its settings use ``vgg16_random`` (fixed random
weights; timing does not depend on the values, and every row says so). Images are random uint8;
each measurement's image count is in its row. The kdad worker holds hint caches of the full
dataset size (the hints of ``--hint-images`` images, repeated), so its memory is that of a real run.

Also: 1 vs 2 threads (and 2 concurrent 1-thread jobs) for both paths' training at 32×32, the
paper's whole Fashion-MNIST protocol extrapolated from the measured per-epoch and per-pass times,
and with ``--investigate`` several cloners trained in one pass (grouped convolutions,
``torch.func.vmap``), ``torch.compile`` of the training step, channels_last vs contiguous, the loss in
channels_last element order, float16 targets and bf16 autocast.

Every timed operation is first run once at a small size (warm-up); its repeats then use as many
images as fit in ``--budget`` seconds, so the run's length does not grow with the machine's load.
Each path runs ``--threads`` torch threads (default 1: on the shared 2-core machine one job of two
threads trains 3-10× slower than one thread, see the thread study).

Writes ``results/bench.csv`` (one row per setting × path × measure) and prints Markdown tables.

    python benchmarks/speed.py                   # the default run (≈ 10 min on the shared 2 cores)
    python benchmarks/speed.py --investigate     # + multi-model / compile / layout / precision (+ ≈ 8 min)
    python benchmarks/speed.py --quick --out /tmp/bench.csv   # minuscule sizes (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/speed.py` must import this checkout's kdad
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

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


# ============================================================================================ worker side
# A worker is this file run with --worker SPEC: it reads one JSON command per line on stdin and
# answers one JSON line on its protocol pipe (the original stdout; everything printed goes to stderr).


def _reset_hwm() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux ≥ 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


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


# ---------------------------------------------------------------------------- investigations


class GroupedCloner(torch.nn.Module):
    """K cfg-B cloners as one network: every conv/BN has K× the channels, convs use groups=K."""

    def __init__(self, cloners: list) -> None:
        super().__init__()
        k = len(cloners)
        layers = []
        for parts in zip(*(c.features for c in cloners)):
            m = parts[0]
            if isinstance(m, torch.nn.Conv2d):
                g = torch.nn.Conv2d(k * m.in_channels, k * m.out_channels, 3, padding=1, bias=False, groups=k)
                g.weight.data.copy_(torch.cat([p.weight.data for p in parts]))
            elif isinstance(m, torch.nn.BatchNorm2d):
                g = torch.nn.BatchNorm2d(k * m.num_features)
                g.weight.data.copy_(torch.cat([p.weight.data for p in parts]))
                g.bias.data.copy_(torch.cat([p.bias.data for p in parts]))
            else:
                g = copy.deepcopy(m)
            layers.append(g)
        self.features = torch.nn.Sequential(*layers)
        self.tap, self.k = cloners[0].tap, k

    def forward(self, x):  # x [N, K*3, H, W] → per hint [K, N, C, h, w]
        from kdad.cloner import Cloner

        return [h.unflatten(1, (self.k, -1)).transpose(0, 1) for h in Cloner.taps(self, x)]  # the same layer walk


class InvestigateWorker:
    """Training-step throughput of cloner variants on fixed batches (VGG16 cfg-B, random weights)."""

    def __init__(self, spec: dict) -> None:
        from kdad.cloner import build_cloner
        from kdad.experts import build_expert

        self.size, self.k, self.batches = spec["size"], spec["models"], spec["batches"]
        self.expert = build_expert("vgg16_random")
        self.build_cloner = lambda: build_cloner(self.expert)
        gen = torch.Generator().manual_seed(0)
        pool = 4 * BATCH
        self.x = torch.rand(pool, 3, self.size, self.size, generator=gen)
        with torch.inference_mode():
            self.t = [h.clone().contiguous() for h in self.expert(self.x)]
        self.t_nhwc = [h.permute(0, 2, 3, 1).contiguous() for h in self.t]
        # model k's b-th batch: its own permutation of the pool
        self.idx = [[torch.randperm(pool, generator=gen)[:BATCH] for _ in range(self.batches)] for _ in range(self.k)]
        self.variants: dict = {}

    def _loss(self, out, targets):
        from kdad.mkd import mkd_loss

        return mkd_loss(out, targets, lam=0.01).mean()

    # each builder returns step(b) -> None, doing one optimiser step of every model it holds
    def _single(self, fmt: str, option: str = ""):
        """One cloner (kdad's), in ``fmt``; ``option`` ("+"-joined): compiled (torch.compile of forward
        + loss), nhwc_loss (the loss over the hints in their channels_last element order, targets
        stored so: the same sums, no layout copies in the backward of the hint pools), bf16 (autocast),
        f16_targets (the targets held as float16, each batch's converted: half the training memory)."""
        cl = self.build_cloner().train()
        if fmt == "contiguous":
            cl.to(memory_format=torch.contiguous_format)
            cl.forward = cl.taps  # no channels_last conversion (vmap, contiguous)
        opt = torch.optim.Adam(cl.parameters(), lr=1e-3)
        fmt_ = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        options = set(option.split("+")) - {""}
        targets = self.t_nhwc if "nhwc_loss" in options else self.t
        if "f16_targets" in options:  # targets kept as the float16 cache, converted per batch
            targets = [h.half() for h in targets]

        def fwd(x, *t):
            out = cl(x)
            if "nhwc_loss" in options:
                out = [o.permute(0, 2, 3, 1) for o in out]
            return self._loss(out, list(t))
        f = torch.compile(fwd) if "compiled" in options else fwd

        def step(b):
            i = self.idx[0][b]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in options):
                loss = f(self.x[i].contiguous(memory_format=fmt_), *[h[i].float() for h in targets])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step, 1

    def _grouped(self, fmt: str):
        net = GroupedCloner([self.build_cloner() for _ in range(self.k)]).train()
        fmt_ = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        net.to(memory_format=fmt_)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(b):
            idx = [self.idx[k][b] for k in range(self.k)]
            x = torch.cat([self.x[i] for i in idx], dim=1).contiguous(memory_format=fmt_)
            out = net(x)
            loss = sum(self._loss([o[k] for o in out], [h[idx[k]] for h in self.t]) for k in range(self.k))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step, self.k

    def _vmap(self):
        from torch.func import functional_call, stack_module_state, vmap

        cloners = [self.build_cloner().train() for _ in range(self.k)]
        params, buffers = stack_module_state(cloners)
        base = copy.deepcopy(cloners[0]).to("meta")
        base.forward = base.taps
        opt = torch.optim.Adam(params.values(), lr=1e-3)

        def one(p, bf, x, *t):
            return self._loss(functional_call(base, (p, bf), (x,)), list(t))

        def step(b):
            idx = torch.stack([self.idx[k][b] for k in range(self.k)])
            loss = vmap(one)(params, buffers, self.x[idx], *[h[idx] for h in self.t]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step, self.k

    def prepare(self, variant: str) -> dict:
        t0 = time.perf_counter()
        if variant.startswith("single"):
            _, fmt, *rest = variant.split(":")
            step, k = self._single(fmt, rest[0] if rest else "")
        elif variant.startswith("grouped"):
            step, k = self._grouped(variant.split(":")[1])
        elif variant == "vmap":
            step, k = self._vmap()
        else:
            raise ValueError(variant)
        step(0)  # warm-up; for torch.compile: the compilation
        first = time.perf_counter() - t0
        self.variants[variant] = (step, k)
        return {"seconds": first}

    def run(self, variant: str) -> dict:
        step, k = self.variants[variant]
        t0 = time.perf_counter()
        for b in range(self.batches):
            step(b)
        return {"seconds": time.perf_counter() - t0, "images": self.batches * BATCH * k}

    def flops(self) -> dict:
        return {"flops_per_image": _step_flops(self.build_cloner(), self.x[:2]) / 2}

    def equivalence(self, steps: int = 3) -> dict:
        """Max |Δ| of weights, BN statistics and losses after ``steps`` Adam steps: separate training
        vs the same K cloners (same initial weights, same batches) trained grouped and vmapped."""
        from torch.func import functional_call, stack_module_state, vmap

        steps = min(steps, self.batches)
        torch.manual_seed(1)
        init = [self.build_cloner().train() for _ in range(self.k)]
        def train_separately(order):
            models, losses = copy.deepcopy(init), []
            for k, cl in enumerate(models):
                opt = torch.optim.Adam(cl.parameters(), lr=1e-3)
                for b in range(steps):
                    i = order(self.idx[k][b])
                    loss = self._loss(cl(self.x[i]), [h[i] for h in self.t])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
            return models, losses

        separate, sep_losses = train_separately(lambda i: i)
        names = [n for n, t in init[0].state_dict().items() if t.is_floating_point()]

        def flat(models):
            return torch.stack([torch.cat([c.state_dict()[n].flatten() for n in names]) for c in models])
        ref = flat(separate)
        # control: separate training again with every batch's images in reverse order (the same
        # arithmetic up to the order of float sums): how far rounding alone moves the weights
        control, control_losses = train_separately(lambda i: i.flip(0))
        out = {"control_reordered_max_abs_diff": float((flat(control) - ref).abs().max()),
               "control_reordered_loss_max_abs_diff": float(np.abs(np.subtract(control_losses, sep_losses)).max())}
        # grouped
        net = GroupedCloner(copy.deepcopy(init)).train()
        net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g_losses = []
        for b in range(steps):
            idx = [self.idx[k][b] for k in range(self.k)]
            o = net(torch.cat([self.x[i] for i in idx], dim=1))
            losses = [self._loss([h[k] for h in o], [h[idx[k]] for h in self.t]) for k in range(self.k)]
            opt.zero_grad()
            sum(losses).backward()
            opt.step()
            g_losses.append([v.item() for v in losses])
        g_losses = [g_losses[b][k] for k in range(self.k) for b in range(steps)]
        sd = net.state_dict()  # the same layer indices, hence the same names, as a single cloner
        grouped = [torch.cat([sd[n].unflatten(0, (self.k, -1))[k].flatten() for n in names]) for k in range(self.k)]
        out["grouped_max_abs_diff"] = float((torch.stack(grouped) - ref).abs().max())
        out["grouped_loss_max_abs_diff"] = float(np.abs(np.subtract(g_losses, sep_losses)).max())
        # vmap
        cl = copy.deepcopy(init)
        params, buffers = stack_module_state(cl)
        base = copy.deepcopy(cl[0]).to("meta")
        base.forward = base.taps
        opt = torch.optim.Adam(params.values(), lr=1e-3)
        v_losses = []
        for b in range(steps):
            idx = torch.stack([self.idx[k][b] for k in range(self.k)])
            losses = vmap(lambda p, bf, x, *t: self._loss(functional_call(base, (p, bf), (x,)), list(t)))(
                params, buffers, self.x[idx], *[h[idx] for h in self.t])
            opt.zero_grad()
            losses.sum().backward()
            opt.step()
            v_losses.append(losses.tolist())
        v_losses = [v_losses[b][k] for k in range(self.k) for b in range(steps)]
        stacked = {**params, **buffers}
        vm = torch.stack([torch.cat([stacked[n][k].detach().flatten() for n in names]) for k in range(self.k)])
        out["vmap_max_abs_diff"] = float((vm - ref).abs().max())
        out["vmap_loss_max_abs_diff"] = float(np.abs(np.subtract(v_losses, sep_losses)).max())
        out["max_abs_weight"] = float(ref.abs().max())
        # same weights, same batch: the loss in channels_last element order, and under bf16 autocast
        cl = copy.deepcopy(init[0])
        i = self.idx[0][0]
        with torch.no_grad():
            plain = self._loss(cl(self.x[i]), [h[i] for h in self.t])
            nhwc = self._loss([o.permute(0, 2, 3, 1) for o in cl(self.x[i])], [h[i] for h in self.t_nhwc])
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = self._loss(cl(self.x[i]), [h[i] for h in self.t]).float()
        out["nhwc_loss_rel_diff"] = float(abs(nhwc - plain) / plain)
        out["bf16_loss_rel_diff"] = float(abs(bf16 - plain) / plain)
        return out


def worker_main(spec_json: str) -> None:
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray prints (kdad's training log, library warnings) go to stderr
    sys.stdout = sys.stderr
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)

    def reply(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        w = {"kdad": KdadWorker, "reference": ReferenceWorker, "investigate": InvestigateWorker}[spec["path"]](spec)
        reply({"ok": True, "rss_kib": _status_kib("VmRSS"), "threads": torch.get_num_threads(),
               "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    except Exception as err:  # noqa: BLE001 - reported to the parent
        import traceback
        traceback.print_exc()
        reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "exit":
            reply({"ok": True, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
            return
        try:
            gc.collect()
            load1 = os.getloadavg()[0]
            rss = _status_kib("VmRSS")
            reset = _reset_hwm()
            out = getattr(w, op)(**cmd)
            out.update(ok=True, load1=load1, rss_before_kib=rss, hwm_kib=_status_kib("VmHWM") if reset else None)
        except Exception as err:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            out = {"ok": False, "error": f"{op}: {type(err).__name__}: {err}"}
        # ru_maxrss since the last reset of the high-water mark (clear_refs resets ru_maxrss too, so it
        # is read after every operation, before the next reset): the maximum over replies is the peak
        out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        reply(out)


# ============================================================================================ parent side


class Worker:
    """A worker process; ``call`` sends one command and waits for its answer."""

    def __init__(self, spec: dict, log_dir: Path, name: str, env: dict | None = None) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                  text=True, cwd=str(ROOT), env={**os.environ, **(env or {})})
        self.peak_kib = 0
        self.started = self._recv()

    def _recv(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died; its log {self.log} ends:\n{self._tail()}")
        out = json.loads(line)
        self.peak_kib = max(self.peak_kib, out.get("maxrss_kib") or 0)
        if not out.get("ok"):
            raise RuntimeError(f"worker {self.name}: {out.get('error')}; log {self.log}:\n{self._tail()}")
        return out

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])

    def send(self, op: str, **kw) -> None:
        self.p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.p.stdin.flush()

    def call(self, op: str, **kw) -> dict:
        self.send(op, **kw)
        return self._recv()

    def close(self) -> int:
        """Stop the worker; its peak RSS over its whole life (KiB): the largest ru_maxrss it reported."""
        self.call("exit")
        self.p.wait(timeout=60)
        return self.peak_kib


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ranges_for(s: Setting, args) -> dict:
    """Per timed operation: (least, most, step) images. Each operation is first run once at its least
    size (warm-up and calibration); the repeats then use as many images as fit in ``--budget`` seconds."""
    if args.quick:
        return {"hints": (16, 16, 16), "kdad_train": (2 * BATCH,) * 3, "ref_train": (BATCH,) * 3,
                "kdad_score": (BATCH,) * 3, "ref_score": (BATCH,) * 3, "kdad_map": (2, 2, 2), "ref_map": (1, 1, 1)}
    small = s.size <= 64
    return {"hints": (64, 4096, 64) if small else (16, 512, 16),
            "kdad_train": (2 * BATCH, s.n_train, BATCH),
            "ref_train": (BATCH, s.n_train, BATCH),
            "kdad_score": (256, s.n_test, 64) if small else (32, s.n_test, 16),
            "ref_score": (min(BATCH, s.n_test), s.n_test, BATCH),
            "kdad_map": (4, 32, 4),
            "ref_map": (1, 16, 1)}


def choose(rate: float, rng: tuple, budget: float) -> int:
    lo, hi, step = rng
    n = int(rate * budget // step * step)
    return hi if n >= hi else max(lo, n)


class Collector:
    """Rows of the tidy result table; values of repeated measurements are kept and reduced by median."""

    def __init__(self) -> None:
        self.samples: dict[tuple, dict] = {}

    def add(self, setting: str, path: str, measure: str, value: float, unit: str, *, method: str = "",
            through: str = "", images: int = 0, threads: int = 0, note: str = "", load1: float | None = None,
            compare: str | None = None, higher_better: bool = True) -> None:
        key = (setting, path, measure, method, through)
        d = self.samples.setdefault(key, {"values": [], "loads": [], "unit": unit, "images": images,
                                          "threads": threads, "note": note, "compare": compare,
                                          "higher_better": higher_better})
        d["values"].append(value)
        if load1 is not None:
            d["loads"].append(load1)

    def finish(self) -> list[dict]:
        rows = []
        for (setting, path, measure, method, through), d in self.samples.items():
            vals = d["values"]
            rows.append({"setting": setting, "path": path, "measure": measure, "method": method,
                         "grad_through": through, "value": statistics.median(vals), "unit": d["unit"],
                         "repeats": len(vals), "min": min(vals), "max": max(vals), "images": d["images"],
                         "threads": d["threads"], "load1": statistics.median(d["loads"]) if d["loads"] else None,
                         "note": d["note"], "_compare": d["compare"], "_higher": d["higher_better"]})
        by = {(r["setting"], r["path"], r["measure"], r["method"], r["grad_through"]): r for r in rows}
        for r in rows:
            r["ratio_kdad_over_reference"] = r["gain"] = None
            if not r["path"].startswith("kdad") or r["_compare"] is None:
                continue
            ref_path = "reference" + r["path"][len("kdad"):]  # "kdad (2 jobs × 1 thread)" → "reference (…)"
            ref = by.get((r["setting"], ref_path, *r["_compare"]))
            if ref and ref["value"]:
                ratio = r["value"] / ref["value"]
                r["ratio_kdad_over_reference"] = ratio
                r["gain"] = ratio if r["_higher"] else 1 / ratio
        return rows


def calibrate(w: Worker, op: str, kw: dict, rng: tuple, budget: float) -> int:
    """Run ``op`` once at its least size (warm-up); the size that fits the budget."""
    if rng[0] == rng[1]:  # --quick: nothing to choose, no warm-up
        return rng[0]
    out = w.call(op, n=rng[0], **kw)
    return choose(out["images"] / max(out["seconds"], 1e-9), rng, budget)


def run_setting(name: str, s: Setting, args, col: Collector, log_dir: Path, extra: dict) -> None:
    if args.quick:  # numbers meaningless: exercise every path in seconds
        s = dataclasses.replace(s, expert="efficientnet_lite0_random", size=32, n_train=2 * BATCH, n_test=BATCH,
                                maps=True)
    rng = ranges_for(s, args)
    k_sg = 2 if args.quick else (OFFICIAL_SG_SAMPLES if args.full_smoothgrad else args.sg_samples)
    spec = {"setting": dataclasses.asdict(s), "sizes": {"tile_from": 256 if s.size <= 64 else 32, "map_batch": 32},
            "threads": args.threads}
    log(f"== {name}: {s.what}")
    kd = Worker({**spec, "path": "kdad"}, log_dir, f"{name}-kdad")
    ref = Worker({**spec, "path": "reference"}, log_dir, f"{name}-reference")
    T = args.threads
    fk, fr = kd.call("flops"), ref.call("flops")
    mem = kd.call("fit_memory")  # kdad's float32 training targets of the whole training set
    plan = [  # (kind, kdad (op, kwargs, range), reference (op, kwargs, range) or None)
        ("hints", ("hints", {}, "hints"), None),
        ("train", ("train", {}, "kdad_train"), ("train", {}, "ref_train")),
        ("score", ("score", {}, "kdad_score"), ("score", {}, "ref_score")),
    ]
    if s.maps:
        for method in ("gradients", "guided_backprop", "smooth_grad"):
            samples = k_sg if method == "smooth_grad" else 1
            for through in ("both", "cloner"):
                kw = {"method": method, "through": through, "samples": samples}
                plan.append((f"map:{method}:{through}", ("map", kw, "kdad_map"),
                             ("map", kw, "ref_map") if through == "both" else None))
    sizes: dict = {}
    for kind, kcmd, rcmd in plan:  # warm-up + calibration
        for path, w, cmd in (("kdad", kd, kcmd), ("reference", ref, rcmd)):
            if cmd is not None:
                sizes[(path, kind)] = calibrate(w, cmd[0], cmd[1], rng[cmd[2]], args.budget)
    log("   sizes: " + ", ".join(f"{p}/{k} {n}" for (p, k), n in sizes.items()))
    hwm: dict[tuple, list] = {}
    train_increment = []
    for rep in range(args.repeats):
        for kind, kcmd, rcmd in plan:
            pair = [("kdad", kd, kcmd), ("reference", ref, rcmd)]
            for path, w, cmd in (pair if rep % 2 == 0 else pair[::-1]):  # A B, B A, A B: same load for both
                if cmd is None:
                    continue
                op, kw, _ = cmd
                if op == "train":
                    kw = {**kw, "seed": rep}
                out = w.call(op, n=sizes[(path, kind)], **kw)
                stage = kind.split(":")[0]
                if out.get("hwm_kib"):
                    hwm.setdefault((path, stage), []).append(out["hwm_kib"])
                    if path == "kdad" and stage == "train":
                        train_increment.append(out["hwm_kib"] - out["rss_before_kib"])
                record(col, name, path, kind, out, k_sg, T)
        log(f"   repeat {rep + 1}/{args.repeats} done  (load {os.getloadavg()[0]:.1f})")
    if mem.get("hwm_kib") and sizes[("kdad", "train")] < s.n_train and train_increment:
        # the timed fits used part of the training set: a whole-set fit holds the whole set's float32
        # targets (fit with 0 epochs) plus one batch's graph (the timed fit's increment; conservative)
        hwm[("kdad", "train")] = [mem["hwm_kib"] + max(train_increment)]
    if name == "fmnist_vgg16_32" and not args.no_thread_study:
        extra["threads"] = thread_study(name, spec, {"kdad": kd, "reference": ref}, rng, args, col, log_dir)
    for path, w in (("kdad", kd), ("reference", ref)):
        col.add(name, path, "peak_rss:setup", w.started["maxrss_kib"] / 1024, "MiB", threads=T,
                compare=("peak_rss:setup", "", ""), higher_better=False,
                note="ru_maxrss after start-up: imports, building the expert (VGG16: the whole torchvision "
                     "model, classifier included), the data" + (", the hint caches" if path == "kdad" else ""))
        col.add(name, path, "peak_rss", w.close() / 1024, "MiB", threads=T, compare=("peak_rss", "", ""),
                higher_better=False, note="ru_maxrss of the path's worker: building the expert + every stage")
    for (path, stage), vals in hwm.items():
        note = "VmHWM during the stage (reset before it), max over repeats"
        if (path, stage) == ("kdad", "train") and sizes[("kdad", "train")] < s.n_train:
            note = "whole training set's float32 targets (fit, 0 epochs) + the timed fit's increment"
        col.add(name, path, f"peak_rss:{stage}", max(vals) / 1024, "MiB", threads=T,
                compare=(f"peak_rss:{stage}", "", ""), higher_better=False, note=note)
    for path, f in (("kdad", fk["flops_per_image"]), ("reference", fr["flops_per_image"])):
        col.add(name, path, "train_gflop_per_image", f / 1e9, "GFLOP", threads=T,
                note="one training step per image: 3 × the forward's FLOPs (FlopCounterMode)"
                + (" (cloner only)" if path == "kdad" else " (expert with weight gradients + cloner)"))
    col.add(name, "kdad", "hint_cache_MiB_per_1000_images", fk["hint_bytes_per_image"] * 1000 / 2**20, "MiB",
            threads=T, note="float16 hints of the expert, all four")
    extra.setdefault("flops", {})[name] = {"kdad": fk["flops_per_image"], "reference": fr["flops_per_image"]}
    extra.setdefault("hint_bytes", {})[name] = fk["hint_bytes_per_image"]
    extra.setdefault("epochs", {})[name] = s


def record(col: Collector, name: str, path: str, kind: str, out: dict, k_sg: int, threads: int) -> None:
    n, sec = out["images"], out["seconds"]
    kw = dict(images=n, load1=out["load1"], threads=threads)
    if kind == "hints":
        col.add(name, path, "hints_images_per_s", n / sec, "images/s", note="compute_hints (float16), once per dataset",
                **kw)
    elif kind == "train":
        note = ("MKD.fit on cached hints, one epoch (seconds from history_)" if path == "kdad"
                else "official train loop: expert forward + backward every batch (batch 64)")
        col.add(name, path, "train_images_per_s", n / sec, "images/s", note=note,
                compare=("train_images_per_s", "", ""), **kw)
        if path == "kdad":
            col.add(name, path, "fit_overhead_s", out["overhead_seconds"], "s",
                    note="fit wall time − epoch time (float16 → float32 targets, initialisation)", **kw)
    elif kind == "score":
        note = ("MKD.score on cached hints (cloner only)" if path == "kdad"
                else "detection_test: expert + cloner per batch of 64, graph built")
        col.add(name, path, "score_images_per_s", n / sec, "images/s", note=note,
                compare=("score_images_per_s", "", ""), **kw)
    else:
        _, method, through = kind.split(":")
        ms = 1000 * sec / n
        if method == "smooth_grad":
            targets = [OFFICIAL_SG_SAMPLES] + ([KDAD_SG_SAMPLES] if path == "kdad" else [])
            for samples in targets:
                note = (f"measured with {k_sg} samples, scaled ×{samples / k_sg:g} (one backward per sample)"
                        if k_sg != samples else "measured")
                col.add(name, path, "map_ms_per_image", ms * samples / k_sg, "ms/image",
                        method=f"smooth_grad{samples}", through=through, note=note,
                        compare=("map_ms_per_image", "smooth_grad50", "both"), higher_better=False, **kw)
        else:
            note = "batched (map_batch 32)" if path == "kdad" else "one image per backward, expert weight gradients"
            col.add(name, path, "map_ms_per_image", ms, "ms/image", method=method, through=through, note=note,
                    compare=("map_ms_per_image", method, "both"), higher_better=False, **kw)


CONFIGS = (("1 job x 2 threads", 2, 1), ("1 job x 1 thread", 1, 1), ("2 jobs x 1 thread", 1, 2))


def thread_study(name, spec, main: dict, rng, args, col, log_dir) -> dict:
    """Training at 32×32, both paths: 1 job × 2 threads, 1 job × 1 thread (alone), and two 1-thread
    jobs at once (their images/s summed): which uses the 2 cores better. The setting's own workers
    are reused where their thread count fits."""
    log("   threads: 1×2 vs 1×1 vs 2×1 concurrent, both paths")
    T = args.threads
    workers, n, spawned = {}, {}, []

    def spawn(path, threads, tag):
        w = Worker({**spec, "threads": threads, "path": path}, log_dir, f"{name}-{path}-{tag}")
        spawned.append(w)
        return w
    for path in ("kdad", "reference"):
        w2 = main[path] if T == 2 else spawn(path, 2, "2threads")
        w1a = main[path] if T == 1 else spawn(path, 1, "1thread-a")
        w1b = spawn(path, 1, "1thread-b")
        workers[path] = (w2, w1a, w1b)
        r = rng["kdad_train" if path == "kdad" else "ref_train"]
        if path == "kdad" and not args.quick:
            r = (r[0], min(r[1], args.thread_images), r[2])
        n[(path, 2)] = calibrate(w2, "train", {}, r, args.budget)
        n[(path, 1)] = calibrate(w1a, "train", {}, r, args.budget)
        if r[0] != r[1]:
            w1b.call("train", n=r[0])  # warm-up
    res: dict = {}
    for rep in range(args.repeats):
        for path in (("kdad", "reference") if rep % 2 == 0 else ("reference", "kdad")):
            w2, w1a, w1b = workers[path]
            for label, threads, jobs in CONFIGS:
                m = n[(path, threads)]
                if jobs == 1:
                    out = (w2 if threads == 2 else w1a).call("train", n=m, seed=rep)
                    rate, load1 = m / out["seconds"], out["load1"]
                else:
                    w1a.send("train", n=m, seed=rep)
                    w1b.send("train", n=m, seed=rep)
                    a, b = w1a._recv(), w1b._recv()
                    rate, load1 = m / a["seconds"] + m / b["seconds"], a["load1"]
                res.setdefault((path, label), []).append(rate)
                col.add(name, path, f"threads:{label}", rate, "images/s", threads=threads, images=m * jobs,
                        load1=load1, compare=(f"threads:{label}", "", ""),
                        note="training images/s" + (", summed over the two concurrent jobs" if jobs == 2 else ""))
    for w in spawned:
        w.close()
    return {k: statistics.median(v) for k, v in res.items()}


def investigate(args, col: Collector, log_dir: Path) -> dict:
    """Several cloners per pass (grouped convs, vmap), torch.compile, channels_last vs contiguous."""
    found = {}
    singles = ["single:channels_last", "single:contiguous", "single:channels_last:nhwc_loss",
               "single:channels_last:f16_targets", "single:channels_last:bf16", "single:channels_last:nhwc_loss+bf16",
               "single:channels_last:compiled"]
    studies = [(32, args.investigate_threads, singles + ["grouped:channels_last", "grouped:contiguous", "vmap"]),
               (128, args.investigate_threads, singles)]
    for size, threads, variants in studies:
        setting = f"investigate_vgg16_{size}"
        batches = 2 if args.quick else (12 if size == 32 else 2)
        k = 2 if args.quick else args.models
        log(f"== {setting}: {', '.join(variants)} ({threads} thread(s), {k} models for grouped/vmap)")
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            w = Worker({"path": "investigate", "size": size, "models": k, "batches": batches, "threads": threads},
                       log_dir, setting, env={"TORCHINDUCTOR_CACHE_DIR": cache})
            flops = w.call("flops")["flops_per_image"]
            col.add(setting, "kdad", "train_gflop_per_image", flops / 1e9, "GFLOP", threads=threads,
                    note="cloner training step: 3 × the forward's FLOPs")
            for v in variants:
                out = w.call("prepare", variant=v)
                if v.endswith("compiled"):
                    col.add(setting, "kdad", "compile_s", out["seconds"], "s", method=v, threads=threads,
                            note="first call of the compiled step (cold inductor cache), incl. one step")
            if size == 32:
                eq = w.call("equivalence")
                for key, val in eq.items():
                    if key.endswith("_diff") or key == "max_abs_weight":
                        col.add(setting, "kdad", f"equivalence:{key}", val, "", threads=threads,
                                note="after 3 Adam steps, same init and batches as separate training")
                found["equivalence"] = eq
            for rep in range(args.repeats):
                for v in (variants if rep % 2 == 0 else variants[::-1]):
                    out = w.call("run", variant=v)
                    rate = out["images"] / out["seconds"]
                    col.add(setting, "kdad", "model_images_per_s", rate, "images/s", method=v, threads=threads,
                            images=out["images"], load1=out["load1"],
                            note="training images per second summed over the models trained in the pass")
                    col.add(setting, "kdad", "gflop_per_s", rate * flops / 1e9, "GFLOP/s", method=v,
                            threads=threads, load1=out["load1"], note="achieved, from the cloner's FLOPs per image")
            w.close()
    return found


# ---------------------------------------------------------------------------- protocol


def amortised(rows: list[dict], col: Collector) -> None:
    """kdad's training images/s with its one-off hint computation (the model's own training images)
    spread over the setting's epochs (51 at 32×32, 601 at 128×128: the paper's), one seed."""
    get = {(r["setting"], r["path"], r["measure"]): r["value"] for r in rows if not r["method"]}
    for name, s in SETTINGS.items():
        tr, hi = get.get((name, "kdad", "train_images_per_s")), get.get((name, "kdad", "hints_images_per_s"))
        if tr and hi:
            rate = s.epochs / (1 / hi + s.epochs / tr)
            col.add(name, "kdad", "train_images_per_s_incl_hints", rate, "images/s", threads=0,
                    compare=("train_images_per_s", "", ""),
                    note=f"hints of the training images once, amortised over {s.epochs} epochs (one seed)")


def protocol(rows: list[dict], col: Collector, extra: dict) -> dict:
    """The paper's Fashion-MNIST protocol (10 classes, one model per class) extrapolated per path."""
    get = {(r["setting"], r["path"], r["measure"]): r["value"] for r in rows if not r["method"]}
    a = "fmnist_vgg16_32"
    need = [(a, p, m) for p in ("kdad", "reference") for m in ("train_images_per_s", "score_images_per_s")]
    if any(k not in get for k in need + [(a, "kdad", "hints_images_per_s")]):
        return {}
    P = PROTOCOL
    n_tr, n_te, classes = P["train_per_class"], P["test_images"], P["classes"]
    k_hints = (P["train_total"] + n_te) / get[(a, "kdad", "hints_images_per_s")]
    k_overhead = get.get((a, "kdad", "fit_overhead_s"), 0.0)
    epochs = {"kdad": KDAD_EPOCHS, "reference": OFFICIAL_EPOCHS}
    passes = {"kdad": 1, "reference": OFFICIAL_TEST_PASSES}
    fixed = {"kdad": k_hints, "reference": 0.0}
    per_model_fixed = {"kdad": k_overhead, "reference": 0.0}
    one = {p: 1.0 for p in ("kdad", "reference")}
    configs = [("", {p: get[(a, p, "train_images_per_s")] for p in ("kdad", "reference")}, one)]
    th = extra.get("threads") or {}
    two_jobs_note = ""
    if all((p, "2 jobs x 1 thread") in th for p in ("kdad", "reference")):
        agg = {p: th[(p, "2 jobs x 1 thread")] for p in ("kdad", "reference")}
        if extra.get("threads_main") == 1:
            # the jobs' other parts (hints, scoring) were measured as one 1-thread job: two at once run
            # at the concurrency factor measured for training, agg(2 × 1 thread) / (1 × 1 thread)
            factor = {p: agg[p] / th[(p, "1 job x 1 thread")] for p in ("kdad", "reference")}
            two_jobs_note = (": training and scoring at the 1-thread rates × the concurrency measured for training "
                             f"(kdad {factor['kdad']:.2f}, reference {factor['reference']:.2f})")
        else:
            factor = one
            two_jobs_note = ": training at the two jobs' summed images/s, hints and scoring as one --threads job"
        configs.append((" (2 jobs × 1 thread)", agg, factor))
    out = {}
    for suffix, train_rate, factor in configs:
        for path in ("kdad", "reference"):
            score_s = n_te / (get[(a, path, "score_images_per_s")] * factor[path])
            per_model = epochs[path] * n_tr / train_rate[path] + passes[path] * score_s + per_model_fixed[path]
            for seeds in (1, 3):
                total = fixed[path] + seeds * classes * per_model  # the hint job: one job, alone
                out[(path + suffix, seeds)] = total
                col.add("fmnist_protocol", path + suffix, f"protocol_hours_{seeds}seed{'s' if seeds > 1 else ''}",
                        total / 3600, "h", compare=(f"protocol_hours_{seeds}seed{'s' if seeds > 1 else ''}", "", ""),
                        higher_better=False,
                        note=("hints once (70,000 images) + classes × seeds × (51 epochs + fit overhead + 1 scoring)"
                              if path == "kdad" else "classes × seeds × (52 epochs + 7 test passes)")
                        + (two_jobs_note if suffix else f": one job of {extra.get('threads_main')} thread(s)"))
    assumptions = [
        ("reference", "assume_classes", classes, "models", "one model per class (one-class protocol)"),
        ("reference", "assume_train_images_per_class", n_tr, "images", "Fashion-MNIST"),
        ("reference", "assume_epochs", OFFICIAL_EPOCHS, "epochs", "train.py: range(num_epochs + 1), num_epochs 51"),
        ("reference", "assume_test_passes", OFFICIAL_TEST_PASSES, "passes",
         "detection_test at epochs 0,10,…,50 + test.py's final pass, 10,000 images each"),
        ("reference", "assume_s_per_epoch", n_tr / configs[0][1]["reference"], "s", "6,000 / training images/s"),
        ("reference", "assume_s_per_test_pass", n_te / get[(a, "reference", "score_images_per_s")], "s",
         "10,000 / scoring images/s"),
        ("kdad", "assume_classes", classes, "models", "one model per class"),
        ("kdad", "assume_epochs", KDAD_EPOCHS, "epochs", "kdad's paper config = the official evaluated checkpoint "
         "(epoch index 50)"),
        ("kdad", "assume_test_passes", 1, "passes", "final scoring only: intermediate passes choose nothing"),
        ("kdad", "assume_hint_images_once", P["train_total"] + n_te, "images",
         "expert run once per dataset, shared by all classes and seeds"),
        ("kdad", "assume_s_hints_once", k_hints, "s", "70,000 / hint images/s"),
        ("kdad", "hint_cache_MiB", (P["train_total"] + n_te) * extra.get("hint_bytes", {}).get(a, 0) / 2**20, "MiB",
         "float16 hints of the 70,000 images: build_hint_cache holds all of them in memory before saving"),
        ("kdad", "assume_s_per_epoch", n_tr / configs[0][1]["kdad"], "s", "6,000 / training images/s"),
        ("kdad", "assume_s_fit_overhead", k_overhead, "s", "per model, measured"),
        ("kdad", "assume_s_per_test_pass", n_te / get[(a, "kdad", "score_images_per_s")], "s",
         "10,000 / scoring images/s"),
    ]
    for path, measure, value, unit, note in assumptions:
        col.add("fmnist_protocol", path, measure, value, unit,
                note=note + "; process start-up and data loading not counted (either path)")
    return out


# ---------------------------------------------------------------------------- output


def fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}g}"


def markdown(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    main = df[~df.setting.isin(["fmnist_protocol"]) & ~df.setting.str.startswith("investigate")
              & ~df.measure.str.startswith("threads:")]
    out = []
    lines = []
    for (setting, measure, method, through), g in main.groupby(["setting", "measure", "method", "grad_through"],
                                                               sort=False):
        k = g[g.path == "kdad"]
        r = g[g.path == "reference"]
        kv = k.value.iloc[0] if len(k) else None
        rv = r.value.iloc[0] if len(r) else None
        what = measure + (f" {method}" if method else "") + (f" (through {through})" if through and through != "both"
                                                             else "")
        if len(k) and k._compare.iloc[0] and rv is None and k._compare.iloc[0][1]:
            rr = main[(main.setting == setting) & (main.path == "reference") & (main.measure == measure)
                      & (main.method == k._compare.iloc[0][1])]
            rv = rr.value.iloc[0] if len(rr) else None
        unit = g.unit.iloc[0]
        ratio = k.ratio_kdad_over_reference.iloc[0] if len(k) else None
        gain = k.gain.iloc[0] if len(k) else None
        lines.append({"setting": setting, "measure": what, "unit": unit, "kdad": fmt(kv), "reference": fmt(rv),
                      "kdad/ref": fmt(ratio), "kdad better ×": fmt(gain),
                      "load": fmt(g.load1.dropna().median() if g.load1.notna().any() else None, 2)})
    out.append(pd.DataFrame(lines).to_markdown(index=False))
    proto = df[df.setting == "fmnist_protocol"]
    if len(proto):
        out.append("\nPaper's Fashion-MNIST protocol, extrapolated:\n")
        out.append(proto[["path", "measure", "value", "unit", "note"]].assign(value=proto.value.map(fmt))
                   .to_markdown(index=False))
    extra = df[df.measure.str.startswith("threads:") | df.setting.str.startswith("investigate")]
    if len(extra):
        out.append("\nThreads and investigations:\n")
        out.append(extra[["setting", "path", "measure", "method", "value", "unit", "threads", "load1"]]
                   .assign(value=extra.value.map(fmt), load1=extra.load1.map(lambda x: fmt(x, 2)))
                   .to_markdown(index=False))
    return "\n".join(out)


def verdicts(rows: list[dict], proto: dict, extra: dict) -> list[str]:
    get = {(r["setting"], r["path"], r["measure"], r["method"], r["grad_through"]): r for r in rows}
    lines = []

    def ratio(setting, measure):
        r = get.get((setting, "kdad", measure, "", ""))
        return r and r["gain"]

    if proto:
        for suffix in ("", " (2 jobs × 1 thread)"):
            for seeds in (1, 3):
                if ("kdad" + suffix, seeds) not in proto:
                    continue
                k, r = proto[("kdad" + suffix, seeds)], proto[("reference" + suffix, seeds)]
                lines.append(f"protocol{suffix or ' (1 job × --threads)'}, {seeds} seed(s): kdad {k / 3600:.2f} h vs "
                             f"reference {r / 3600:.1f} h → {r / k:.1f}× (target ≥ 20×: {'met' if r / k >= 20 else 'NOT met'})")
        best_k = min(v for (p, sd), v in proto.items() if sd == 3 and p.startswith("kdad"))
        best_r = min(v for (p, sd), v in proto.items() if sd == 3 and p.startswith("reference"))
        lines.append(f"three seeds, best configuration of each path: kdad {best_k / 3600:.2f} h vs reference "
                     f"{best_r / 3600:.1f} h → {best_r / best_k:.1f}×; within 1 h (≈ 48×): "
                     f"{'met' if best_k <= 3600 else 'NOT met'}")
    for setting, target in (("fmnist_vgg16_32", 10), ("mvtec_vgg16_128", 3)):
        g = ratio(setting, "train_images_per_s")
        if g:
            lines.append(f"training {setting}: {g:.1f}× the reference's images/s (target ≥ {target}×: "
                         f"{'met' if g >= target else 'NOT met'})")
    for r in rows:
        if r["path"] == "kdad" and r["measure"] == "peak_rss" and r["gain"]:
            lines.append(f"peak RSS {r['setting']}: kdad {r['value']:.0f} MiB vs reference "
                         f"{r['value'] / r['ratio_kdad_over_reference']:.0f} MiB "
                         f"({'met' if r['ratio_kdad_over_reference'] <= 1 else 'NOT met'}: no higher)")
    f = extra.get("flops", {}).get("fmnist_vgg16_32")
    r = get.get(("fmnist_vgg16_32", "kdad", "train_images_per_s", "", ""))
    if proto and f and r:
        P, fk, fr = PROTOCOL, f["kdad"], f["reference"]
        fe = (fr - fk) / 3  # the expert's forward (a step is 3 × the forward)
        models = 3 * P["classes"]
        k_flop = models * (KDAD_EPOCHS * P["train_per_class"] * fk + P["test_images"] * fk / 3) \
            + (P["train_total"] + P["test_images"]) * fe
        r_flop = models * (OFFICIAL_EPOCHS * P["train_per_class"] * fr + OFFICIAL_TEST_PASSES * P["test_images"] * fr / 3)
        lines.append(f"FLOPs of the protocol, 3 seeds: kdad {k_flop / 1e12:,.0f} TFLOP, reference {r_flop / 1e12:,.0f} "
                     f"TFLOP → {r_flop / k_flop:.1f}× at equal GFLOP/s; kdad's cloner runs at "
                     f"{r['value'] * fk / 1e9:.0f} GFLOP/s per job here; 3 seeds in 1 h would need "
                     f"{k_flop / 3600 / 1e9:.0f} GFLOP/s sustained")
    hb = extra.get("hint_bytes", {}).get("fmnist_vgg16_32")
    if hb:
        lines.append(f"memory of kdad's features job at (a): build_hint_cache holds the float16 hints of all 70,000 "
                     f"images before saving: {70000 * hb / 2**20:,.0f} MiB on top of torch and the expert (not "
                     "measured as a worker here; the training/scoring workers hold one class's cache)")
    fl = extra.get("flops", {})
    for setting, f in fl.items():
        r = get.get((setting, "kdad", "train_images_per_s", "", ""))
        rr = get.get((setting, "reference", "train_images_per_s", "", ""))
        if r and rr:
            lines.append(f"{setting}: cloner step {f['kdad'] / 1e9:.3f} GFLOP/image → {r['value'] * f['kdad'] / 1e9:.1f} "
                         f"GFLOP/s achieved; reference step {f['reference'] / 1e9:.3f} GFLOP/image → "
                         f"{rr['value'] * f['reference'] / 1e9:.1f} GFLOP/s; FLOP ratio "
                         f"{f['reference'] / f['kdad']:.1f}× bounds the training speed-up at equal efficiency")
    th = extra.get("threads")
    if th:
        for path in ("kdad", "reference"):
            v = {label: th[(path, label)] for label, _, _ in CONFIGS}
            best = max(("1 job x 2 threads", "2 jobs x 1 thread"), key=v.get)
            lines.append(f"threads, {path} training at 32×32: 1 job × 2 threads {v['1 job x 2 threads']:.0f} img/s, "
                         f"1 job × 1 thread {v['1 job x 1 thread']:.0f}, 2 jobs × 1 thread {v['2 jobs x 1 thread']:.0f}"
                         f" (summed) → better use of the 2 cores: {best.replace('x', '×')}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per path (default 1: on this shared "
                    "2-core machine two threads run several times slower than one; the thread study measures both)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement, median reported (≥ 3)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {', '.join(SETTINGS)}")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds per timed operation and repeat (the "
                    "image count is chosen to fit, within each operation's least and most)")
    ap.add_argument("--sg-samples", type=int, default=4, help="SmoothGrad samples actually run per map; the "
                    "time is scaled to 50 and 16 samples (linear: one backward pass per sample)")
    ap.add_argument("--full-smoothgrad", action="store_true", help="run all 50 SmoothGrad samples (slow)")
    ap.add_argument("--thread-images", type=int, default=3000, help="most images per timed epoch in the thread study")
    ap.add_argument("--no-thread-study", action="store_true")
    ap.add_argument("--investigate", action="store_true", help="add the multi-model, torch.compile and "
                    "memory-format studies")
    ap.add_argument("--investigate-threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=10, help="cloners per pass in the multi-model study")
    ap.add_argument("--quick", action="store_true", help="minuscule sizes, 1 repeat (smoke test; numbers meaningless)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.csv"))
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    if args.quick:
        args.repeats = 1
    elif args.repeats < 3:
        ap.error("--repeats must be ≥ 3 (medians of at least three); --quick is the exception")
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    from kdad.provenance import code_version, machine

    torch.set_num_threads(args.threads)
    mach = machine()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    log(f"machine: {mach}  load {load_start}")
    col, extra = Collector(), {"threads_main": args.threads}
    with tempfile.TemporaryDirectory(prefix="kdad-bench-") as tmp:
        log_dir = Path(tmp)
        try:
            sections = extra["section_minutes"] = {}
            for name in names:
                t1 = time.perf_counter()
                run_setting(name, SETTINGS[name], args, col, log_dir, extra)
                sections[name] = (time.perf_counter() - t1) / 60
            if args.investigate:
                t1 = time.perf_counter()
                extra["investigate"] = investigate(args, col, log_dir)
                sections["investigate"] = (time.perf_counter() - t1) / 60
        except RuntimeError as err:
            log(str(err))
            return 1
    rows = col.finish()
    amortised(rows, col)
    proto = protocol(rows, col, extra)
    rows = col.finish()
    load_end = os.getloadavg()
    wall = time.perf_counter() - t0
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        s = SETTINGS.get(r["setting"])
        r.update(expert=s.expert if s else ("vgg16_random" if r["setting"].startswith(("investigate", "fmnist_protocol"))
                                            else ""),
                 size=s.size if s else (int(r["setting"].rsplit("_", 1)[1]) if r["setting"].startswith("investigate")
                                        else 32),
                 machine=mach["machine"], cores=mach["cores"], gpu=mach["gpu"], torch=torch.__version__,
                 code=code_version(), date=stamp, load1_start=load_start[0], load1_end=load_end[0],
                 command="python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 quick=args.quick)
        r["weights"] = weights_label(r["expert"]) if r["expert"] else ""
    import pandas as pd

    cols = ["setting", "expert", "weights", "size", "path", "measure", "method", "grad_through", "value", "unit",
            "ratio_kdad_over_reference", "gain", "repeats", "min", "max", "images", "threads", "load1", "note",
            "machine", "cores", "gpu", "torch", "code", "date", "load1_start", "load1_end", "command", "quick"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pd.DataFrame(rows)[cols].to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    print(f"\nMachine: {mach['machine']}, {mach['cores']} cores, {args.threads} torch threads per path, "
          f"GPU: {mach['gpu'] or 'none'}; torch {torch.__version__}; load average {load_start[0]:.2f} at start, "
          f"{load_end[0]:.2f} at end; {wall / 60:.1f} min ("
          + ", ".join(f"{k} {v:.1f}" for k, v in extra["section_minutes"].items()) + ").\n")
    print(markdown(rows))
    print("\nTargets:")
    for line in verdicts(rows, proto, extra):
        print("- " + line)
    print(f"\n→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
