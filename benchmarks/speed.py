"""Speed benchmark: kdad's MKD path against a reference path that repeats the official code's pattern.

Measured in the same run, interleaved (kdad, reference, reference, kdad, … so both see the same
machine load), every path in its own worker process (its peak RSS is its own):

- **kdad**: the frozen expert's hints computed once (``kdad.features.compute_hints``, float16),
  the cloner trained on them (``MKD.fit(..., hints=...)``), scored on them (``MKD.score``), maps
  batched (``MKD.anomaly_map``, through both networks or the cloner only).
- **reference** (the official code's computation pattern, github.com/rohban-lab/Knowledge_Distillation_AD):
  every training batch runs the expert again with its parameters requiring gradients (not detached,
  nothing under ``no_grad``: autograd builds and back-propagates the expert's graph and accumulates
  its weight gradients); detection scoring runs expert + cloner per batch of 64 (graph built);
  maps one image per backward pass with the expert's weight gradients enabled; SmoothGrad = one
  backward pass of one image per noisy sample (50 samples).

Settings: the paper's Fashion-MNIST (VGG16, 32×32, grey → 3 channels, cfg-B cloner, batch 64),
MVTec AD (VGG16, 128×128) and the offline default (EfficientNet-Lite0 at 32×32 and 128×128).
VGG16's ImageNet file is not available offline: its settings use ``vgg16_random`` (fixed random
weights; timing does not depend on the values, and every row says so). Images are random uint8;
each measurement's image count is in its row. The kdad worker holds hint caches of the full
dataset size (the hints of at most 256 images at 32×32, 32 at 128×128, repeated), so its memory is
that of a real run.

The machine's fp32 matrix-multiply peak is measured in the same run, in its own worker process at
``--threads`` threads (square float32 products, n = 1024 and 2048, 2·n³ FLOP each, best median):
every training path's GFLOP/s (training images/s × its FLOPs per image) is given as a fraction of it.

Also: 1 vs 2 threads (and 2 concurrent 1-thread jobs) for both paths' training at 32×32, the
paper's whole Fashion-MNIST protocol extrapolated from the measured per-epoch and per-pass times,
and with ``--investigate`` cloner variants: several cloners per pass, ``torch.compile``, memory
layout, precision (``benchmarks/speed_investigate.py``).

Every timed operation is first run once at a small size (warm-up); its repeats then use as many
images as fit in ``--budget`` seconds, so the run's length does not grow with the machine's load.
Each path runs ``--threads`` torch threads (default 1: on the shared 2-core machine one job of two
threads trains 3-10× slower than one thread, see the thread study).

Code: this file is the command (and, with ``--worker``, a worker process); ``speed_paths.py`` the
settings and measured paths, ``speed_investigate.py`` the ``--investigate`` path, ``speed_worker.py``
the worker process protocol, ``speed_run.py`` calibration and the run, ``speed_report.py`` the
derived rows, Markdown tables and verdicts.

Writes ``results/bench.csv`` (one row per setting × path × measure) and prints Markdown tables.

    python benchmarks/speed.py                   # the default run (≈ 10 min on the shared 2 cores)
    python benchmarks/speed.py --investigate     # + multi-model / compile / layout / precision (+ ≈ 8 min)
    python benchmarks/speed.py --quick --out /tmp/bench.csv   # minuscule sizes (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/speed.py` must import this checkout's kdad (and benchmarks.*)
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.speed_paths import SETTINGS, weights_label  # noqa: E402
from benchmarks.speed_report import amortised, markdown, peak_fractions, protocol, verdicts  # noqa: E402
from benchmarks.speed_run import Collector, investigate, log, machine_peak, run_setting  # noqa: E402
from benchmarks.speed_worker import worker_main  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per path (default 1: on this shared "
                    "2-core machine two threads run several times slower than one; the thread study measures both)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement, median reported (≥ 3)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {', '.join(SETTINGS)}")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds per timed operation and repeat (the "
                    "image count is chosen to fit, within each operation's least and most)")
    ap.add_argument("--sg-samples", type=int, default=4, help="SmoothGrad samples actually run per map; the "
                    "time is scaled to 50 and 16 samples (linear: one backward pass per sample)")
    ap.add_argument("--full-smoothgrad", action="store_true", help="run all 50 SmoothGrad samples (slow)")
    ap.add_argument("--thread-images", type=int, default=3000, help="most images per timed epoch in the thread study")
    ap.add_argument("--no-thread-study", action="store_true")
    ap.add_argument("--investigate", action="store_true", help="add the multi-model, torch.compile and "
                    "memory-format studies")
    ap.add_argument("--investigate-threads", type=int, default=1)
    ap.add_argument("--models", type=int, default=10, help="cloners per pass in the multi-model study")
    ap.add_argument("--quick", action="store_true", help="minuscule sizes, 1 repeat (smoke test; numbers meaningless)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench.csv"))
    args = ap.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return 0
    if args.quick:
        args.repeats = 1
    elif args.repeats < 3:
        ap.error("--repeats must be ≥ 3 (medians of at least three); --quick is the exception")
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    from kdad.provenance import code_version, machine

    torch.set_num_threads(args.threads)
    mach = machine()
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    log(f"machine: {mach}  load {load_start}")
    col, extra = Collector(), {"threads_main": args.threads}
    with tempfile.TemporaryDirectory(prefix="kdad-bench-") as tmp:
        log_dir = Path(tmp)
        try:
            sections = extra["section_minutes"] = {}
            t1 = time.perf_counter()
            extra["peak"] = machine_peak(args, col, log_dir)
            sections["peak"] = (time.perf_counter() - t1) / 60
            for name in names:
                t1 = time.perf_counter()
                run_setting(name, SETTINGS[name], args, col, log_dir, extra)
                sections[name] = (time.perf_counter() - t1) / 60
            if args.investigate:
                t1 = time.perf_counter()
                extra["investigate"] = investigate(args, col, log_dir)
                sections["investigate"] = (time.perf_counter() - t1) / 60
        except RuntimeError as err:
            log(str(err))
            return 1
    rows = col.finish()
    amortised(rows, col)
    peak_fractions(rows, col)
    proto = protocol(rows, col, extra)
    rows = col.finish()
    load_end = os.getloadavg()
    wall = time.perf_counter() - t0
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        s = SETTINGS.get(r["setting"])
        r.update(expert=s.expert if s else ("vgg16_random" if r["setting"].startswith(("investigate", "fmnist_protocol"))
                                            else ""),
                 size=s.size if s else (int(r["setting"].rsplit("_", 1)[1]) if r["setting"].startswith("investigate")
                                        else extra["peak"]["size"] if r["setting"] == "machine" else 32),
                 machine=mach["machine"], cores=mach["cores"], gpu=mach["gpu"], torch=torch.__version__,
                 code=code_version(), date=stamp, load1_start=load_start[0], load1_end=load_end[0],
                 command="python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 quick=args.quick)
        r["weights"] = weights_label(r["expert"]) if r["expert"] else ""
    import pandas as pd

    cols = ["setting", "expert", "weights", "size", "path", "measure", "method", "grad_through", "value", "unit",
            "ratio_kdad_over_reference", "gain", "repeats", "min", "max", "images", "threads", "load1", "note",
            "machine", "cores", "gpu", "torch", "code", "date", "load1_start", "load1_end", "command", "quick"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    pd.DataFrame(rows)[cols].to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, out)
    print(f"\nMachine: {mach['machine']}, {mach['cores']} cores, {args.threads} torch threads per path, "
          f"GPU: {mach['gpu'] or 'none'}; torch {torch.__version__}; load average {load_start[0]:.2f} at start, "
          f"{load_end[0]:.2f} at end; {wall / 60:.1f} min ("
          + ", ".join(f"{k} {v:.1f}" for k, v in extra["section_minutes"].items()) + ").\n")
    print(markdown(rows))
    print("\nTargets:")
    for line in verdicts(rows, proto, extra):
        print("- " + line)
    print(f"\n→ {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
