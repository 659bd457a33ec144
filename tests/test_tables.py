"""Tests of the reporting layer: kdad.stats, kdad.tables, kdad.figures.

All result rows below are synthetic TEST DATA built in tmp_path; none of them is a measured result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kdad import stats, tables
from kdad.figures import HINT_VARIANTS, cd_cliques, render_figures

SEEDS = (0, 1, 2)


def _row(dataset, protocol, category, variant, seed, auroc, method=None, **extra):
    method = method or ("mkd" if variant.startswith("mkd") else variant)
    row = dict(dataset=dataset, protocol=protocol, category=category, method=method, variant=variant,
               seed=seed, expert="efficientnet_lite0" if method == "mkd" else "",
               image_size=32 if dataset != "mvtec_ad" else 128, epochs=15 if method == "mkd" else np.nan,
               train_images=1000 - 10 * seed, test_images=500, image_auroc=auroc, pixel_auroc=np.nan,
               aupro=np.nan, paper_pixel_metric=np.nan, train_seconds=12.0 + seed,
               score_images_per_second=900.0, map_images_per_second=np.nan, peak_rss_mb=800.0,
               config_hash="test", code_version="test", versions="test")
    row.update(extra)
    return row


def synthetic_runs() -> pd.DataFrame:
    """TEST DATA: two datasets (fashion_mnist both protocols, mvtec_ad one-class), 3 seeds."""
    rng = np.random.default_rng(123)
    rows = []
    variants = ["mkd", "knn", "ocsvm", "mkd-hints-1", "mkd-hints-2", "mkd-hints-3", "mkd-hints-4", "mkd-loss-direction",
                "mkd-loss-value", "mkd-lam-0.1", "mkd-lam-1"]
    base = {"mkd": 0.90, "knn": 0.85, "ocsvm": 0.80, "mkd-hints-1": 0.82, "mkd-hints-2": 0.85,
            "mkd-hints-3": 0.88, "mkd-hints-4": 0.89, "mkd-loss-direction": 0.86, "mkd-loss-value": 0.84, "mkd-lam-0.1": 0.89,
            "mkd-lam-1": 0.87}
    for protocol in ("one-class", "multi-class"):
        for c in range(4):
            for v in variants:
                for s in SEEDS:
                    rows.append(_row("fashion_mnist", protocol, str(c), v, s,
                                     base[v] + 0.01 * c + rng.normal(0, 0.01)))
    for cat in ("bottle", "cable"):
        for v in ("mkd", "knn"):
            for s in SEEDS:
                auroc = base[v] + rng.normal(0, 0.01)
                rows.append(_row("mvtec_ad", "one-class", cat, v, s, auroc, pixel_auroc=auroc - 0.02,
                                 aupro=auroc - 0.1, paper_pixel_metric=auroc - 0.01,
                                 map_images_per_second=50.0))
    return pd.DataFrame(rows)


def synthetic_defects() -> pd.DataFrame:
    """TEST DATA: per-defect rows for mvtec_ad."""
    rows = []
    for cat, kinds in (("bottle", ("broken_large", "contamination")), ("cable", ("contamination", "cut"))):
        for kind in kinds:
            for v in ("mkd", "knn"):
                for s in SEEDS:
                    rows.append(dict(dataset="mvtec_ad", protocol="one-class", category=cat, defect=kind,
                                     method=v, variant=v, seed=s, image_auroc=0.8 + 0.01 * s + (v == "mkd") * 0.05,
                                     pixel_auroc=0.9, aupro=0.7))
    return pd.DataFrame(rows)


def synthetic_localization() -> pd.DataFrame:
    """TEST DATA: localisation-method rows for mvtec_ad."""
    rows = []
    for loc in ("gradients", "smooth_grad", "guided_backprop"):
        for blur in (False, True):
            for cat in ("bottle", "cable"):
                for s in SEEDS:
                    v = 0.85 + 0.04 * blur + 0.01 * s
                    rows.append(dict(dataset="mvtec_ad", protocol="one-class", category=cat, method="mkd",
                                     variant="mkd", seed=s, localization=loc, blur=blur, grad_through="both",
                                     pixel_auroc=v + 0.05, aupro=v - 0.2, paper_pixel_metric=v, ms_per_image=3.0))
    return pd.DataFrame(rows)


@pytest.fixture
def results_dir(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    synthetic_runs().to_csv(d / "runs.csv", index=False)
    synthetic_defects().to_csv(d / "defects.csv", index=False)
    synthetic_localization().to_csv(d / "localization.csv", index=False)
    return d


# ------------------------------------------------------------------------------------------ stats
def test_mean_std_matches_hand_computation():
    df = pd.DataFrame({"g": ["a", "a", "b"], "v": [0.90, 0.95, 0.5]})
    out = stats.mean_std(df, "g", "v").set_index("g")
    assert out.loc["a", "mean"] == pytest.approx(0.925)
    assert out.loc["a", "std"] == pytest.approx(math.sqrt(((0.025) ** 2 * 2) / 1))
    assert math.isnan(out.loc["b", "std"]) and out.loc["b", "n"] == 1
    assert tables.fmt_mean_std(92.5, 3.5355, 2) == "92.5 ± 3.5"
    assert tables.fmt_mean_std(92.5, float("nan"), 1) == "92.5"


def test_bootstrap_ci_deterministic_and_contains_mean():
    v = [0.81, 0.84, 0.86, 0.9, 0.83]
    a, b = stats.bootstrap_ci(v, seed=0), stats.bootstrap_ci(v, seed=0)
    assert a == b
    assert a[0] <= np.mean(v) <= a[1] and a[0] < a[1]
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)


def test_wilcoxon_equals_scipy_on_paired_differences():
    rng = np.random.default_rng(0)
    rows = []
    for c in range(4):
        for s in range(2):
            ref = 0.8 + rng.normal(0, 0.02)
            rows.append(dict(dataset="d", protocol="one-class", category=str(c), seed=s, variant="mkd",
                             image_auroc=ref))
            rows.append(dict(dataset="d", protocol="one-class", category=str(c), seed=s, variant="other",
                             image_auroc=ref + rng.normal(0.01, 0.02)))
    df = pd.DataFrame(rows)
    out = stats.wilcoxon_vs_reference(df, "mkd").set_index("variant").loc["other"]
    wide = df.pivot_table(index=["category", "seed"], columns="variant", values="image_auroc")
    diff = (wide["other"] - wide["mkd"]).to_numpy()
    expected = sps.wilcoxon(diff)
    assert out["n"] == 8
    assert out["p_value"] == pytest.approx(expected.pvalue)
    assert out["statistic"] == pytest.approx(expected.statistic)
    assert out["median_diff"] == pytest.approx(np.median(diff))


def test_wilcoxon_too_few_pairs_and_all_zero_give_nan_with_note():
    few = pd.DataFrame(dict(dataset="d", protocol="p", category=["a", "b", "a", "b"], seed=0,
                            variant=["mkd", "mkd", "x", "x"], image_auroc=[0.8, 0.7, 0.9, 0.6]))
    r = stats.wilcoxon_vs_reference(few, "mkd").iloc[0]
    assert math.isnan(r["p_value"]) and "< 6" in r["note"]
    same = pd.DataFrame(dict(dataset="d", protocol="p", category=[str(i) for i in range(8)] * 2, seed=0,
                             variant=["mkd"] * 8 + ["x"] * 8, image_auroc=list(np.linspace(0.5, 0.9, 8)) * 2))
    r = stats.wilcoxon_vs_reference(same, "mkd").iloc[0]
    assert math.isnan(r["p_value"]) and "zero" in r["note"]


def test_average_ranks_hand_example_with_tie():
    df = pd.DataFrame(dict(dataset="d", protocol="p", seed=0,
                           category=["b1"] * 3 + ["b2"] * 3,
                           variant=["A", "B", "C"] * 2,
                           image_auroc=[0.9, 0.8, 0.8, 0.7, 0.9, 0.6]))
    r = stats.average_ranks(df, "image_auroc")
    # b1: A 1, B 2.5, C 2.5 (tie); b2: B 1, A 2, C 3
    assert r.to_dict() == {"A": 1.5, "B": 1.75, "C": 2.75}
    assert list(r.index) == ["A", "B", "C"]


def test_nemenyi_cd_k3_n10():
    assert stats.nemenyi_cd(3, 10) == pytest.approx(2.343 * math.sqrt(3 * 4 / 60))
    assert set(stats.NEMENYI_Q_005) == set(range(2, 21))


def test_friedman_matches_scipy():
    rng = np.random.default_rng(1)
    rows = [dict(dataset="d", protocol="p", category=str(c), seed=0, variant=v,
                 image_auroc=0.8 + 0.05 * i + rng.normal(0, 0.03))
            for c in range(10) for i, v in enumerate("ABC")]
    df = pd.DataFrame(rows)
    res = stats.friedman_nemenyi(df, "image_auroc")
    wide = df.pivot_table(index="category", columns="variant", values="image_auroc")
    assert res.p_value == pytest.approx(sps.friedmanchisquare(*[wide[c] for c in "ABC"]).pvalue)
    assert res.cd == pytest.approx(2.343 * math.sqrt(12 / 60)) and res.n_blocks == 10


def test_cd_cliques():
    ranks = pd.Series({"A": 1.0, "B": 1.5, "C": 3.0, "D": 3.2})
    assert cd_cliques(ranks, 1.0) == [["A", "B"], ["C", "D"]]


# ------------------------------------------------------------------------------------------ reference
def test_paper_numbers_consistent_with_paper_md():
    p = tables.load_paper_numbers()
    assert set(p.columns) >= {"dataset", "protocol", "category", "method", "metric", "value", "source",
                              "verified"}
    mv = p[(p["dataset"] == "mvtec_ad") & (p["localization"] == "")]
    for metric, mean in (("image_auroc", 87.74), ("paper_pixel_metric", 90.71)):
        cats = mv[(mv["metric"] == metric) & (mv["category"] != "mean")]
        assert len(cats) == 15
        assert cats["value"].mean() == pytest.approx(mean, abs=0.01)
        assert mv[(mv["metric"] == metric) & (mv["category"] == "mean")]["value"].item() == mean
    unverified = p[p["dataset"].isin(["fashion_mnist", "cifar10", "mnist"])]
    assert (unverified["verified"] == "no").all()
    assert unverified[unverified["dataset"] == "mnist"]["value"].isna().all()


# ------------------------------------------------------------------------------------------ tables
def test_main_table_cells_and_bold(tmp_path):
    rows = []
    for v, vals in (("mkd", (0.90, 0.95)), ("knn", (0.80, 0.82))):
        for s, x in enumerate(vals):
            rows.append(_row("cifar10", "one-class", "airplane", v, s, x))
            rows.append(_row("cifar10", "one-class", "bird", v, s, x - 0.1 if v == "mkd" else x))
    (tmp_path / "res").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "res" / "runs.csv", index=False)
    tables.render_all(tmp_path / "res", tmp_path / "out")
    md = (tmp_path / "out" / "main_cifar10_one_class.md").read_text()
    # airplane: mkd mean 92.5, std sqrt(2 * 0.025^2) = 3.5355 -> best, bold
    assert "| airplane | **92.5 ± 3.5** | 81.0 ± 1.4 |" in md
    # bird: mkd 82.5 ± 3.5 vs knn 81.0 ± 1.4
    assert "| bird | **82.5 ± 3.5** | 81.0 ± 1.4 |" in md
    # mean row: per-seed category means mkd (0.85, 0.90) -> 87.5 ± 3.5; knn (0.80, 0.82) -> 81.0 ± 1.4
    assert "| mean | **87.5 ± 3.5** | 81.0 ± 1.4 |" in md
    assert "2 seeds (0, 1)" in md and "mkd: 15 epochs" in md and "32×32" in md
    assert "≤1000 training images per run" in md
    tex = (tmp_path / "out" / "main_cifar10_one_class.tex").read_text()
    assert r"\textbf{92.5 $\pm$ 3.5}" in tex


def test_render_all_writes_expected_files_only(results_dir, tmp_path):
    out = tmp_path / "report"
    paths = tables.render_all(results_dir, out)
    names = {p.name for p in paths}
    for stem in ("main_fashion_mnist_one_class", "main_fashion_mnist_multi_class", "main_mvtec_ad_one_class",
                 "main_mvtec_ad_one_class_pixel", "paper_comparison", "ablation_fashion_mnist",
                 "localization_mvtec_ad", "defects_mvtec_ad", "ranks", "speed"):
        for ext in (".md", ".tex", ".csv"):
            assert f"{stem}{ext}" in names
            assert (out / f"{stem}{ext}").stat().st_size > 0
        assert r"\begin{tabular}" in (out / f"{stem}.tex").read_text()
    assert {"README_TABLE.md", "index.md"} <= names
    for p in paths:
        assert p.exists()
    # datasets that were not run get no table
    assert not list(out.glob("*cifar10*")) and not list(out.glob("*mnist5k*"))
    assert not (out / "ablation_mvtec_ad.md").exists()  # only one MKD variant there
    # fashion_mnist has no pixel metrics -> no pixel table
    assert not (out / "main_fashion_mnist_one_class_pixel.md").exists()
    index = (out / "index.md").read_text()
    assert "main_mvtec_ad_one_class.md" in index and "ranks.md" in index
    # main tables hold main entries only
    main_csv = pd.read_csv(out / "main_fashion_mnist_one_class.csv")
    assert set(main_csv["variant"]) == {"mkd", "knn", "ocsvm"}


def test_missing_files_give_no_tables(tmp_path):
    (tmp_path / "empty").mkdir()
    paths = tables.render_all(tmp_path / "empty", tmp_path / "out")
    assert [p.name for p in paths] == ["index.md"]
    assert render_figures(tmp_path / "empty", tmp_path / "fig") == []


def test_missing_column_is_an_error(tmp_path):
    (tmp_path / "r").mkdir()
    synthetic_runs().drop(columns=["variant"]).to_csv(tmp_path / "r" / "runs.csv", index=False)
    with pytest.raises(ValueError, match="variant"):
        tables.load_results(tmp_path / "r")


def test_paper_comparison_delta_is_ours_minus_paper(results_dir, tmp_path):
    out = tmp_path / "report"
    tables.render_all(results_dir, out)
    pc = pd.read_csv(out / "paper_comparison.csv", keep_default_na=False, na_values=[""])
    runs = synthetic_runs()
    bottle = runs[(runs["dataset"] == "mvtec_ad") & (runs["category"] == "bottle") & (runs["variant"] == "mkd")]
    row = pc[(pc["dataset"] == "mvtec_ad") & (pc["category"] == "bottle") & (pc["metric"] == "image_auroc")].iloc[0]
    ours = bottle["image_auroc"].mean() * 100
    assert row["paper"] == 99.39
    assert row["ours_mean"] == pytest.approx(ours)
    assert row["delta"] == pytest.approx(ours - 99.39)
    assert row["ci_low"] <= row["ours_mean"] <= row["ci_high"]
    # fashion_mnist mean (unverified) is compared, cifar10 (not run) is not
    fm = pc[pc["dataset"] == "fashion_mnist"]
    assert len(fm) == 1 and fm["verified"].item() == "no"
    assert "cifar10" not in set(pc["dataset"])
    # Table 1 rows against localization.csv
    loc = pc[pc["localization"] == "gradients"]
    assert len(loc) == 2
    md = (out / "paper_comparison.md").read_text()
    assert "94.50 (unverified)" in md
    assert "mean (2/15 cat.)" in md


def test_ablation_and_localization_tables(results_dir, tmp_path):
    out = tmp_path / "report"
    tables.render_all(results_dir, out)
    ab = pd.read_csv(out / "ablation_fashion_mnist.csv")
    r = ab[(ab["variant"] == "mkd-hints-1") & (ab["protocol"] == "one-class")].iloc[0]
    runs = synthetic_runs()
    fm = runs[(runs["dataset"] == "fashion_mnist") & (runs["protocol"] == "one-class")]
    expected = stats.wilcoxon_vs_reference(fm[fm["variant"].isin(["mkd", "mkd-hints-1"])], "mkd")
    assert r["p_value"] == pytest.approx(expected["p_value"].item())
    assert r["n_pairs"] == 12
    assert r["delta"] < 0
    md = (out / "localization_mvtec_ad.md").read_text()
    assert "paper (Table 1), Gaussian" in md and "90.51" in md and "86.16" in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| gradients")]
    assert len(lines) == 1


def test_figures_written_as_png(results_dir, tmp_path):
    out = tmp_path / "figs"
    paths = render_figures(results_dir, out)
    names = {p.name for p in paths}
    assert {"perclass_fashion_mnist_one_class.png", "perclass_mvtec_ad_one_class.png", "hints_fashion_mnist.png",
            "loss_fashion_mnist.png", "critical_difference.png"} <= names
    assert not any("cifar10" in n for n in names)
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert HINT_VARIANTS["mkd-hints-4"] == 4


def test_ranks_fall_back_to_seed_averaged_blocks():
    # TEST DATA: the baseline ran seed 0 only, MKD seed 1 only -> no common (.., seed) block
    rows = [_row("cifar10", "one-class", str(c), v, s, x)
            for c in range(3) for v, s, x in (("mkd", 1, 0.9), ("knn", 0, 0.8))]
    res, blocks = tables.rank_analysis(pd.DataFrame(rows))
    assert res.n_blocks == 3 and "averaged over seeds" in blocks
    assert res.mean_ranks.to_dict() == {"mkd": 1.0, "knn": 2.0}
    assert math.isnan(res.p_value) and "k >= 3" in res.note
