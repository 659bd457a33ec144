"""How hard the ``textures`` levels are, measured without any trained method, on the development
part ``textures_dev`` (kdad.devdata: a region of every photograph and a set of coins that no
reported draw uses), so that what it shows can guide the generator's levels without reading any
reported tile.

For one data seed, generates every category's development part (timed, one category at a time on
one core), reads it back with the dataset's own loader and reports, per category and level:

- the realised relative contrast of the defects (mean |defect - clean| over the mask, in units of
  the local std; from the manifest) and the absolute contrast in grey levels;
- pixel and image AUROC of label-free trivial detectors fitted on the training tiles only:
  ``pixel_z``: per-pixel z-score against the training tiles' per-pixel mean and std (what a
  "|tile - mean training tile|" detector sees; for stationary textures this is a brightness
  detector); ``local_stats``: Mahalanobis distance of each pixel's local (9x9) mean and std per
  channel under a Gaussian fitted to the training pixels (a local brightness/contrast detector);
  and with ``--deep`` ``deep_knn``: distance of each stride-8/16 feature of the offline ImageNet
  EfficientNet-Lite0 to its nearest training feature (a PatchCore without coreset; a lower bound
  on what the real methods reach);
- how well train and test good tiles match (:func:`kdad.data.textures.compare_splits`).

Maps are smoothed (Gaussian, sigma 2), image scores are map maxima. Pixel AUROC of a level uses
the pixels of that level's images and of every good image; image AUROC that level's images
against the good ones.

    python benchmarks/textures_difficulty.py --seed 0 --deep --threads 2 --out results/textures_difficulty_dev_seed0.csv
    python benchmarks/textures_difficulty.py --report results/textures_difficulty_dev_seed0.csv

results/textures_difficulty_dev_seed0.csv holds the numbers of the current generator's
development part.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from kdad.data import textures as tex
from kdad.devdata import dev_tasks, textures_dev_folder
from kdad.metrics import image_auroc, pixel_auroc


def pixel_z(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """[N, C, H, W] uint8 → maps [N, H, W]: mean over channels of |x - mu| / sd per pixel."""
    tr = train.astype(np.float32)
    mu, sd = tr.mean(axis=0), tr.std(axis=0) + 1.0
    return (np.abs(test.astype(np.float32) - mu) / sd).mean(axis=1)


def _local_features(images: np.ndarray) -> np.ndarray:
    """[N, C, H, W] → [N, H, W, 2C]: 9x9 local mean and std of every channel."""
    f = images.astype(np.float32)
    m = ndimage.uniform_filter(f, (1, 1, 9, 9), mode="reflect")
    s = np.sqrt(np.maximum(ndimage.uniform_filter(f * f, (1, 1, 9, 9), mode="reflect") - m * m, 0))
    return np.concatenate([m, s], axis=1).transpose(0, 2, 3, 1)


def local_stats(train: np.ndarray, test: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ftr = _local_features(train).reshape(-1, 2 * train.shape[1])
    ftr = ftr[rng.choice(len(ftr), min(len(ftr), 200_000), replace=False)]
    mu = ftr.mean(axis=0)
    inv = np.linalg.inv(np.cov(ftr, rowvar=False) + 1e-3 * np.eye(ftr.shape[1]))
    d = _local_features(test) - mu
    return np.sqrt(np.maximum(np.einsum("nhwc,cd,nhwd->nhw", d, inv, d), 0))


class DeepKNN:
    """Nearest-training-feature distance on EfficientNet-Lite0 stride-8 and -16 hints."""

    def __init__(self, threads: int) -> None:
        import torch

        from kdad.experts import build_expert

        torch.set_num_threads(threads)
        self.torch = torch
        self.expert = build_expert("efficientnet_lite0")

    def features(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 32):
                x = self.expert.preprocess(torch.from_numpy(np.ascontiguousarray(images[i:i + 32])))
                hints = self.expert(x)
                a, b = hints[1], hints[2]  # stride 8 and 16
                a = torch.nn.functional.avg_pool2d(a, 3, 1, 1)  # a little neighbourhood, as PatchCore
                b = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(b, 3, 1, 1), size=a.shape[-2:],
                                                    mode="bilinear", align_corners=False)
                out.append(torch.cat([a, b], dim=1).permute(0, 2, 3, 1).float().numpy())
        return np.concatenate(out)

    def __call__(self, train: np.ndarray, test: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        torch = self.torch
        ftr = self.features(train)
        bank = ftr.reshape(-1, ftr.shape[-1])
        bank = torch.from_numpy(bank[rng.choice(len(bank), min(len(bank), 16_384), replace=False)])
        fte = self.features(test)
        q = torch.from_numpy(fte.reshape(-1, fte.shape[-1]))
        dist = torch.cat([torch.cdist(q[i:i + 4096], bank).min(dim=1).values for i in range(0, len(q), 4096)])
        maps = dist.numpy().reshape(fte.shape[:3])
        size = test.shape[-1]
        return np.stack([ndimage.zoom(m, size / m.shape[0], order=1) for m in maps])


def evaluate(maps: np.ndarray, masks: np.ndarray, anomalous: np.ndarray, level: np.ndarray, defect: np.ndarray
             ) -> dict[tuple[str, str], dict]:
    """{(level, kind): {pixel_auroc, image_auroc}} for every level and "all", kinds and "all"."""
    maps = ndimage.gaussian_filter(maps, (0, 2, 2))
    scores = maps.reshape(len(maps), -1).max(axis=1)
    good = ~anomalous
    out = {}
    for lvl in (*tex.LEVELS, "all"):
        for kind in (*tex.DEFECT_KINDS, "all"):
            pick = anomalous & ((level == lvl) | (lvl == "all")) & ((defect == kind) | (kind == "all"))
            if not pick.any():
                continue
            rows = good | pick
            out[lvl, kind] = {"pixel_auroc": pixel_auroc(masks[rows], maps[rows]),
                              "image_auroc": image_auroc(anomalous[rows].astype(int), scores[rows])}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", type=Path, default=None, help="where to generate (default: a temporary folder)")
    p.add_argument("--categories", nargs="*", default=list(tex.TEXTURE_CATEGORIES))
    p.add_argument("--deep", action="store_true", help="also the EfficientNet-Lite0 nearest-feature detector")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="CSV of every number (default: print only)")
    p.add_argument("--report", type=Path, default=None, help="only print the tables of an earlier --out CSV")
    args = p.parse_args()
    if args.report:
        report(pd.read_csv(args.report))
        return
    rng = np.random.default_rng(0)
    deep = DeepKNN(args.threads) if args.deep else None

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        rows = []
        for c in args.categories:
            t0 = time.process_time()
            folder = textures_dev_folder(root, args.seed, [c])
            seconds = time.process_time() - t0
            task = next(dev_tasks("textures_dev", root, [c], seed=args.seed))
            files = json.loads((folder / "manifest.json").read_text())["photos"][c]["files"]
            defects = [i for i in files.values() if "kind" in i]
            val, masks, anomalous = task.val, task.masks, task.labels.astype(bool)
            as_tiles = lambda a: a.transpose(0, 2, 3, 1)  # noqa: E731
            match = tex.compare_splits(tex.tile_statistics(as_tiles(task.train)),
                                       tex.tile_statistics(as_tiles(val[~anomalous])))
            detectors = {"pixel_z": pixel_z(task.train, val),
                         "local_stats": local_stats(task.train, val, rng)}
            if deep is not None:
                detectors["deep_knn"] = deep(task.train, val, rng)
            for det, maps in detectors.items():
                for (lvl, kind), res in evaluate(maps, masks, anomalous, task.level, task.defect).items():
                    chosen = [d for d in defects if lvl in ("all", d["level"]) and kind in ("all", d["kind"])]
                    rows.append({"seed": args.seed, "category": c, "level": lvl, "kind": kind, "detector": det, **res,
                                 "rel_contrast": np.mean([d["rel_contrast"] for d in chosen]),
                                 "abs_contrast": np.mean([d["abs_contrast"] for d in chosen]),
                                 "area_fraction": np.mean([d["area_fraction"] for d in chosen]),
                                 "n_defective": len(chosen), "n_good": int((~anomalous).sum()),
                                 "generate_cpu_seconds": round(seconds, 2),
                                 **{f"split_{k}": v for k, v in match.items()}})
            print(f"{c}: generated in {seconds:.1f} s CPU; train/test good: mean {match['mean_diff']:+.2f} "
                  f"(effect {match['mean_effect']:+.2f}), local std x{match['local_std_ratio']:.3f} "
                  f"(effect {match['local_std_effect']:+.2f}), luma W1 {match['hist_w1']:.3f}", flush=True)
    df = pd.DataFrame(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out, index=False, float_format="%.4f")
    report(df)


def report(df: pd.DataFrame) -> None:
    pd.set_option("display.width", 250)
    every = df[df.kind == "all"]
    table = every.pivot_table(index=["category", "level"], columns="detector",
                              values=["pixel_auroc", "image_auroc"]).round(3)
    contrast = every[every.detector == every.detector.iloc[0]].set_index(["category", "level"])[
        ["rel_contrast", "abs_contrast", "area_fraction"]].round(3)
    contrast.columns = pd.MultiIndex.from_tuples([("defects", col) for col in contrast.columns])
    print(table.join(contrast).to_string())
    print("\nmean over categories\n" + every.groupby(["level", "detector"])[
        ["pixel_auroc", "image_auroc", "rel_contrast", "abs_contrast"]].mean().round(3).to_string())
    kinds = df[(df.kind != "all") & (df.level != "all")]
    print("\nimage AUROC by kind, mean over categories\n" + kinds.pivot_table(
        index=["detector", "kind"], columns="level", values="image_auroc").round(3)[list(tex.LEVELS)].to_string())


if __name__ == "__main__":
    main()
