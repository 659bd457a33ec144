"""The speed benchmark's command runs end to end (minuscule sizes) and writes the documented CSV."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent

COLUMNS = ["setting", "expert", "weights", "size", "path", "measure", "method", "grad_through", "value", "unit",
           "ratio_kdad_over_reference", "gain", "repeats", "min", "max", "images", "threads", "load1", "note",
           "machine", "cores", "gpu", "torch", "code", "date", "load1_start", "load1_end", "command", "quick"]


def test_speed_benchmark_quick(tmp_path):
    out = tmp_path / "bench.csv"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--threads", "1",
                           "--settings", "fmnist_vgg16_32", "--no-thread-study", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert df.quick.all()
    # every measure of both paths, with the ratio on kdad's rows
    for path in ("kdad", "reference"):
        got = set(df[(df.setting == "fmnist_vgg16_32") & (df.path == path)].measure)
        assert {"train_images_per_s", "score_images_per_s", "map_ms_per_image", "peak_rss"} <= got, (path, got)
    train = df[(df.path == "kdad") & (df.measure == "train_images_per_s")].iloc[0]
    assert train.ratio_kdad_over_reference > 0 and train.gain == train.ratio_kdad_over_reference
    sg = set(df[(df.path == "kdad") & (df.measure == "map_ms_per_image")].method)
    assert {"gradients", "guided_backprop", "smooth_grad50", "smooth_grad16"} <= sg
    # the paper's protocol extrapolated, with its assumptions as rows
    proto = df[df.setting == "fmnist_protocol"]
    assert {"protocol_hours_1seed", "protocol_hours_3seeds", "assume_epochs"} <= set(proto.measure)
    # the machine's fp32 matmul peak, measured in the same run, and every training path's fraction of it
    peak = df[df.measure == "fp32_matmul_peak_gflop_per_s"]
    assert len(peak) == 1 and peak.value.iloc[0] > 0 and peak.unit.iloc[0] == "GFLOP/s"
    frac = df[df.measure == "train_fraction_of_peak"]
    assert set(zip(frac.setting, frac.path)) == {("fmnist_vgg16_32", "kdad"), ("fmnist_vgg16_32", "reference")}
    for r in frac.itertuples():
        gflops = df[(df.setting == r.setting) & (df.path == r.path) & (df.measure == "train_gflop_per_s")].value
        assert r.value > 0 and r.unit == "fraction" and len(gflops) == 1
        assert r.value == pytest.approx(gflops.iloc[0] / peak.value.iloc[0], rel=1e-4)  # the CSV keeps 6 digits
    assert (df.value.notna()).all() and (df.machine.notna()).all()
    assert "| setting" in proc.stdout and "Targets:" in proc.stdout
