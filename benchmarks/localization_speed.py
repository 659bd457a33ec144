"""Per-image cost of each localisation method at 128×128 with the VGG16 expert (issue: speed).

Compares kdad's batched maps with a reference path that repeats the official code's pattern: one
image per backward pass, the expert not detached, so its weight gradients are computed too.
VGG16's ImageNet file is not available offline here; timing does not depend on the weight values,
so random weights are used unless ``--weights`` names the file. Writes a CSV (default
results/localization_speed.csv) and prints a table.

    python benchmarks/localization_speed.py --images 16 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kdad.experts import build_expert
from kdad.localize import METHODS, localize
from kdad.mkd import MKD, MKDConfig


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def official_pattern(model: MKD, images: torch.Tensor, samples: int = 1, noise: float = 0.0) -> None:
    """One image per backward pass through both networks, with parameter gradients enabled."""
    expert = copy.deepcopy(model.expert)
    for p in expert.parameters():
        p.requires_grad_(True)
    for i in range(len(images)):
        x0 = model.preprocess(images[i:i + 1])
        for _ in range(samples):
            x = (x0 + noise * torch.randn_like(x0)).requires_grad_(True)
            loss = model.loss(model.cloner(x), expert(x), model.config.score_hints).sum()
            model.cloner.zero_grad()
            expert.zero_grad()
            loss.backward()
            _ = x.grad.abs().sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weights", default=None, help="vgg16-397923af.pth (optional; timing only)")
    ap.add_argument("--smooth-grad-samples", type=int, default=50)
    ap.add_argument("--out", default="results/localization_speed.csv")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    expert = build_expert("vgg16", args.weights) if args.weights else build_expert("vgg16_random")
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    rows = []

    def add(name, seconds, note=""):
        rows.append({"method": name, "ms_per_image": 1000 * seconds / args.images, "images": args.images,
                     "size": args.size, "threads": args.threads, "note": note})
        print(f"{name:45s} {1000 * seconds / args.images:9.1f} ms/image  {note}")

    base = dict(expert="vgg16_random", map_batch=16, blur_sigma=4.0, smooth_grad_samples=args.smooth_grad_samples)
    model = MKD(MKDConfig(**base), expert=expert).eval()
    x = model.preprocess(images)
    with torch.inference_mode():
        add("expert forward (reference unit)", timed(lambda: [expert(x[i:i + 16]) for i in range(0, len(x), 16)]))
    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        for i in range(0, len(xg), 16):
            sum(h.sum() for h in expert(xg[i:i + 16])).backward()
    add("expert forward+backward (input grad only)", timed(fwd_bwd))
    add("official pattern: gradients", timed(lambda: official_pattern(model, images)),
        "1 image per backward, expert weight grads")
    n_ref = max(1, min(args.images, 2))
    t = timed(lambda: official_pattern(model, images[:n_ref], samples=args.smooth_grad_samples, noise=0.0025))
    add(f"official pattern: smooth_grad x{args.smooth_grad_samples}", t * args.images / n_ref,
        f"measured on {n_ref} image(s)")
    for through in ("both", "cloner"):
        model.config.grad_through = through
        hints = model.expert_hints(images) if through == "cloner" else None
        for method in METHODS:
            add(f"kdad {method} (through {through})", timed(lambda: localize(model, images, hints=hints, method=method)),
                "batched; cloner-only reuses the score's expert hints" if through == "cloner" else "batched")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df["cpu"] = platform.processor() or platform.machine()
    df["torch"] = torch.__version__
    tmp = out.with_name(f".{out.name}.tmp")
    df.to_csv(tmp, index=False, float_format="%.2f")
    os.replace(tmp, out)
    print(f"→ {out}")


if __name__ == "__main__":
    main()
