"""The speed benchmark's ``--investigate`` path (run inside a worker process): training-step throughput
of cloner variants (several cloners per pass as grouped convolutions or ``torch.func.vmap``,
``torch.compile``, channels_last vs contiguous, the loss in channels_last order, float16 targets, bf16
autocast) and their numerical equivalence to separate training."""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from benchmarks.speed_paths import BATCH, _step_flops

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


