"""The speed benchmark's run, parent side: the result rows (:class:`Collector`), calibration of each timed
operation's image count to ``--budget``, one setting's interleaved kdad/reference measurements
(:func:`run_setting`), the machine's fp32 matrix-multiply peak (:func:`machine_peak`), the thread
study and the ``--investigate`` studies."""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.speed_paths import BATCH, KDAD_SG_SAMPLES, OFFICIAL_SG_SAMPLES, Setting
from benchmarks.speed_worker import Worker

PEAK_MEASURE = "fp32_matmul_peak_gflop_per_s"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ranges_for(s: Setting, args) -> dict:
    """Per timed operation: (least, most, step) images. Each operation is first run once at its least
    size (warm-up and calibration); the repeats then use as many images as fit in ``--budget`` seconds."""
    if args.quick:
        return {"hints": (16, 16, 16), "kdad_train": (2 * BATCH,) * 3, "ref_train": (BATCH,) * 3,
                "kdad_score": (BATCH,) * 3, "ref_score": (BATCH,) * 3, "kdad_map": (2, 2, 2), "ref_map": (1, 1, 1)}
    small = s.size <= 64
    return {"hints": (64, 4096, 64) if small else (16, 512, 16),
            "kdad_train": (2 * BATCH, s.n_train, BATCH),
            "ref_train": (BATCH, s.n_train, BATCH),
            "kdad_score": (256, s.n_test, 64) if small else (32, s.n_test, 16),
            "ref_score": (min(BATCH, s.n_test), s.n_test, BATCH),
            "kdad_map": (4, 32, 4),
            "ref_map": (1, 16, 1)}


def choose(rate: float, rng: tuple, budget: float) -> int:
    lo, hi, step = rng
    n = int(rate * budget // step * step)
    return hi if n >= hi else max(lo, n)


class Collector:
    """Rows of the tidy result table; values of repeated measurements are kept and reduced by median."""

    def __init__(self) -> None:
        self.samples: dict[tuple, dict] = {}

    def add(self, setting: str, path: str, measure: str, value: float, unit: str, *, method: str = "",
            through: str = "", images: int = 0, threads: int = 0, note: str = "", load1: float | None = None,
            compare: str | None = None, higher_better: bool = True) -> None:
        key = (setting, path, measure, method, through)
        d = self.samples.setdefault(key, {"values": [], "loads": [], "unit": unit, "images": images,
                                          "threads": threads, "note": note, "compare": compare,
                                          "higher_better": higher_better})
        d["values"].append(value)
        if load1 is not None:
            d["loads"].append(load1)

    def finish(self) -> list[dict]:
        rows = []
        for (setting, path, measure, method, through), d in self.samples.items():
            vals = d["values"]
            rows.append({"setting": setting, "path": path, "measure": measure, "method": method,
                         "grad_through": through, "value": statistics.median(vals), "unit": d["unit"],
                         "repeats": len(vals), "min": min(vals), "max": max(vals), "images": d["images"],
                         "threads": d["threads"], "load1": statistics.median(d["loads"]) if d["loads"] else None,
                         "note": d["note"], "_compare": d["compare"], "_higher": d["higher_better"]})
        by = {(r["setting"], r["path"], r["measure"], r["method"], r["grad_through"]): r for r in rows}
        for r in rows:
            r["ratio_kdad_over_reference"] = r["gain"] = None
            if not r["path"].startswith("kdad") or r["_compare"] is None:
                continue
            ref_path = "reference" + r["path"][len("kdad"):]  # "kdad (2 jobs × 1 thread)" → "reference (…)"
            ref = by.get((r["setting"], ref_path, *r["_compare"]))
            if ref and ref["value"]:
                ratio = r["value"] / ref["value"]
                r["ratio_kdad_over_reference"] = ratio
                r["gain"] = ratio if r["_higher"] else 1 / ratio
        return rows


def calibrate(w: Worker, op: str, kw: dict, rng: tuple, budget: float) -> int:
    """Run ``op`` once at its least size (warm-up); the size that fits the budget."""
    if rng[0] == rng[1]:  # --quick: nothing to choose, no warm-up
        return rng[0]
    out = w.call(op, n=rng[0], **kw)
    return choose(out["images"] / max(out["seconds"], 1e-9), rng, budget)


def run_setting(name: str, s: Setting, args, col: Collector, log_dir: Path, extra: dict) -> None:
    if args.quick:  # numbers meaningless: exercise every path in seconds
        s = dataclasses.replace(s, expert="efficientnet_lite0_random", size=32, n_train=2 * BATCH, n_test=BATCH,
                                maps=True)
    rng = ranges_for(s, args)
    k_sg = 2 if args.quick else (OFFICIAL_SG_SAMPLES if args.full_smoothgrad else args.sg_samples)
    spec = {"setting": dataclasses.asdict(s), "sizes": {"tile_from": 256 if s.size <= 64 else 32, "map_batch": 32},
            "threads": args.threads}
    log(f"== {name}: {s.what}")
    kd = Worker({**spec, "path": "kdad"}, log_dir, f"{name}-kdad")
    ref = Worker({**spec, "path": "reference"}, log_dir, f"{name}-reference")
    T = args.threads
    fk, fr = kd.call("flops"), ref.call("flops")
    mem = kd.call("fit_memory")  # kdad's float32 training targets of the whole training set
    plan = [  # (kind, kdad (op, kwargs, range), reference (op, kwargs, range) or None)
        ("hints", ("hints", {}, "hints"), None),
        ("train", ("train", {}, "kdad_train"), ("train", {}, "ref_train")),
        ("score", ("score", {}, "kdad_score"), ("score", {}, "ref_score")),
    ]
    if s.maps:
        for method in ("gradients", "guided_backprop", "smooth_grad"):
            samples = k_sg if method == "smooth_grad" else 1
            for through in ("both", "cloner"):
                kw = {"method": method, "through": through, "samples": samples}
                plan.append((f"map:{method}:{through}", ("map", kw, "kdad_map"),
                             ("map", kw, "ref_map") if through == "both" else None))
    sizes: dict = {}
    for kind, kcmd, rcmd in plan:  # warm-up + calibration
        for path, w, cmd in (("kdad", kd, kcmd), ("reference", ref, rcmd)):
            if cmd is not None:
                sizes[(path, kind)] = calibrate(w, cmd[0], cmd[1], rng[cmd[2]], args.budget)
    log("   sizes: " + ", ".join(f"{p}/{k} {n}" for (p, k), n in sizes.items()))
    hwm: dict[tuple, list] = {}
    train_increment = []
    for rep in range(args.repeats):
        for kind, kcmd, rcmd in plan:
            pair = [("kdad", kd, kcmd), ("reference", ref, rcmd)]
            for path, w, cmd in (pair if rep % 2 == 0 else pair[::-1]):  # A B, B A, A B: same load for both
                if cmd is None:
                    continue
                op, kw, _ = cmd
                if op == "train":
                    kw = {**kw, "seed": rep}
                out = w.call(op, n=sizes[(path, kind)], **kw)
                stage = kind.split(":")[0]
                if out.get("hwm_kib"):
                    hwm.setdefault((path, stage), []).append(out["hwm_kib"])
                    if path == "kdad" and stage == "train":
                        train_increment.append(out["hwm_kib"] - out["rss_before_kib"])
                record(col, name, path, kind, out, k_sg, T)
        log(f"   repeat {rep + 1}/{args.repeats} done  (load {os.getloadavg()[0]:.1f})")
    if mem.get("hwm_kib") and sizes[("kdad", "train")] < s.n_train and train_increment:
        # the timed fits used part of the training set: a whole-set fit holds the whole set's float32
        # targets (fit with 0 epochs) plus one batch's graph (the timed fit's increment; conservative)
        hwm[("kdad", "train")] = [mem["hwm_kib"] + max(train_increment)]
    if name == "fmnist_vgg16_32" and not args.no_thread_study:
        extra["threads"] = thread_study(name, spec, {"kdad": kd, "reference": ref}, rng, args, col, log_dir)
    for path, w in (("kdad", kd), ("reference", ref)):
        col.add(name, path, "peak_rss:setup", w.started["maxrss_kib"] / 1024, "MiB", threads=T,
                compare=("peak_rss:setup", "", ""), higher_better=False,
                note="ru_maxrss after start-up: imports, building the expert (VGG16: the whole torchvision "
                     "model, classifier included), the data" + (", the hint caches" if path == "kdad" else ""))
        col.add(name, path, "peak_rss", w.close() / 1024, "MiB", threads=T, compare=("peak_rss", "", ""),
                higher_better=False, note="ru_maxrss of the path's worker: building the expert + every stage")
    for (path, stage), vals in hwm.items():
        note = "VmHWM during the stage (reset before it), max over repeats"
        if (path, stage) == ("kdad", "train") and sizes[("kdad", "train")] < s.n_train:
            note = "whole training set's float32 targets (fit, 0 epochs) + the timed fit's increment"
        col.add(name, path, f"peak_rss:{stage}", max(vals) / 1024, "MiB", threads=T,
                compare=(f"peak_rss:{stage}", "", ""), higher_better=False, note=note)
    for path, f in (("kdad", fk["flops_per_image"]), ("reference", fr["flops_per_image"])):
        col.add(name, path, "train_gflop_per_image", f / 1e9, "GFLOP", threads=T,
                note="one training step per image: 3 × the forward's FLOPs (FlopCounterMode)"
                + (" (cloner only)" if path == "kdad" else " (expert with weight gradients + cloner)"))
    col.add(name, "kdad", "hint_cache_MiB_per_1000_images", fk["hint_bytes_per_image"] * 1000 / 2**20, "MiB",
            threads=T, note="float16 hints of the expert, all four")
    extra.setdefault("flops", {})[name] = {"kdad": fk["flops_per_image"], "reference": fr["flops_per_image"]}
    extra.setdefault("hint_bytes", {})[name] = fk["hint_bytes_per_image"]
    extra.setdefault("epochs", {})[name] = s


def record(col: Collector, name: str, path: str, kind: str, out: dict, k_sg: int, threads: int) -> None:
    n, sec = out["images"], out["seconds"]
    kw = dict(images=n, load1=out["load1"], threads=threads)
    if kind == "hints":
        col.add(name, path, "hints_images_per_s", n / sec, "images/s", note="compute_hints (float16), once per dataset",
                **kw)
    elif kind == "train":
        note = ("MKD.fit on cached hints, one epoch (seconds from history_)" if path == "kdad"
                else "official train loop: expert forward + backward every batch (batch 64)")
        col.add(name, path, "train_images_per_s", n / sec, "images/s", note=note,
                compare=("train_images_per_s", "", ""), **kw)
        if path == "kdad":
            col.add(name, path, "fit_overhead_s", out["overhead_seconds"], "s",
                    note="fit wall time − epoch time (float16 → float32 targets, initialisation)", **kw)
    elif kind == "score":
        note = ("MKD.score on cached hints (cloner only)" if path == "kdad"
                else "detection_test: expert + cloner per batch of 64, graph built")
        col.add(name, path, "score_images_per_s", n / sec, "images/s", note=note,
                compare=("score_images_per_s", "", ""), **kw)
    else:
        _, method, through = kind.split(":")
        ms = 1000 * sec / n
        if method == "smooth_grad":
            targets = [OFFICIAL_SG_SAMPLES] + ([KDAD_SG_SAMPLES] if path == "kdad" else [])
            for samples in targets:
                note = (f"measured with {k_sg} samples, scaled ×{samples / k_sg:g} (one backward per sample)"
                        if k_sg != samples else "measured")
                col.add(name, path, "map_ms_per_image", ms * samples / k_sg, "ms/image",
                        method=f"smooth_grad{samples}", through=through, note=note,
                        compare=("map_ms_per_image", "smooth_grad50", "both"), higher_better=False, **kw)
        else:
            note = "batched (map_batch 32)" if path == "kdad" else "one image per backward, expert weight gradients"
            col.add(name, path, "map_ms_per_image", ms, "ms/image", method=method, through=through, note=note,
                    compare=("map_ms_per_image", method, "both"), higher_better=False, **kw)


CONFIGS = (("1 job x 2 threads", 2, 1), ("1 job x 1 thread", 1, 1), ("2 jobs x 1 thread", 1, 2))


def thread_study(name, spec, main: dict, rng, args, col, log_dir) -> dict:
    """Training at 32×32, both paths: 1 job × 2 threads, 1 job × 1 thread (alone), and two 1-thread
    jobs at once (their images/s summed): which uses the 2 cores better. The setting's own workers
    are reused where their thread count fits."""
    log("   threads: 1×2 vs 1×1 vs 2×1 concurrent, both paths")
    T = args.threads
    workers, n, spawned = {}, {}, []

    def spawn(path, threads, tag):
        w = Worker({**spec, "threads": threads, "path": path}, log_dir, f"{name}-{path}-{tag}")
        spawned.append(w)
        return w
    for path in ("kdad", "reference"):
        w2 = main[path] if T == 2 else spawn(path, 2, "2threads")
        w1a = main[path] if T == 1 else spawn(path, 1, "1thread-a")
        w1b = spawn(path, 1, "1thread-b")
        workers[path] = (w2, w1a, w1b)
        r = rng["kdad_train" if path == "kdad" else "ref_train"]
        if path == "kdad" and not args.quick:
            r = (r[0], min(r[1], args.thread_images), r[2])
        n[(path, 2)] = calibrate(w2, "train", {}, r, args.budget)
        n[(path, 1)] = calibrate(w1a, "train", {}, r, args.budget)
        if r[0] != r[1]:
            w1b.call("train", n=r[0])  # warm-up
    res: dict = {}
    for rep in range(args.repeats):
        for path in (("kdad", "reference") if rep % 2 == 0 else ("reference", "kdad")):
            w2, w1a, w1b = workers[path]
            for label, threads, jobs in CONFIGS:
                m = n[(path, threads)]
                if jobs == 1:
                    out = (w2 if threads == 2 else w1a).call("train", n=m, seed=rep)
                    rate, load1 = m / out["seconds"], out["load1"]
                else:
                    w1a.send("train", n=m, seed=rep)
                    w1b.send("train", n=m, seed=rep)
                    a, b = w1a._recv(), w1b._recv()
                    rate, load1 = m / a["seconds"] + m / b["seconds"], a["load1"]
                res.setdefault((path, label), []).append(rate)
                col.add(name, path, f"threads:{label}", rate, "images/s", threads=threads, images=m * jobs,
                        load1=load1, compare=(f"threads:{label}", "", ""),
                        note="training images/s" + (", summed over the two concurrent jobs" if jobs == 2 else ""))
    for w in spawned:
        w.close()
    return {k: statistics.median(v) for k, v in res.items()}


def investigate(args, col: Collector, log_dir: Path) -> dict:
    """Several cloners per pass (grouped convs, vmap), torch.compile, channels_last vs contiguous."""
    found = {}
    singles = ["single:channels_last", "single:contiguous", "single:channels_last:nhwc_loss",
               "single:channels_last:f16_targets", "single:channels_last:bf16", "single:channels_last:nhwc_loss+bf16",
               "single:channels_last:compiled"]
    studies = [(32, args.investigate_threads, singles + ["grouped:channels_last", "grouped:contiguous", "vmap"]),
               (128, args.investigate_threads, singles)]
    for size, threads, variants in studies:
        setting = f"investigate_vgg16_{size}"
        batches = 2 if args.quick else (12 if size == 32 else 2)
        k = 2 if args.quick else args.models
        log(f"== {setting}: {', '.join(variants)} ({threads} thread(s), {k} models for grouped/vmap)")
        with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
            w = Worker({"path": "investigate", "size": size, "models": k, "batches": batches, "threads": threads},
                       log_dir, setting, env={"TORCHINDUCTOR_CACHE_DIR": cache})
            flops = w.call("flops")["flops_per_image"]
            col.add(setting, "kdad", "train_gflop_per_image", flops / 1e9, "GFLOP", threads=threads,
                    note="cloner training step: 3 × the forward's FLOPs")
            for v in variants:
                out = w.call("prepare", variant=v)
                if v.endswith("compiled"):
                    col.add(setting, "kdad", "compile_s", out["seconds"], "s", method=v, threads=threads,
                            note="first call of the compiled step (cold inductor cache), incl. one step")
            if size == 32:
                eq = w.call("equivalence")
                for key, val in eq.items():
                    if key.endswith("_diff") or key == "max_abs_weight":
                        col.add(setting, "kdad", f"equivalence:{key}", val, "", threads=threads,
                                note="after 3 Adam steps, same init and batches as separate training")
                found["equivalence"] = eq
            for rep in range(args.repeats):
                for v in (variants if rep % 2 == 0 else variants[::-1]):
                    out = w.call("run", variant=v)
                    rate = out["images"] / out["seconds"]
                    col.add(setting, "kdad", "model_images_per_s", rate, "images/s", method=v, threads=threads,
                            images=out["images"], load1=out["load1"],
                            note="training images per second summed over the models trained in the pass")
                    col.add(setting, "kdad", "gflop_per_s", rate * flops / 1e9, "GFLOP/s", method=v,
                            threads=threads, load1=out["load1"], note="achieved, from the cloner's FLOPs per image")
            w.close()
    return found




PEAK_SIZES = (1024, 2048)  # sides of the square matrices; the best median is the machine's peak


def machine_peak(args, col: Collector, log_dir: Path) -> dict:
    """The fp32 matrix-multiply rate (GFLOP/s) at ``--threads`` torch threads, in its own worker process
    (the same thread settings as the paths'): square float32 products of each size in ``PEAK_SIZES``,
    a warm-up product before each timed call, the size with the best median over the repeats kept."""
    log(f"== machine: fp32 matmul peak, {args.threads} thread(s), n = {', '.join(map(str, PEAK_SIZES))}")
    w = Worker({"path": "machine", "threads": args.threads}, log_dir, "machine-matmul")
    found: dict = {}
    for size in PEAK_SIZES:
        rng = (1, 1, 1) if args.quick else (1, 64, 1)
        n = calibrate(w, "matmul", {"size": size}, rng, args.budget)
        outs = [w.call("matmul", n=n, size=size) for _ in range(args.repeats)]
        found[size] = (n, [(o["flop"] / o["seconds"] / 1e9, o["load1"]) for o in outs])
    w.close()
    size = max(found, key=lambda k: statistics.median(g for g, _ in found[k][1]))
    n, rates = found[size]
    for gflop_per_s, load1 in rates:
        col.add("machine", "machine", PEAK_MEASURE, gflop_per_s, "GFLOP/s", threads=args.threads, load1=load1,
                note=f"torch.mm of {size}×{size} float32 matrices, 2·n³ FLOP per product, {n} product(s) per "
                     f"repeat after a warm-up product; best median of n = {', '.join(map(str, PEAK_SIZES))} "
                     "(" + ", ".join(f"{k}: {statistics.median(g for g, _ in v[1]):.1f}" for k, v in found.items())
                     + " GFLOP/s)")
    return {"size": size, "gflop_per_s": statistics.median(g for g, _ in rates)}
