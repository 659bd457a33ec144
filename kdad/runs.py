"""The workflow's stages as functions: prepare → features → train → evaluate → aggregate.

Each stage reads only the files of the stages before it and writes its outputs atomically, so a
killed job leaves nothing that looks finished (Snakemake reruns it; a long training resumes from
its per-epoch checkpoint). Nothing here knows a method by name: every method is a
:class:`kdad.methods.Detector` built from its registry entry and options.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kdad import metrics
from kdad.atomic import copy_atomic, is_disk_full, write_bytes_atomic
from kdad.config import ConfigError, config_hash
from kdad.data import PrepareRequest, get_dataset
from kdad.data.base import DatasetError, PreparedDataset, write_npz_atomic
from kdad.experiment import (ExperimentConfig, RunKey, data_seed, dataset_file, draw, draw_seed, eval_dir,
                             expert_of, features_dir, image_size, method_options, model_dir, model_variant,
                             run_key, slug)
from kdad.features import build_hint_cache, load_hint_cache
from kdad.methods import build_method, training_options
from kdad.protocols import make_task
from kdad.provenance import code_provenance, code_version, machine, resolve_device, versions
from kdad.training import TrainingError

CURVE_POINTS = 101


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ prepare
def prepare(cfg: ExperimentConfig, dataset: str, draw_name: str = "fixed") -> Path:
    d = cfg.dataset(dataset)
    spec = get_dataset(dataset)
    seed = draw_seed(draw_name)
    if (seed is None) == spec.seeded:
        raise ConfigError(f"{dataset}: draw {draw_name!r} does not fit a {'generated' if spec.seeded else 'fixed'} "
                          "dataset (generated sets take 'seed<k>', others 'fixed')")
    req = PrepareRequest(Path(cfg.data_root), image_size(cfg, dataset), Path(d.source) if d.source else None,
                         seed or 0, tuple(d.categories) if d.categories else None)
    t0 = time.perf_counter()
    ds = spec.prepare(req)
    out = dataset_file(cfg, dataset, draw_name)
    ds.save(out)
    log(f"prepared {dataset} ({draw_name}): {len(ds.train)} train / {len(ds.test)} test images at "
        f"{req.image_size}px in {time.perf_counter() - t0:.1f}s → {out}")
    return out


# ----------------------------------------------------------------------------------- features
def features(cfg: ExperimentConfig, dataset: str, draw_name: str, expert_name: str, normalize: bool) -> Path:
    from kdad.experts import build_expert

    ds = PreparedDataset.load(dataset_file(cfg, dataset, draw_name))
    expert = build_expert(expert_name, _expert_weights(cfg, dataset, expert_name))
    expert.to(resolve_device(cfg.device))
    folder = features_dir(cfg, dataset, draw_name, expert_name, normalize)
    spec = get_dataset(dataset)
    size = image_size(cfg, dataset)
    transform = (lambda x: spec.resize_on_load(x, size)) if spec.resize_on_load else None
    meta = build_hint_cache(folder, expert, {"train": ds.train.images, "test": ds.test.images},
                            normalize=normalize, budget_bytes=cfg.hint_cache_gb * 2**30, image_size=size,
                            transform=transform,
                            meta={"dataset": dataset, "draw": draw_name, "expert": expert_name,
                                  "normalize": normalize, "image_size": size})
    if meta["cached"]:
        log(f"expert {expert_name} hints for {dataset} ({draw_name}): {meta['images']} images in {meta['seconds']}s "
            f"({meta['images_per_second']} img/s) → {folder}")
    else:
        log(f"expert {expert_name} hints for {dataset} ({draw_name}) not cached: {meta['reason']}")
    return folder


def _expert_weights(cfg: ExperimentConfig, dataset: str, expert_name: str) -> str | None:
    """The ``expert_weights`` option of the first variant on this dataset that uses this expert."""
    from kdad.experiment import variants

    for variant in variants(cfg, dataset):
        _, options = method_options(cfg, dataset, variant)
        if options.get("expert") in (expert_name, None) and options.get("expert_weights"):
            return options["expert_weights"]
    return None


# ------------------------------------------------------------------------------ shared by both
class _Inputs:
    """The prepared data and cached hints a train or evaluate job reads."""

    def __init__(self, cfg: ExperimentConfig, key: RunKey) -> None:
        self.draw = draw(cfg, key.dataset, key.seed)
        self.ds = PreparedDataset.load(dataset_file(cfg, key.dataset, self.draw))
        self.spec = get_dataset(key.dataset)
        expert = self.expert = expert_of(cfg, key.dataset, key.variant)
        self.cache = None
        if expert is not None:
            folder = features_dir(cfg, key.dataset, self.draw, *expert)
            cache = {split: load_hint_cache(folder, split, len(getattr(self.ds, split).images))
                     for split in ("train", "test")}
            self.cache = cache if all(v is not None for v in cache.values()) else None
        self.size = image_size(cfg, key.dataset)

    @property
    def hint_mode(self) -> str:
        """How the expert's hints reach the model: ``cached`` (float16 from the features step),
        ``per-batch`` (computed in float32 on each batch: another rounding, so other numbers) or
        ``none`` (the method uses no expert)."""
        if self.expert is None:
            return "none"
        return "cached" if self.cache is not None else "per-batch"

    def task(self, cfg: ExperimentConfig, key: RunKey, category: str):
        d = cfg.dataset(key.dataset)
        return make_task(self.ds, self.spec, key.protocol, category, key.seed, max_train_images=d.max_train_images,
                         categories=list(d.categories) if d.categories else None)

    def images(self, split: str, rows: np.ndarray) -> torch.Tensor:
        """Model inputs of those rows (resized on load for sets stored smaller than their input)."""
        images = np.ascontiguousarray(getattr(self.ds, split).images[rows])
        if self.spec.resize_on_load is not None:
            images = self.spec.resize_on_load(images, self.size)
        return torch.from_numpy(np.ascontiguousarray(images))

    def hints(self, split: str, rows: np.ndarray):
        if self.cache is None:
            return None
        return [torch.from_numpy(np.ascontiguousarray(h[rows])) for h in self.cache[split]]


def _detector(cfg: ExperimentConfig, key: RunKey):
    method, options = method_options(cfg, key.dataset, key.variant)
    spec, config, detector = build_method(method, options, where=f"config.methods.{key.variant}")
    return spec, config, detector.to(resolve_device(cfg.device))


def _what(key: RunKey, category: str) -> str:
    return f"{key.variant} on {key.dataset}/{key.protocol}/{category}, seed {key.seed}"


# -------------------------------------------------------------------------------------- train
def train(cfg: ExperimentConfig, dataset: str, protocol: str, model: str, seed: int, out_dir: str | Path) -> Path:
    """Fit ``model`` on every category of (dataset, protocol) with ``seed``: ``<out>/<category>.pt`` each,
    then ``<out>/meta.json``. A killed job, run again, reuses the categories it had finished and resumes
    the others from their last finished epoch (under the same :func:`resume_key` only).

    The folder is filled under a temporary name beside it and renamed into place when every
    category is done: a model folder exists only when complete, so another invocation sharing the
    work folder never takes a half-built one for a finished one."""
    final_dir = Path(out_dir)
    _remove_dead_partials(final_dir)
    out_dir = final_dir.with_name(f".{final_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    try:
        return _train_into(cfg, dataset, protocol, model, seed, out_dir, final_dir)
    except BaseException:
        # finished categories are kept under work/checkpoints; the half-built folder goes
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _remove_dead_partials(final_dir: Path) -> None:
    """Half-built model folders of train jobs that were killed (their process is gone)."""
    for stale in final_dir.parent.glob(f".{final_dir.name}.partial-*") if final_dir.parent.is_dir() else ():
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _train_into(cfg: ExperimentConfig, dataset: str, protocol: str, model: str, seed: int, out_dir: Path,
                final_dir: Path) -> Path:
    variant = model_variant(cfg, dataset, protocol, model)
    key = run_key(cfg, dataset, protocol, variant, seed)
    inputs = _Inputs(cfg, key)
    spec, config, detector = _detector(cfg, key)
    resume = resume_key(cfg, key, inputs, config)
    # checkpoints and finished models live outside the job's output folder (which Snakemake deletes
    # when the job is killed), in a folder named by everything that changes the result
    checkpoints = Path(cfg.work_dir) / "checkpoints" / key.model_path / resume
    meta = {"model": model, "method": spec.name, "variant_used": variant, "seed": seed, "draw": inputs.draw,
            "hints": inputs.hint_mode, "resume_key": resume, "code_version": code_version(), "categories": {}}
    # every category's split first (cheap): a test set with one class fails before any training
    tasks = {category: inputs.task(cfg, key, category) for category in key.categories}
    for category in key.categories:
        done, done_info = checkpoints / f"{slug(category)}.model.pt", checkpoints / f"{slug(category)}.model.json"
        if done.is_file() and done_info.is_file():
            log(f"train {_what(key, category)}: reusing the model finished before the job was stopped ({done})")
            copy_atomic(done, out_dir / f"{slug(category)}.pt")
            meta["categories"][category] = json.loads(done_info.read_text())
            continue
        task = tasks[category]
        images = inputs.images(task.train_split, task.train)
        log(f"train {_what(key, category)}: {len(images)} images")
        ckpt = checkpoints / f"{slug(category)}.pt"
        t0 = time.perf_counter()
        try:
            detector.fit(images, seed=seed, hints=inputs.hints(task.train_split, task.train), checkpoint=ckpt)
        except TrainingError as err:
            raise TrainingError(f"{_what(key, category)}: {err}") from None
        seconds = time.perf_counter() - t0
        history = list(getattr(detector, "history_", []))
        # a resumed run's epochs before the restart count too
        train_seconds = sum(r["seconds"] for r in history) if history else seconds
        info = {"train_images": int(len(images)), "train_seconds": train_seconds,
                "train_images_per_second": (len(images) * len(history) / train_seconds if history and train_seconds
                                            else len(images) / max(seconds, 1e-9))}
        detector.save(done, meta=info)
        _write_json_atomic(done_info, info)  # written last: the finished model is complete
        ckpt.unlink(missing_ok=True)
        copy_atomic(done, out_dir / f"{slug(category)}.pt")
        meta["categories"][category] = info
    _write_json_atomic(out_dir / "meta.json", meta)
    if final_dir.exists():  # an outdated model folder of an earlier job (work/ is kdad's own)
        shutil.rmtree(final_dir)
    os.rename(out_dir, final_dir)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return final_dir


def resume_key(cfg: ExperimentConfig, key: RunKey, inputs: _Inputs, config) -> str:
    """Hash of everything a train job's models depend on: the method's training options, the seed,
    the dataset's settings, the prepared data and hint files themselves, and how hints are read.
    A checkpoint or finished model is reused only under the same key."""
    d = cfg.dataset(key.dataset)
    files = [dataset_file(cfg, key.dataset, inputs.draw)]
    if inputs.expert is not None:
        files.append(features_dir(cfg, key.dataset, inputs.draw, *inputs.expert) / "meta.json")
    stamps = {str(f): [f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()}
    return config_hash({"method": key.model.rsplit("-", 1)[0], "training": training_options(config),
                        "seed": key.seed, "draw": inputs.draw, "image_size": inputs.size,
                        "dataset": {k: getattr(d, k) for k in ("source", "data_seed", "max_train_images",
                                                               "categories")},
                        "hints": inputs.hint_mode, "files": stamps})


# ----------------------------------------------------------------------------------- evaluate
def evaluate(cfg: ExperimentConfig, dataset: str, protocol: str, variant: str, seed: int,
             out_dir: str | Path) -> dict:
    """Score (and map) every category's test images with its trained model: ``result.json`` (rows,
    per-defect rows, curves, training history), ``scores.npz`` and ``examples.npz`` in ``out_dir``."""
    key = run_key(cfg, dataset, protocol, variant, seed)
    out_dir = Path(out_dir)
    inputs = _Inputs(cfg, key)
    spec, config, detector = _detector(cfg, key)
    d = cfg.dataset(dataset)
    models = model_dir(cfg, key)
    base = {"dataset": dataset, "protocol": protocol, "method": spec.name, "variant": variant,
            "ablation_of": cfg.methods[variant].get("ablation_of") or "", "model": key.model, "seed": seed,
            "data_seed": data_seed(cfg, dataset, seed), "image_size": inputs.size}
    options = {f"opt.{k}": _option_text(v) for k, v in dataclasses.asdict(config).items()}
    where = machine(detector.device)
    out = {"runs": [], "defects": [], "curves": [], "history": []}
    scores_npz, examples = {}, {}
    for category in key.categories:
        task = inputs.task(cfg, key, category)
        detector.load(models / f"{slug(category)}.pt")
        info = detector.meta_
        for rec in getattr(detector, "history_", []):
            out["history"].append({**base, "category": category, **{k: rec[k] for k in ("phase", "epoch", "loss",
                                                                                      "seconds")}})
        for name, split, rows, labels in task.evaluations:
            row, arrays, curves, defect_rows, ex = _evaluate_one(
                cfg, key, detector, spec, inputs, name, split, rows, labels, base)
            row.update(train_images=info.get("train_images"), train_seconds=info.get("train_seconds"),
                       train_images_per_second=info.get("train_images_per_second"), hints=inputs.hint_mode)
            out["runs"].append(row)
            out["curves"] += curves
            out["defects"] += defect_rows
            scores_npz.update({f"{name}/{k}": v for k, v in arrays.items()})
            examples.update({f"{name}/{k}": v for k, v in ex.items()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    provenance = {"config_hash": config_hash({"method": dataclasses.asdict(config), "dataset": dataclasses.asdict(d)}),
                  **code_provenance(), "versions": versions()}
    for row in out["runs"]:
        row.update(options)
        row.update(peak_rss_mb=peak, **where, **provenance)
        log(f"  {row['category']}: image AUROC {row['image_auroc']:.4f}"
            + (f", pixel AUROC {row['pixel_auroc']:.4f}, AU-PRO {row['aupro']:.4f}"
               if row["pixel_auroc"] is not None and not np.isnan(row["pixel_auroc"]) else ""))
    out["key"] = dataclasses.asdict(key)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_npz_atomic(out_dir / "scores.npz", scores_npz)
    write_npz_atomic(out_dir / "examples.npz", examples)
    _write_json_atomic(out_dir / "result.json", _jsonable(out))
    return out


def _evaluate_one(cfg, key: RunKey, detector, spec, inputs: _Inputs, name: str, split: str, rows: np.ndarray,
                  labels: np.ndarray, base: dict):
    images = inputs.images(split, rows)
    hints = inputs.hints(split, rows)
    t0 = time.perf_counter()
    scores = np.asarray(detector.score(images, hints=hints), dtype=np.float64)
    score_seconds = time.perf_counter() - t0
    if scores.shape != (len(rows),) or not np.isfinite(scores).all():
        raise TrainingError(f"{_what(key, name)}: the model gave {int((~np.isfinite(scores)).sum())} NaN/inf "
                            f"score(s) (shape {scores.shape}); its training diverged or its state is broken — "
                            "train it again")
    row = {**base, "category": name, "test_images": int(len(rows)),
           "image_auroc": metrics.image_auroc(labels, scores), "image_ap": metrics.image_ap(labels, scores),
           "image_f1max": metrics.image_f1max(labels, scores), "pixel_auroc": np.nan, "pixel_ap": np.nan,
           "pixel_f1max": np.nan, "aupro": np.nan, "paper_pixel_metric": np.nan,
           "score_images_per_second": len(rows) / max(score_seconds, 1e-9), "map_images_per_second": np.nan}
    keys = {k: base[k] for k in ("dataset", "protocol", "method", "variant", "ablation_of", "model", "seed")}
    curves = [{**keys, "category": name, "curve": "roc", "x": x, "y": y}
              for x, y in zip(*metrics.roc_curve_points(labels, scores, CURVE_POINTS))]
    sub = getattr(inputs.ds, split)
    masks = sub.masks[rows] if (inputs.spec.has_masks and sub.masks is not None) else None
    maps = None
    mapped = map_rows(labels, getattr(getattr(detector, "config", None), "map_subset", None))
    row["map_test_images"] = int(len(mapped)) if spec.localizes and masks is not None else 0
    if spec.localizes and masks is not None:
        if len(mapped) < len(rows):  # pixel metrics on the fixed subset only: every array follows it
            images, hints = images[mapped], inputs.hints(split, rows[mapped])
            masks, labels_m = masks[mapped], labels[mapped]
        else:
            labels_m = labels
        t0 = time.perf_counter()
        maps = np.asarray(detector.anomaly_map(images, hints=hints), dtype=np.float32)
        row["map_images_per_second"] = len(mapped) / max(time.perf_counter() - t0, 1e-9)
        if not np.isfinite(maps).all():
            raise TrainingError(f"{_what(key, name)}: the model's anomaly maps hold NaN/inf values")
        row["pixel_auroc"] = metrics.pixel_auroc(masks, maps)
        row["pixel_ap"] = metrics.pixel_ap(masks, maps)
        row["pixel_f1max"] = metrics.pixel_f1max(masks, maps)
        row["aupro"] = metrics.aupro(masks, maps)
        if detector.maps_in_unit_range:
            soft = sub.soft_masks[rows[mapped]] if sub.soft_masks is not None else None
            row["paper_pixel_metric"] = metrics.paper_pixel_metric(masks, maps, soft_masks=soft)
        curves += [{**keys, "category": name, "curve": "pro", "x": x, "y": y}
                   for x, y in zip(*metrics.pro_curve_points(masks, maps, 0.3, CURVE_POINTS))]
    defect_rows = []
    if sub.defect is not None and inputs.spec.kind == "defect":
        levels = sub.level[rows] if sub.level is not None else None
        defect_rows = _per_defect({**keys, "data_seed": base["data_seed"]}, name, sub.defect[rows], levels,
                                  labels, scores, masks, maps, mapped)
    examples = {}
    n_ex = cfg.dataset(key.dataset).examples
    if maps is not None and n_ex and key.seed == cfg.seeds[0]:
        good, bad = np.flatnonzero(labels_m == 0), np.flatnonzero(labels_m == 1)
        pick = np.concatenate([_spread(good, n_ex), _spread(bad, n_ex)])
        examples = {"image": images[pick].numpy(), "mask": masks[pick], "label": labels_m[pick].astype(np.int64),
                    "map": maps[pick]}
    return row, {"scores": scores, "labels": labels}, curves, defect_rows, examples


def map_rows(labels: np.ndarray, per_label: int | None) -> np.ndarray:
    """Positions (sorted) of the test images that get maps: all of them, or ``per_label`` good and
    ``per_label`` defective ones spread evenly over the test order — fixed by the test set alone, so
    every variant evaluated on a test set maps the same images of it."""
    if per_label is None:
        return np.arange(len(labels))
    return np.sort(np.concatenate([_spread(np.flatnonzero(labels == 0), per_label),
                                   _spread(np.flatnonzero(labels == 1), per_label)]))


def _spread(indices: np.ndarray, k: int) -> np.ndarray:
    """``k`` entries of ``indices`` spread evenly over it (all of them when there are fewer)."""
    if len(indices) <= k:
        return indices
    return indices[np.linspace(0, len(indices) - 1, k).round().astype(int)]


def _per_defect(keys: dict, category: str, defects, levels, labels, scores, masks, maps,
                mapped: np.ndarray) -> list[dict]:
    """Each defect kind's and each difficulty level's images against the good ones, so an easy kind
    or level cannot hide a hard one. ``masks``/``maps`` hold the test images at positions ``mapped``."""
    good = labels == 0
    groups = [(kind, "all", defects == kind) for kind in sorted(set(defects[labels == 1]))]
    if levels is not None:
        groups += [("all", level, levels == level) for level in sorted(set(levels[labels == 1]) - {""})]
    out = []
    for kind, level, chosen in groups:
        pick = good | (chosen & (labels == 1))
        row = {**keys, "category": category, "defect": kind, "level": level, "test_images": int(pick.sum()),
               "image_auroc": metrics.image_auroc(labels[pick], scores[pick]), "pixel_auroc": np.nan,
               "aupro": np.nan}
        if maps is not None:
            sel = pick[mapped]
            row["map_test_images"] = int(sel.sum())
            if (sel & (labels[mapped] == 1)).any():  # a map subset can leave a rare kind unmapped: NaN
                row["pixel_auroc"] = metrics.pixel_auroc(masks[sel], maps[sel])
                row["aupro"] = metrics.aupro(masks[sel], maps[sel])
        out.append(row)
    return out


def _option_text(value) -> str | float | int | bool | None:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return value


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _write_json_atomic(path: Path, obj) -> None:
    write_bytes_atomic(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# ---------------------------------------------------------------------------------- aggregate
TABLES = ("runs", "defects", "curves", "history")
ORDER = ["dataset", "protocol", "category", "method", "variant", "seed"]


def aggregate(run_files: list[str | Path], results_dir: str | Path) -> dict[str, Path]:
    """Collect every evaluation's rows into tidy CSVs (one row per run and category; no summary rows).

    Every input is read and checked before anything is written; then each CSV is replaced
    atomically, so a bad input leaves the previous results untouched."""
    import pandas as pd

    results_dir = Path(results_dir)
    tables: dict[str, list[dict]] = {name: [] for name in TABLES}
    for f in sorted(map(str, run_files)):
        try:
            result = json.loads(Path(f).read_text())
            for name in TABLES:
                rows = result[name]
                if not isinstance(rows, list):
                    raise TypeError(f"{name} is not a list")
                tables[name] += rows
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{f}: not a complete evaluation result ({type(err).__name__}: {err}); delete it "
                               "and run the workflow again (Snakemake recomputes it)") from None
    frames = {}
    for name, rows in tables.items():
        df = pd.DataFrame(rows)
        if len(df):
            keys = [c for c in ORDER + ["defect", "level", "curve", "phase", "epoch"] if c in df.columns]
            df = df[keys + [c for c in df.columns if c not in keys]].sort_values(keys, kind="stable")
        frames[name] = df
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        staged = []
        for name, df in frames.items():
            path = results_dir / f"{name}.csv"
            fd, tmp = tempfile.mkstemp(dir=results_dir, prefix=f".{name}.", suffix=".tmp")
            os.close(fd)
            staged.append((tmp, path))
            df.to_csv(tmp, index=False, float_format="%.6g")
            os.chmod(tmp, 0o644)
            written[name] = path
        # every table is staged before any replaces its old file: a full disk leaves the old set whole
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as err:
        for tmp, _ in locals().get("staged", []):
            Path(tmp).unlink(missing_ok=True)
        fix = "free some space" if is_disk_full(err) else "make it writable"
        raise DatasetError(f"cannot write the results to {results_dir} ({err.strerror or err}); {fix} or set "
                           "results_dir in the config, then rerun (the old results are unchanged)") from None
    return written

