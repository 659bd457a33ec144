"""Training budgets of the trained baselines: seconds per epoch, the training loss per epoch and the
image AUROC at a few epoch counts, on one development task (kdad.devdata: a held-out part of a
semantic set's *training* split, or ``textures_dev``; never a test split) at its benchmark size.

    python -m benchmarks.baseline_budgets --dataset fashion_mnist --category 0 \
        --method ae_l2 --epochs 40 --eval-at 5 10 20 40 [--set lr=1e-3 ...] [--out results/baseline_budgets.csv]

One process trains one method; it extends one run through the training loop's checkpoint (training
for more epochs continues a shorter run exactly), so the AUROC at 5, 10, 20 … epochs costs one
training of the largest count plus the evaluations. Rows are appended to ``--out``:
method, options, dataset, category, train_images, epoch, phase, loss, seconds, image_auroc (empty
where not evaluated). Runs with ``--threads`` torch threads (default 1, as a workflow job).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdad.devdata import dev_tasks, image_size
from kdad.experts import build_expert
from kdad.features import compute_hints
from kdad.methods import build_method, get_method
from kdad.metrics import image_auroc

FIELDS = ["method", "options", "dataset", "category", "image_size", "train_images", "threads", "epoch", "phase",
          "loss", "seconds", "image_auroc"]


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


def load_split(dataset: str, category: str, image_size: int, root: Path, max_train: int | None, seed: int):
    """(train images, validation images, validation labels, category name) of one development task
    (kdad.devdata: a held-out part of a semantic set's training split, or ``textures_dev``)."""
    task = next(iter(dev_tasks(dataset, root, [category], image_size=image_size, seed=seed)))
    train = task.train[:max_train] if max_train else task.train
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return tensor(train), tensor(task.val), task.labels, task.category


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--category", default="0", help="category name or index")
    ap.add_argument("--image-size", type=int, default=None, help="default: the dataset's paper size")
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--max-val", type=int, default=None, help="evaluate on a random subset (speed)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--eval-at", type=int, nargs="*", default=[])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="method options")
    ap.add_argument("--root", type=Path, default=Path("resources/data"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("results/baseline_budgets.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    size = args.image_size or image_size(args.dataset)
    train, val, labels, category = load_split(args.dataset, args.category, size, args.root, args.max_train, args.seed)
    if args.max_val and len(val) > args.max_val:
        rng = np.random.default_rng(0)
        keep = np.sort(rng.choice(len(val), args.max_val, replace=False))
        val, labels = val[keep], labels[keep]
    options = dict(kv.split("=", 1) for kv in args.set)
    options = {k: _value(v) for k, v in options.items()}
    method = get_method(args.method)
    train_hints = val_hints = None
    if method.expert_field:
        _, cfg, _ = build_method(args.method, options)
        expert = build_expert(getattr(cfg, method.expert_field), getattr(cfg, "expert_weights", None))
        t0 = time.perf_counter()
        train_hints = [torch.from_numpy(h) for h in compute_hints(expert, train, normalize=cfg.normalize)]
        val_hints = [torch.from_numpy(h) for h in compute_hints(expert, val, normalize=cfg.normalize)]
        print(f"hints: {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"{args.method} on {args.dataset}/{category} at {size} px: {len(train)} train, {len(val)} validation images",
          flush=True)

    rows, aurocs = [], {}
    stops = sorted({e for e in args.eval_at if 0 < e < args.epochs} | {args.epochs})
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt.pt"
        det = None
        for stop in stops:
            _, _, det = build_method(args.method, {**options, "epochs": stop})
            det.fit(train, seed=args.seed, hints=train_hints, checkpoint=ckpt)
            t0 = time.perf_counter()
            aurocs[stop] = float(image_auroc(labels, det.score(val, hints=val_hints)))
            print(f"  epochs {stop}: image AUROC {100 * aurocs[stop]:.1f}  (scored in {time.perf_counter() - t0:.1f} s)",
                  flush=True)
    per_phase = {}
    for rec in det.history_:
        per_phase.setdefault(rec["phase"], 0)
        auroc = aurocs.get(rec["epoch"]) if rec["phase"] == det.history_[-1]["phase"] else None
        rows.append({"method": args.method, "options": " ".join(args.set), "dataset": args.dataset,
                     "category": category, "image_size": size, "train_images": len(train), "threads": args.threads,
                     "epoch": rec["epoch"], "phase": rec["phase"], "loss": f"{rec['loss']:.6g}",
                     "seconds": f"{rec['seconds']:.3f}", "image_auroc": "" if auroc is None else f"{auroc:.4f}"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    new = not args.out.exists()
    with open(args.out, "a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    secs = [float(r["seconds"]) for r in rows]
    print(f"mean {np.mean(secs):.2f} s/epoch over {len(secs)} epochs; wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
