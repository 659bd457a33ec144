"""One run = (dataset, protocol, category, variant, seed) → result rows + provenance.

Also the two steps before runs: ``prepare`` (dataset → npz) and ``features`` (the frozen expert's
hints for every image of a prepared dataset, computed once). Every output is written atomically;
a killed run leaves at most a checkpoint that the next attempt resumes from.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kdad import metrics
from kdad.config import config_hash
from kdad.data import PrepareRequest, get_dataset
from kdad.data.base import PreparedDataset, write_npz_atomic
from kdad.experiment import (ExperimentConfig, RunKey, dataset_file, expert_of, features_dir, image_size,
                             method_options, slug)
from kdad.features import build_hint_cache, load_hint_cache
from kdad.methods import build_method
from kdad.protocols import make_task


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ prepare
def prepare(cfg: ExperimentConfig, dataset: str) -> Path:
    d = cfg.dataset(dataset)
    spec = get_dataset(dataset)
    req = PrepareRequest(Path(cfg.data_root), image_size(cfg, dataset),
                         Path(d.source) if d.source else None, d.seed)
    t0 = time.perf_counter()
    ds = spec.prepare(req)
    out = dataset_file(cfg, dataset)
    ds.save(out)
    log(f"prepared {dataset}: {len(ds.train)} train / {len(ds.test)} test images at {req.image_size}px "
        f"in {time.perf_counter() - t0:.1f}s → {out}")
    return out


# ----------------------------------------------------------------------------------- features
def features(cfg: ExperimentConfig, dataset: str, expert_name: str, normalize: bool) -> Path:
    from kdad.experts import build_expert

    ds = PreparedDataset.load(dataset_file(cfg, dataset))
    weights = _expert_weights(cfg, dataset, expert_name)
    expert = build_expert(expert_name, weights)
    folder = features_dir(cfg, dataset, expert_name, normalize)
    meta = build_hint_cache(folder, expert, {"train": ds.train.images, "test": ds.test.images},
                            normalize=normalize, meta={"dataset": dataset, "expert": expert_name,
                                                       "normalize": normalize, "image_size": ds.train.images.shape[-1]})
    log(f"expert {expert_name} hints for {dataset}: {meta['images']} images in {meta['seconds']}s "
        f"({meta['images_per_second']} img/s) → {folder}")
    return folder


def _expert_weights(cfg: ExperimentConfig, dataset: str, expert_name: str) -> str | None:
    """The ``expert_weights`` option of the first variant on this dataset that uses this expert."""
    d = cfg.dataset(dataset)
    for variant in [*d.methods, *(v for vs in (d.protocol_methods or {}).values() for v in vs)]:
        name, options = method_options(cfg, dataset, variant)
        if options.get("expert", None) in (expert_name, None) and options.get("expert_weights"):
            return options["expert_weights"]
    return None


# ---------------------------------------------------------------------------------------- run
def run(cfg: ExperimentConfig, key: RunKey, out_dir: str | Path) -> dict:
    """Train and evaluate every category of one job; write ``result.json`` (+ ``scores.npz``, maybe
    ``maps.npz``) atomically. Categories finished before a crash are not lost: each one's partial
    result is kept in ``partial/`` and reused by the next attempt."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = PreparedDataset.load(dataset_file(cfg, key.dataset))
    expert = expert_of(cfg, key.dataset, key.variant)
    cache = None
    if expert is not None:
        folder = features_dir(cfg, key.dataset, *expert)
        cache = {split: load_hint_cache(folder, split) for split in ("train", "test")}
    merged: dict = {"rows": [], "defects": [], "localization": [], "history": {}}
    scores, examples = {}, {}
    # partial results and checkpoints of an earlier attempt are reused only for the same settings
    fingerprint = config_hash({"key": dataclasses.asdict(key), "options": method_options(cfg, key.dataset, key.variant),
                               "dataset": dataclasses.asdict(cfg.dataset(key.dataset)), "code": code_version()})
    stamp = out_dir / "partial" / "fingerprint"
    if not stamp.is_file() or stamp.read_text() != fingerprint:
        shutil.rmtree(out_dir / "partial", ignore_errors=True)
        stamp.parent.mkdir(parents=True)
        stamp.write_text(fingerprint)
    for category in key.categories:
        part = out_dir / "partial" / f"{slug(category)}.json"
        if part.is_file():
            result = json.loads(part.read_text())
            log(f"run {key.path}/{category}: reusing the result of an earlier attempt")
        else:
            result, arrays, maps = _run_category(cfg, key, category, ds, cache, out_dir)
            write_npz_atomic(out_dir / "partial" / f"{slug(category)}.npz", arrays)
            if maps:
                write_npz_atomic(out_dir / "partial" / f"{slug(category)}.maps.npz", maps)
            _write_json_atomic(part, result)
        with np.load(out_dir / "partial" / f"{slug(category)}.npz") as z:
            scores.update({k: z[k] for k in z.files})
        maps_file = out_dir / "partial" / f"{slug(category)}.maps.npz"
        if maps_file.is_file():
            with np.load(maps_file) as z:
                examples.update({k: z[k] for k in z.files})
        for k in ("rows", "defects", "localization"):
            merged[k] += result[k]
        merged["history"][category] = result["history"]
        merged["config"] = result["config"]
    merged["key"] = dataclasses.asdict(key)
    write_npz_atomic(out_dir / "scores.npz", scores)
    if examples:
        write_npz_atomic(out_dir / "maps.npz", examples)
    _write_json_atomic(out_dir / "result.json", merged)
    shutil.rmtree(out_dir / "partial", ignore_errors=True)
    return merged


def _run_category(cfg: ExperimentConfig, key: RunKey, category: str, ds: PreparedDataset, cache, out_dir: Path):
    d = cfg.dataset(key.dataset)
    spec = get_dataset(key.dataset)
    task = make_task(ds, spec, key.protocol, category, key.seed, max_train_images=d.max_train_images,
                     categories=list(d.categories) if d.categories else None)
    method_name, options = method_options(cfg, key.dataset, key.variant)
    mspec, mconfig, detector = build_method(method_name, options, where=f"config.methods.{key.variant}")
    expert = expert_of(cfg, key.dataset, key.variant)

    def images_of(split: str, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(getattr(ds, split).images[rows]))

    def hints_of(split: str, rows: np.ndarray):
        return None if cache is None else [torch.from_numpy(np.ascontiguousarray(h[rows])) for h in cache[split]]

    torch.manual_seed(key.seed)
    train_images = images_of(task.train_split, task.train)
    log(f"run {key.path}/{category}: {method_name} on {len(train_images)} training images")
    fit_kwargs = {"seed": key.seed, "hints": hints_of(task.train_split, task.train)}
    if "checkpoint" in inspect.signature(detector.fit).parameters:
        fit_kwargs["checkpoint"] = out_dir / "partial" / f"{slug(category)}.checkpoint.pt"
    t0 = time.perf_counter()
    detector.fit(train_images, **fit_kwargs)
    train_seconds = time.perf_counter() - t0

    base = {"dataset": key.dataset, "protocol": key.protocol, "method": method_name, "variant": key.variant,
            "seed": key.seed, "expert": expert[0] if expert else "", "image_size": int(ds.train.images.shape[-1]),
            "epochs": getattr(mconfig, "epochs", np.nan), "train_images": int(len(task.train))}
    rows, defect_rows, loc_rows, score_arrays, examples = [], [], [], {}, {}
    for name, split, test_rows, labels in task.evaluations:
        images = images_of(split, test_rows)
        hints = hints_of(split, test_rows)
        t1 = time.perf_counter()
        scores = np.asarray(detector.score(images, hints=hints), dtype=np.float64)
        score_seconds = time.perf_counter() - t1
        row = {**base, "category": name, "test_images": int(len(test_rows)),
               "image_auroc": metrics.image_auroc(labels, scores), "pixel_auroc": np.nan, "aupro": np.nan,
               "paper_pixel_metric": np.nan, "train_seconds": train_seconds,
               "score_images_per_second": len(test_rows) / max(score_seconds, 1e-9),
               "map_images_per_second": np.nan}
        score_arrays[f"{name}/scores"] = scores
        score_arrays[f"{name}/labels"] = labels
        sub = getattr(ds, split)
        masks = sub.masks[test_rows] if (spec.has_masks and sub.masks is not None) else None
        maps = None
        if mspec.localizes and masks is not None:
            t1 = time.perf_counter()
            maps = np.asarray(detector.anomaly_map(images, hints=hints), dtype=np.float32)
            row["map_images_per_second"] = len(test_rows) / max(time.perf_counter() - t1, 1e-9)
            row["pixel_auroc"] = metrics.pixel_auroc(masks, maps)
            row["aupro"] = metrics.aupro(masks, maps)
            row["paper_pixel_metric"] = metrics.paper_pixel_metric(masks, maps)
        rows.append(row)
        if sub.defect is not None and spec.kind == "defect":
            defect_rows += _per_defect(base, name, sub.defect[test_rows], labels, scores, masks, maps)
        if (d.localization_table and method_name == "mkd" and key.variant == "mkd" and key.protocol == "one-class"
                and masks is not None):
            loc_rows += _localization_table(detector, base, name, images, hints, masks)
        if d.example_maps and maps is not None and key.seed == cfg.seeds[0]:
            pick = np.flatnonzero(labels == 1)[:2]
            examples[f"{name}/image"] = images[pick].numpy()
            examples[f"{name}/mask"] = masks[pick]
            examples[f"{name}/map"] = maps[pick]
    for row in rows:
        row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row.update(provenance(cfg, key, mconfig))
    for row in rows:
        log(f"  {row['category']}: image AUROC {row['image_auroc']:.4f}"
            + (f", pixel AUROC {row['pixel_auroc']:.4f}, AU-PRO {row['aupro']:.4f}"
               if not np.isnan(row["pixel_auroc"]) else ""))
    result = {"config": dataclasses.asdict(mconfig), "rows": rows, "defects": defect_rows,
              "localization": loc_rows,
              "history": getattr(detector, "history_", getattr(detector, "history", []))}
    return _jsonable(result), score_arrays, examples


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _per_defect(base, category, defects, labels, scores, masks, maps) -> list[dict]:
    """Each defect kind's images against the good ones, so an easy kind cannot hide a hard one."""
    out = []
    good = labels == 0
    for kind in sorted(set(defects[labels == 1])):
        pick = good | (defects == kind)
        row = {**base, "category": category, "defect": kind, "test_images": int(pick.sum()),
               "image_auroc": metrics.image_auroc(labels[pick], scores[pick]), "pixel_auroc": np.nan, "aupro": np.nan}
        if maps is not None:
            row["pixel_auroc"] = metrics.pixel_auroc(masks[pick], maps[pick])
            row["aupro"] = metrics.aupro(masks[pick], maps[pick])
        out.append(row)
    return out


def _localization_table(model, base, category, images, hints, masks) -> list[dict]:
    """The paper's Table 1 for one category: every method, without and with the Gaussian."""
    from scipy.ndimage import gaussian_filter

    from kdad.localize import METHODS, localize

    out = []
    sigma = model.config.blur_sigma or 4.0
    old = model.config.blur_sigma
    model.config.blur_sigma = 0.0
    try:
        for method in METHODS:
            t0 = time.perf_counter()
            raw = localize(model, images, hints=hints, method=method)
            ms = 1000 * (time.perf_counter() - t0) / len(images)
            for blur in (False, True):
                maps = gaussian_filter(raw, sigma=sigma, axes=(1, 2)) if blur else raw
                out.append({**base, "category": category, "localization": method, "blur": blur,
                            "grad_through": model.config.grad_through,
                            "pixel_auroc": metrics.pixel_auroc(masks, maps), "aupro": metrics.aupro(masks, maps),
                            "paper_pixel_metric": metrics.paper_pixel_metric(masks, maps), "ms_per_image": ms})
    finally:
        model.config.blur_sigma = old
    return out


def provenance(cfg: ExperimentConfig, key: RunKey, mconfig) -> dict:
    import sklearn
    import timm
    import torchvision

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
                "scikit-learn": sklearn.__version__}
    d = cfg.dataset(key.dataset)
    return {"config_hash": config_hash({"method": dataclasses.asdict(mconfig), "dataset": dataclasses.asdict(d)}),
            "code_version": code_version(), "versions": json.dumps(versions, sort_keys=True)}


def code_version() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--",
                                "kdad", "baselines"], capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return "kdad-" + version("kdad")
        except PackageNotFoundError:
            return "unknown"


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ---------------------------------------------------------------------------------- aggregate
def aggregate(run_files: list[str | Path], results_dir: str | Path) -> dict[str, Path]:
    """Collect every run's rows into tidy CSVs (one row per run and category; no summary rows)."""
    import pandas as pd

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict]] = {"runs": [], "defects": [], "localization": []}
    for f in sorted(map(str, run_files)):
        result = json.loads(Path(f).read_text())
        tables["runs"] += result["rows"]
        tables["defects"] += result["defects"]
        tables["localization"] += result["localization"]
    written = {}
    order = ["dataset", "protocol", "category", "method", "variant", "seed"]
    for name, rows in tables.items():
        path = results_dir / f"{name}.csv"
        if not rows:
            path.unlink(missing_ok=True)
            continue
        df = pd.DataFrame(rows)
        keys = [c for c in order + ["defect", "localization", "blur"] if c in df.columns]
        df = df[keys + [c for c in df.columns if c not in keys]].sort_values(keys, kind="stable")
        tmp = path.with_name(f".{path.name}.tmp")
        df.to_csv(tmp, index=False, float_format="%.6g")
        os.replace(tmp, path)
        written[name] = path
    return written
