"""Synthetic TEST DATA in the result-file schema of docs/results.md: none of it is a measured result.

``write_results(folder)`` writes runs.csv, defects.csv, curves.csv and history.csv;
``write_examples(work)`` writes examples.npz files in ``<work>/eval/<dataset>/<protocol>/<variant>/seed<seed>/``.

Two datasets: fashion_mnist (4 categories, both protocols, hint / loss / λ ablations of mkd on the
one-class protocol) and mvtec_ad (2 categories, one-class; localisation ablations of mkd; defects
per kind and per level).  Seeds 0, 1, 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SEEDS = (0, 1, 2)
FM_CATS = ("0", "1", "2", "3")
MV_CATS = ("bottle", "cable")

MKD_OPTS = {"expert": "efficientnet_lite0", "epochs": "15", "train_hints": "0,1,2,3", "score_hints": "1,2,3",
            "terms": "both", "lam": "0.01", "localization": "gradients", "blur_sigma": "4.0",
            "map_normalization": "none", "smooth_grad_noise": "0.0025", "map_subset": ""}
# variant → (method, ablation_of, option overrides, base image AUROC)
VARIANTS = {
    "mkd": ("mkd", "", {}, 0.90),
    "knn": ("knn", "", {"k": "5"}, 0.85),
    "ocsvm-expert": ("ocsvm", "", {"features": "expert"}, 0.80),
    "ae_l2": ("ae_l2", "", {"epochs": "2"}, 0.70),
    "mkd-hints-1": ("mkd", "mkd", {"train_hints": "3", "score_hints": "3"}, 0.82),
    "mkd-hints-4": ("mkd", "mkd", {"train_hints": "0,1,2,3", "score_hints": "0,1,2,3"}, 0.89),
    "mkd-loss-direction": ("mkd", "mkd", {"terms": "direction"}, 0.86),
    "mkd-lam-0.1": ("mkd", "mkd", {"lam": "0.1"}, 0.88),
    "mkd-smoothgrad": ("mkd", "mkd", {"localization": "smooth_grad"}, 0.90),
    "mkd-noblur": ("mkd", "mkd", {"blur_sigma": "0.0"}, 0.90),
    "mkd-smoothgrad-noblur": ("mkd", "mkd", {"localization": "smooth_grad", "blur_sigma": "0"}, 0.90),
    # maps of a fixed subset (2 good + 2 defective per category): a table of their own
    "mkd-maps2": ("mkd", "mkd", {"map_subset": "2"}, 0.90),
    "mkd-sg15-maps2": ("mkd", "mkd", {"map_subset": "2", "localization": "smooth_grad",
                                      "smooth_grad_noise": "0.15"}, 0.90),
    "mkd-sgofficial-maps2": ("mkd", "mkd", {"map_subset": "2", "localization": "smooth_grad"}, 0.90),
}
LOCALIZES = {"mkd", "ae_l2", "mkd-smoothgrad", "mkd-noblur", "mkd-smoothgrad-noblur", "mkd-maps2", "mkd-sg15-maps2",
             "mkd-sgofficial-maps2"}
TRAINED = {"mkd", "ae_l2", "mkd-hints-1", "mkd-hints-4", "mkd-loss-direction", "mkd-lam-0.1"}
OPTION_NAMES = sorted({*MKD_OPTS, "k", "features"})


def _options(variant: str) -> dict:
    method, _, over, _ = VARIANTS[variant]
    opts = dict(MKD_OPTS) if method == "mkd" else {}
    opts.update(over)
    return {f"opt.{k}": opts.get(k, "") for k in OPTION_NAMES}


def _plan():
    """(dataset, protocol, categories, variants) of the synthetic runs."""
    fm_main = ["mkd", "knn", "ocsvm-expert", "ae_l2"]
    return [
        ("fashion_mnist", "one-class", FM_CATS, fm_main + ["mkd-hints-1", "mkd-hints-4", "mkd-loss-direction",
                                                          "mkd-lam-0.1"]),
        ("fashion_mnist", "multi-class", FM_CATS, fm_main),
        ("mvtec_ad", "one-class", MV_CATS, ["mkd", "knn", "ae_l2", "mkd-smoothgrad", "mkd-noblur",
                                            "mkd-smoothgrad-noblur", "mkd-maps2", "mkd-sg15-maps2",
                                            "mkd-sgofficial-maps2"]),
    ]


def runs_frame(rng=None) -> pd.DataFrame:
    rng = rng or np.random.default_rng(123)
    rows = []
    for dataset, protocol, cats, variants in _plan():
        for i, cat in enumerate(cats):
            for v in variants:
                method, ablation_of, _, base = VARIANTS[v]
                for s in SEEDS:
                    auroc = float(np.clip(base + 0.01 * i + rng.normal(0, 0.01), 0, 1))
                    pix = dataset == "mvtec_ad" and v in LOCALIZES
                    blur_gain = 0.03 if pix and _options(v)["opt.blur_sigma"] not in ("0", "0.0") else 0.0
                    rows.append({
                        "dataset": dataset, "protocol": protocol, "category": cat, "method": method, "variant": v,
                        "ablation_of": ablation_of, "seed": s, "data_seed": "",
                        "image_size": 32 if dataset == "fashion_mnist" else 128, "train_images": 400,
                        "test_images": 200, "image_auroc": auroc, "image_ap": auroc - 0.05,
                        "image_f1max": auroc - 0.1,
                        "pixel_auroc": 0.85 + blur_gain + rng.normal(0, 0.005) if pix else np.nan,
                        "pixel_ap": 0.4 + blur_gain if pix else np.nan,
                        "pixel_f1max": 0.45 + blur_gain if pix else np.nan,
                        "aupro": 0.6 + blur_gain + rng.normal(0, 0.005) if pix else np.nan,
                        "paper_pixel_metric": 0.84 + blur_gain + rng.normal(0, 0.005) if pix else np.nan,
                        **_options(v),
                        "train_seconds": 12.0 + s if v in TRAINED else 0.1,
                        "train_images_per_second": 33.0, "score_images_per_second": 900.0,
                        "map_images_per_second": 50.0 if pix else np.nan, "peak_rss_mb": 800.0,
                        "device": "cpu", "machine": "Synthetic CPU 9000", "cores": 2, "gpu": "",
                        "torch_threads": 1, "config_hash": "test", "code_version": "test", "versions": "{}",
                    })
    return pd.DataFrame(rows)


def defects_frame() -> pd.DataFrame:
    rows = []
    kinds = {"bottle": ("broken_large", "contamination"), "cable": ("contamination", "cut")}
    for cat, ks in kinds.items():
        for v in ("mkd", "knn", "ae_l2"):
            method = VARIANTS[v][0]
            for s in SEEDS:
                base = dict(dataset="mvtec_ad", protocol="one-class", category=cat, method=method, variant=v,
                            ablation_of="", seed=s, test_images=40)
                for k in ks:
                    rows.append({**base, "defect": k, "level": "all",
                                 "image_auroc": 0.8 + 0.01 * s + 0.05 * (v == "mkd"),
                                 "pixel_auroc": 0.9 if v != "knn" else np.nan, "aupro": 0.7 if v != "knn" else np.nan})
                for lvl in ("1", "2", "3"):
                    rows.append({**base, "defect": "all", "level": lvl, "image_auroc": 0.7 + 0.08 * int(lvl),
                                 "pixel_auroc": np.nan, "aupro": np.nan})
    return pd.DataFrame(rows)


def curves_frame(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    x = np.linspace(0, 1, 101)
    xp = np.linspace(0, 0.3, 101)
    main = runs[runs["ablation_of"] == ""]
    for _, r in main.iterrows():
        keys = {k: r[k] for k in ("dataset", "protocol", "category", "method", "variant", "ablation_of", "seed")}
        a = r["image_auroc"]
        power = (1 - a) / a  # y = x ** power has area a
        rows += [{**keys, "curve": "roc", "x": xi, "y": xi ** power} for xi in x]
        if pd.notna(r["aupro"]):
            rows += [{**keys, "curve": "pro", "x": xi, "y": min(1.0, r["aupro"] * 2 * xi / 0.3)} for xi in xp]
    return pd.DataFrame(rows)


def history_frame(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    trained = runs[runs["variant"].isin(TRAINED)][["dataset", "protocol", "category", "method", "variant",
                                                    "ablation_of", "seed"]].drop_duplicates()
    for _, r in trained.iterrows():
        scale = 2.0 if r["method"] == "mkd" else 0.05
        for e in range(10):
            rows.append({**r.to_dict(), "phase": "train", "epoch": e, "loss": scale * np.exp(-0.3 * e) + 0.01 * scale,
                         "seconds": 1.0})
    return pd.DataFrame(rows)


def write_results(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    runs = runs_frame()
    runs.to_csv(folder / "runs.csv", index=False)
    defects_frame().to_csv(folder / "defects.csv", index=False)
    curves_frame(runs).to_csv(folder / "curves.csv", index=False)
    history_frame(runs).to_csv(folder / "history.csv", index=False)
    return folder


def _example_arrays(rng, cats, k=3, size=16, mask_size=16, shift=0.0):
    out = {}
    for c in cats:
        labels = np.array([0] + [1] * (k - 1))
        images = rng.integers(0, 256, (k, 3, size, size), dtype=np.uint8)
        masks = np.zeros((k, mask_size, mask_size), dtype=np.uint8)
        masks[1:, 4:9, 5:10] = 1
        maps = rng.random((k, size, size)).astype(np.float32) * 0.2 + shift
        maps[1:, 4:9, 5:10] += 1.0
        out.update({f"{c}/image": images, f"{c}/mask": masks, f"{c}/label": labels, f"{c}/map": maps})
    return out


def write_examples(work: Path) -> list[Path]:
    """mvtec_ad one-class: mkd and ae_l2 (seed 0) at the documented path, mkd-smoothgrad with a meta.json
    in a folder whose path says nothing."""
    paths = []
    for i, v in enumerate(("mkd", "ae_l2")):
        rng = np.random.default_rng(7)  # same images in every file; maps differ by the shift
        arrays = _example_arrays(rng, MV_CATS, shift=0.5 * i)
        if i == 1:
            for c in MV_CATS:
                arrays[f"{c}/map"] *= 40.0  # another method's scale
        p = work / "eval" / "mvtec_ad" / "one-class" / v / "seed0" / "examples.npz"
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez(p, **arrays)
        paths.append(p)
    p = work / "elsewhere" / "examples.npz"
    p.parent.mkdir(parents=True, exist_ok=True)
    np.savez(p, **_example_arrays(np.random.default_rng(7), MV_CATS, shift=0.2))
    (p.parent / "meta.json").write_text(json.dumps({"dataset": "mvtec_ad", "protocol": "one-class",
                                                    "variant": "mkd-smoothgrad", "seed": 0}))
    paths.append(p)
    return paths
