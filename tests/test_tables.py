"""Tests of the reporting layer's numbers: kdad.stats and the kdad.tables families.

All result rows here are synthetic TEST DATA (tests/synthetic_results.py or built inline); none of
them is a measured result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import synthetic_results as sr
from kdad import stats
from kdad.tables import build_tables, load_paper_numbers, load_results
from kdad.tables.ablations import ablation_tables
from kdad.tables.main import main_tables
from kdad.tables.ranks import rank_analysis
from kdad.tables.results import ResultsError, ablation_groups, hint_count
from kdad.tables.speed import speed_table
from kdad.tables.training import training_table
from kdad.tables.writer import fmt_mean_std, to_latex, to_markdown


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return load_results(sr.write_results(tmp_path_factory.mktemp("tables") / "results"))


@pytest.fixture(scope="module")
def tables(results):
    return {t.name: t for t in build_tables(results)}


def _row(dataset, protocol, category, variant, seed, auroc, method=None, ablation_of="", **extra):
    row = dict(dataset=dataset, protocol=protocol, category=category, method=method or variant, variant=variant,
               ablation_of=ablation_of, seed=seed, image_auroc=auroc)
    row.update(extra)
    return row


# ------------------------------------------------------------------------------------------ stats
def test_mean_std_matches_hand_computation():
    df = pd.DataFrame({"g": ["a", "a", "b"], "v": [0.90, 0.95, 0.5]})
    out = stats.mean_std(df, "g", "v").set_index("g")
    assert out.loc["a", "mean"] == pytest.approx(0.925)
    assert out.loc["a", "std"] == pytest.approx(math.sqrt(2 * 0.025 ** 2))
    assert (out.loc["a", "min"], out.loc["a", "max"]) == (0.90, 0.95)
    assert math.isnan(out.loc["b", "std"]) and out.loc["b", "n"] == 1
    assert fmt_mean_std(92.5, 3.5355, 2) == "92.5 ± 3.5"
    assert fmt_mean_std(92.5, float("nan"), 1) == "92.5"


def test_bootstrap_ci_is_scipys_percentile_bootstrap():
    v = np.array([0.81, 0.84, 0.86, 0.9, 0.83])
    ours = stats.bootstrap_ci(v, seed=0)
    theirs = sps.bootstrap((v,), np.mean, n_resamples=2000, method="percentile",
                           rng=np.random.default_rng(0)).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high))
    assert ours == stats.bootstrap_ci(v, seed=0) and ours[0] < v.mean() < ours[1]
    assert stats.bootstrap_ci([0.7]) == (0.7, 0.7) and stats.bootstrap_ci([0.7, 0.7]) == (0.7, 0.7)


def test_seed_interval_is_a_range_below_four_seeds():
    few = stats.seed_interval([90.0, 92.0, 91.0])
    assert (few.kind, few.low, few.high) == ("range", 90.0, 92.0)
    assert few.label() == "90.0–92.0 (range)"
    many = stats.seed_interval([90.0, 92.0, 91.0, 93.0, 91.5])
    assert many.kind == "95% CI" and "95% CI" in many.label()
    assert (many.low, many.high) == pytest.approx(stats.bootstrap_ci([90.0, 92.0, 91.0, 93.0, 91.5]))


def _seeded_pairs(n_cats=8, seeds=(0, 1, 2), rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    rows = []
    for c in range(n_cats):
        base = 0.8 + rng.normal(0, 0.03)
        for s in seeds:
            ref = base + rng.normal(0, 0.01)
            rows += [_row("d", "one-class", str(c), "mkd", s, ref),
                     _row("d", "one-class", str(c), "other", s, ref + rng.normal(0.01, 0.02))]
    return pd.DataFrame(rows)


def test_wilcoxon_pairs_categories_and_equals_scipy_on_per_category_means():
    df = _seeded_pairs()
    out = stats.wilcoxon_vs_reference(df, "mkd").set_index("variant").loc["other"]
    # independently: each category's mean over seeds, one pair per category
    means = {v: {c: np.mean([r["image_auroc"] for r in df.to_dict("records")
                             if r["variant"] == v and r["category"] == c]) for c in map(str, range(8))}
             for v in ("mkd", "other")}
    diff = np.array([means["other"][c] - means["mkd"][c] for c in map(str, range(8))])
    expected = sps.wilcoxon(diff)
    assert out["n"] == 8 and out["n_replicates"] == 3
    assert out["p_value"] == pytest.approx(expected.pvalue) and out["statistic"] == pytest.approx(expected.statistic)
    assert out["mean_diff"] == pytest.approx(diff.mean()) and out["median_diff"] == pytest.approx(np.median(diff))
    # the seed × category p (the old, pseudo-replicated test) is a different number
    wide = df.pivot_table(index=["category", "seed"], columns="variant", values="image_auroc")
    assert out["p_value"] != pytest.approx(sps.wilcoxon(wide["other"] - wide["mkd"]).pvalue)


def test_more_seeds_do_not_make_more_pairs():
    df = _seeded_pairs()
    base = stats.wilcoxon_vs_reference(df, "mkd").iloc[0]
    # the same runs again under new seed numbers: 6 seeds per category, same per-category means
    copy = df.assign(seed=df["seed"] + 10)
    twice = stats.wilcoxon_vs_reference(pd.concat([df, copy]), "mkd").iloc[0]
    assert twice["n"] == base["n"] == 8 and twice["n_replicates"] == 6
    assert twice["p_value"] == pytest.approx(base["p_value"])
    # only the seeds both variants ran enter a pair
    lopsided = pd.concat([df, copy[copy["variant"] == "other"].assign(image_auroc=0.0)])
    assert stats.wilcoxon_vs_reference(lopsided, "mkd").iloc[0]["p_value"] == pytest.approx(base["p_value"])


def test_wilcoxon_needs_six_nonzero_pairs():
    few = pd.DataFrame([_row("d", "p", c, v, 0, x) for c, v, x in
                        (("a", "mkd", 0.8), ("b", "mkd", 0.7), ("a", "x", 0.9), ("b", "x", 0.6))])
    r = stats.wilcoxon_vs_reference(few, "mkd").iloc[0]
    assert math.isnan(r["p_value"]) and "< 6" in r["note"]
    # 8 pairs but only 3 differ: zero differences are dropped by the test, so no p
    vals = np.linspace(0.5, 0.9, 8)
    other = vals.copy()
    other[:3] += 0.05
    df = pd.DataFrame([_row("d", "p", str(i), "mkd", 0, x) for i, x in enumerate(vals)]
                      + [_row("d", "p", str(i), "x", 0, x) for i, x in enumerate(other)])
    r = stats.wilcoxon_vs_reference(df, "mkd").iloc[0]
    assert r["n"] == 8 and math.isnan(r["p_value"]) and "3 non-zero" in r["note"]
    same = pd.DataFrame([_row("d", "p", str(i), v, 0, x) for v in ("mkd", "x") for i, x in enumerate(vals)])
    assert "zero" in stats.wilcoxon_vs_reference(same, "mkd").iloc[0]["note"]


def test_average_ranks_hand_example_with_tie():
    df = pd.DataFrame(dict(dataset="d", protocol="p", seed=0, category=["b1"] * 3 + ["b2"] * 3,
                           variant=["A", "B", "C"] * 2, image_auroc=[0.9, 0.8, 0.8, 0.7, 0.9, 0.6]))
    r = stats.average_ranks(df, "image_auroc")
    # b1: A 1, B 2.5, C 2.5 (tie); b2: B 1, A 2, C 3
    assert r.to_dict() == {"A": 1.5, "B": 1.75, "C": 2.75}


def test_nemenyi_critical_values_from_scipy_match_demsar_table():
    # Demšar 2006, Table 5(a), alpha = 0.05, k = 2..10
    table = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}
    for k, q in table.items():
        assert stats.nemenyi_q(k) == pytest.approx(q, abs=1e-3)
    # k = 10 methods on N = 30 blocks: CD = 3.164 * sqrt(10 * 11 / (6 * 30))
    assert stats.nemenyi_cd(10, 30) == pytest.approx(3.164 * math.sqrt(110 / 180), abs=1e-3)
    assert stats.nemenyi_q(25) > stats.nemenyi_q(20) > 3.5  # no upper limit on the number of methods
    with pytest.raises(ValueError):
        stats.nemenyi_q(1)


def test_friedman_matches_scipy():
    rng = np.random.default_rng(1)
    df = pd.DataFrame([_row("d", "p", str(c), v, 0, 0.8 + 0.05 * i + rng.normal(0, 0.03))
                       for c in range(10) for i, v in enumerate("ABC")])
    res = stats.friedman_nemenyi(df, "image_auroc")
    wide = df.pivot_table(index="category", columns="variant", values="image_auroc")
    assert res.p_value == pytest.approx(sps.friedmanchisquare(*[wide[c] for c in "ABC"]).pvalue)
    assert res.cd == pytest.approx(stats.nemenyi_q(3) * math.sqrt(12 / 60)) and res.n_blocks == 10


def test_rank_analysis_leaves_out_a_method_that_ran_in_few_blocks():
    rows = [_row(d, "one-class", str(c), v, 0, 0.9 - 0.1 * i)
            for d in ("a", "b") for c in range(5) for i, v in enumerate(("m1", "m2", "m3"))]
    rows.append(_row("a", "one-class", "0", "rare", 0, 0.99))
    ra = rank_analysis(pd.DataFrame(rows))
    assert ra.dropped == ["rare"] and ra.result.n_blocks == 10 and ra.result.k == 3
    assert list(ra.result.mean_ranks.index) == ["m1", "m2", "m3"]


# ------------------------------------------------------------------------------------------ reference
def test_paper_numbers_are_consistent_and_say_where_they_come_from():
    p = load_paper_numbers()
    assert set(p.columns) >= {"dataset", "protocol", "category", "method", "metric", "value", "source", "verified"}
    mv = p[(p["dataset"] == "mvtec_ad") & (p["localization"] == "")]
    for metric, mean in (("image_auroc", 87.74), ("paper_pixel_metric", 90.71)):
        cats = mv[(mv["metric"] == metric) & (mv["category"] != "mean")]
        assert len(cats) == 15 and cats["value"].mean() == pytest.approx(mean, abs=0.01)
    assert p.loc[p["verified"] == "yes", "source"].str.contains("arXiv 2011.11108").all()
    assert (p.loc[p["localization"] != "", "source"].str.contains("Table 1")).all()
    text = open(sr.Path(__file__).parent.parent / "kdad" / "reference" / "paper_numbers.csv").read()
    assert "PAPER" not in text and "DESIGN" not in text
    assert p[p["dataset"] == "mnist"]["value"].isna().all()


# ------------------------------------------------------------------------------------------ loading
def test_load_results_reads_options_as_text_and_checks_columns(tmp_path, results):
    assert results.runs["opt.train_hints"].iloc[0] == "0,1,2,3"
    assert results.runs.loc[results.runs["variant"] == "mkd-noblur", "opt.blur_sigma"].iloc[0] == "0.0"
    assert results.runs["category"].iloc[0] == "0"  # a category name, not a number
    d = tmp_path / "r"
    d.mkdir()
    sr.runs_frame().drop(columns=["variant"]).to_csv(d / "runs.csv", index=False)
    with pytest.raises(ResultsError, match="variant"):
        load_results(d)
    # a file without ablation_of: every row is a compared method
    sr.runs_frame().drop(columns=["ablation_of"]).to_csv(d / "runs.csv", index=False)
    assert (load_results(d).runs["ablation_of"] == "").all()
    assert hint_count("0,1,2,3") == 4 and hint_count("3") == 1 and hint_count("") is None


def test_ablations_are_grouped_by_ablation_of_and_labelled_by_options_not_names():
    rows = []
    for c in range(4):
        for s in range(2):
            opts = {"opt.train_hints": "0,1,2,3", "opt.score_hints": "1,2,3", "opt.lam": "0.01"}
            rows += [_row("d", "one-class", str(c), "ref", s, 0.9, "mkd", **opts),
                     # the name says "hints-7", the options say what ran
                     _row("d", "one-class", str(c), "hints-7", s, 0.8, "mkd", "ref",
                          **{**opts, "opt.train_hints": "3", "opt.score_hints": "3"}),
                     _row("d", "one-class", str(c), "other-ref", s, 0.7, "mkd", **{**opts, "opt.lam": "1"}),
                     _row("d", "one-class", str(c), "lam", s, 0.75, "mkd", "other-ref", **opts),
                     _row("d", "one-class", str(c), "orphan", s, 0.75, "mkd", "not-run", **opts)]
    groups = {g.reference: g for g in ablation_groups(pd.DataFrame(rows))}
    assert set(groups) == {"ref", "other-ref", "not-run"}
    assert not groups["not-run"].reference_ran and groups["not-run"].members[0].label == "(reference not run here)"
    (a,) = groups["ref"].members
    assert a.variant == "hints-7" and a.label == "score_hints=3; train_hints=3" and a.hints_only
    (b,) = groups["other-ref"].members
    assert b.label == "lam=0.01" and not b.hints_only
    (t,) = ablation_tables(pd.DataFrame(rows))
    assert set(t.frame.index.get_level_values("ablation of")) == {"ref", "other-ref", "not-run"}
    assert "score_hints=3; train_hints=3" in to_markdown(t)


# ------------------------------------------------------------------------------------------ tables
def test_main_table_cells_bold_and_paper_first():
    rows = []
    for v, vals in (("mkd", (0.90, 0.95)), ("knn", (0.80, 0.82))):
        for s, x in enumerate(vals):
            rows.append(_row("mvtec_ad", "one-class", "bottle", v, s, x))
            rows.append(_row("mvtec_ad", "one-class", "cable", v, s, x - 0.1 if v == "mkd" else x))
    (t,) = [t for t in main_tables(pd.DataFrame(rows), load_paper_numbers()) if t.kind == "main"]
    md = to_markdown(t)
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[2].startswith("| MKD (paper)") and "99.4" in lines[2] and "87.7" in lines[2]
    # mkd: bottle 92.5 ± 3.5 (best), cable 82.5 ± 3.5 (best); mean per seed (0.85, 0.90) → 87.5 ± 3.5
    cells = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert cells == ["mkd", "**87.5 ± 3.5**", "**92.5 ± 3.5**", "**82.5 ± 3.5**"]
    assert "81.0 ± 1.4" in lines[4]
    assert r"\textbf{92.5 $\pm$ 3.5}" in to_latex(t) and r"\toprule" in to_latex(t)


def test_main_table_transposes_when_categories_outnumber_methods():
    rows = [_row("mvtec_ad", "one-class", f"c{i}", "mkd", s, 0.8 + 0.01 * i) for i in range(6) for s in (0, 1)]
    (t,) = [t for t in main_tables(pd.DataFrame(rows), load_paper_numbers()) if t.kind == "main"]
    # categories as rows, the paper's number (its 15-category mean) the first column
    assert t.frame.index.name == "category" and list(t.frame.columns) == ["MKD (paper)", "mkd"]
    assert t.frame.loc["mean", "MKD (paper)"] == "87.7" and t.frame.loc["c0", "MKD (paper)"] == "–"


def test_ablation_table_pairs_categories_not_seeds(results, tables):
    t = tables["ablation_fashion_mnist"]
    r = t.data[(t.data["variant"] == "mkd-hints-1")].iloc[0]
    # 4 categories × 3 seeds: 4 pairs, too few for a test (the old seed × category test had 12)
    assert r["n_pairs"] == 4 and r["pair_unit"] == "category" and r["seeds_per_pair"] == 3
    assert math.isnan(r["p_value"]) and "< 6" in r["note"]
    assert "– (n = 4)" in to_markdown(t) and "p (n categories)" in t.frame.columns
    assert r["delta"] < 0 and r["options_changed"] == "score_hints=3; train_hints=3"
    # map-only variants are the localisation table's, not ablations of the detector
    assert not set(t.data["variant"]) & {"mkd-noblur", "mkd-smoothgrad"}
    assert "multi-class image AUROC" not in t.frame.columns  # no ablation ran there


def test_localization_table_has_the_papers_table1_shape(tables):
    t = tables["localization_mvtec_ad_one_class"]
    sg = "smooth_grad, noise 0.25 % (official)"
    assert list(t.frame.index) == ["gradients", sg]
    cols = list(t.frame.columns)
    assert cols[:2] == ["paper (Table 1) · no blur", "paper (Table 1) · Gaussian"]
    assert "pixel AUROC · no blur" in cols and "pixel AUROC · Gaussian σ=4" in cols
    assert t.frame.loc["gradients", "paper (Table 1) · Gaussian"] == "90.51"
    assert t.frame.loc[sg, "paper (Table 1) · no blur"] == "86.97"
    by = t.data.set_index(["variant", "metric"])
    assert by.loc[("mkd-smoothgrad-noblur", "aupro"), "blur_sigma"] == 0.0


def test_maps_of_a_subset_are_a_table_of_their_own_with_smoothgrad_noise_rows(tables):
    full, sub = tables["localization_mvtec_ad_one_class"], tables["localization_mvtec_ad_one_class_maps2"]
    assert not set(full.data["variant"]) & {"mkd-maps2", "mkd-sg15-maps2", "mkd-sgofficial-maps2"}
    assert set(sub.data["variant"]) == {"mkd-maps2", "mkd-sg15-maps2", "mkd-sgofficial-maps2"}
    assert list(sub.frame.index) == ["gradients", "smooth_grad, noise 0.25 % (official)",
                                     "smooth_grad, noise 15 % (standard)"]
    assert "2 good + 2 defective" in sub.caption
    # the paper's SmoothGrad number stands beside the official noise only
    assert sub.frame.loc["smooth_grad, noise 0.25 % (official)", "paper (Table 1) · Gaussian"] == "90.54"
    assert sub.frame.loc["smooth_grad, noise 15 % (standard)", "paper (Table 1) · Gaussian"] == "–"


def test_paper_comparison_matches_table1_rows_to_variants_by_options(tables):
    d = tables["paper_comparison"].data
    row = d[(d["localization"] == "gradients") & (d["blur"] == "no")].iloc[0]
    assert row["variant"] == "mkd-noblur"
    bottle = d[(d["category"] == "bottle") & (d["metric"] == "image_auroc")].iloc[0]
    assert bottle["delta"] == pytest.approx(bottle["ours_mean"] - 99.39)
    assert bottle["interval"] == "range" and bottle["interval_low"] <= bottle["ours_mean"] <= bottle["interval_high"]
    assert "cifar10" not in set(d["dataset"])


def test_defect_tables_per_kind_and_per_level(tables):
    kinds = tables["defects_mvtec_ad_one_class"]
    assert ("image AUROC", "all categories", "contamination") in kinds.frame.index
    assert kinds.frame.columns[0] == "mkd"
    levels = tables["levels_mvtec_ad_one_class"]
    assert levels.frame.index.names[-1] == "difficulty level"
    assert levels.frame.loc[("image AUROC", "bottle", "3"), "mkd"] == "94.0 ± 0.0"


def test_speed_table_names_the_machine():
    runs = sr.runs_frame()
    t = speed_table(runs)
    assert "Synthetic CPU 9000, 2 cores, no GPU, device cpu" in t.caption
    runs.loc[runs["dataset"] == "mvtec_ad", ["machine", "gpu", "device"]] = ["Big Box", "H200", "cuda"]
    t = speed_table(runs)
    assert "several machines" in t.caption and "machine" in t.frame.index.names
    assert any("H200" in n for n in t.notes) and any("Synthetic CPU 9000" in n for n in t.notes)


def test_training_table_flags_a_loss_still_falling():
    runs = sr.runs_frame()
    hist = sr.history_frame(runs)
    flat = hist["variant"] == "ae_l2"
    hist.loc[flat, "loss"] = 0.05  # a flat loss has converged
    t = training_table(hist, runs)
    by = t.data.set_index(["dataset", "protocol", "variant"])
    assert by.loc[("mvtec_ad", "one-class", "ae_l2"), "still_falling"] == 0
    assert by.loc[("mvtec_ad", "one-class", "mkd"), "still_falling"] == 6
    assert by.loc[("mvtec_ad", "one-class", "mkd"), "epochs"] == 10


def test_every_table_renders_to_markdown_and_latex(tables):
    for t in tables.values():
        md, tex = to_markdown(t), to_latex(t)
        assert md.startswith(f"**{t.name}**") and "|" in md
        assert r"\begin{tabular}" in tex and "tab:" + t.name.replace("_", "-") in tex


def test_captions_name_every_departure_from_the_papers_mkd():
    from kdad.tables.results import departures
    base = dict(dataset="fashion_mnist", method="mkd", **{"opt.expert": "vgg16", "opt.epochs": 51,
                                                          "opt.normalize": "False", "opt.batch_size": 64,
                                                          "opt.cloner_head": "relu", "opt.bn_recalibrate": "False"})
    assert departures(pd.DataFrame([base])) is None          # the paper's own settings: nothing to say
    ours = {**base, "opt.expert": "efficientnet_lite0", "opt.epochs": 8.0, "opt.normalize": "True",
            "opt.cloner_head": "auto"}
    note = departures(pd.DataFrame([ours, {**ours, "method": "knn", "opt.epochs": 99}]))
    for part in ("efficientnet_lite0 instead of VGG16", "linear hint head", "8 epochs instead of 51",
                 "normalised"):
        assert part in note
    assert "99" not in note and "batch" not in note          # only MKD's options count
    tex = departures(pd.DataFrame([{**ours, "dataset": "textures", "opt.normalize": "False", "opt.epochs": 10,
                                    "opt.batch_size": 16, "opt.bn_recalibrate": "True"}]))
    for part in ("stand in for MVTec AD", "10 epochs instead of 601", "batch 16 instead of 64", "BatchNorm"):
        assert part in tex
    assert "normalised" not in tex


# ------------------------------------------------------------------------------------------ ablation p
def _ablation_runs(n_cats, seeds=(0, 1, 2)):
    rng = np.random.default_rng(5)
    opts = {"opt.train_hints": "0,1,2,3", "opt.score_hints": "1,2,3"}
    rows = []
    for c in range(n_cats):
        base = 0.85 + rng.normal(0, 0.03)
        for s in seeds:
            rows += [_row("d", "one-class", str(c), "ref", s, base + rng.normal(0, 0.01), "mkd", **opts),
                     _row("d", "one-class", str(c), "abl", s, base - 0.02 + rng.normal(0, 0.01), "mkd", "ref",
                          **{**opts, "opt.score_hints": "0,1,2,3"})]
    return pd.DataFrame(rows)


def test_ablation_p_is_over_categories_with_n_beside_it():
    df = _ablation_runs(9)
    (t,) = ablation_tables(df)
    r = t.data[t.data["variant"] == "abl"].iloc[0]
    cat_means = df.groupby(["variant", "category"])["image_auroc"].mean().unstack(0)
    expected = sps.wilcoxon(cat_means["abl"] - cat_means["ref"]).pvalue
    assert r["p_value"] == pytest.approx(expected) and r["n_pairs"] == 9
    cell = t.frame.loc[("ref", "abl", "score_hints=0,1,2,3"), "p (n categories)"]
    assert cell.endswith("(n = 9)") and cell.startswith(f"{expected:.3f}" if expected >= 1e-3 else f"{expected:.1e}")


# ------------------------------------------------------------------------------------------ Friedman floor
def _rank_runs(n_cats, datasets=("a",), methods=("m1", "m2", "m3"), seeds=(0, 1), tie=False):
    rng = np.random.default_rng(2)
    rows = []
    for d in datasets:
        for c in range(n_cats):
            for i, m in enumerate(methods):
                for s in seeds:
                    x = 0.9 - 0.05 * i + rng.normal(0, 0.01)
                    if tie and m == methods[-1]:
                        x = 0.9 - 0.05 * (i - 1) + (0.02 if c % 2 else -0.02)  # half above, half below
                    rows.append(_row(d, "one-class", str(c), m, s, x))
    return pd.DataFrame(rows)


def test_friedman_needs_three_methods_and_five_blocks():
    from kdad.figures.cd import cd_figures
    from kdad.tables.ranks import ranks_table
    assert stats.MIN_METHODS_FOR_FRIEDMAN == 3 and stats.MIN_BLOCKS_FOR_FRIEDMAN == 5
    few = _rank_runs(4)  # 4 categories × 2 seeds: 4 blocks, not 8
    ra = rank_analysis(few)
    assert ra.result.n_blocks == 4 and not ra.tested and math.isnan(ra.result.cd)
    t = ranks_table(few)
    assert "no Friedman test" in t.caption and "fewer than the 5 required" in t.caption
    assert "Friedman p =" not in t.caption and list(cd_figures(few)) == []
    two = _rank_runs(8, methods=("m1", "m2"))
    assert not rank_analysis(two).tested and "at least 3" in ranks_table(two).caption
    enough = _rank_runs(5)
    ra = rank_analysis(enough)
    assert ra.tested and ra.result.n_blocks == 5
    (fig,) = list(cd_figures(enough))
    assert "Friedman p =" in fig.caption and "(N = 5)" in fig.caption


def test_blocks_are_dataset_category_pairs_across_datasets():
    from kdad.tables.ranks import ranks_table
    runs = _rank_runs(3, datasets=("mnist", "fashion_mnist"))
    # both protocols of one category are one block, not two
    runs = pd.concat([runs, runs.assign(protocol="multi-class")])
    ra = rank_analysis(runs)
    assert ra.result.n_blocks == 6 and ra.tested and ra.datasets == ["fashion_mnist", "mnist"]
    t = ranks_table(runs)
    assert "MNIST" in t.caption and "Fashion-MNIST" in t.caption and "(N = 6)" in t.caption


def test_tied_methods_get_average_ranks_and_no_claimed_order():
    from kdad.figures.cd import cd_cliques, cd_figures
    from kdad.tables.ranks import ranks_table
    runs = _rank_runs(6, methods=("m1", "m2", "m3"), tie=True)  # m3 beats m2 in half the blocks
    ra = rank_analysis(runs)
    assert ra.result.mean_ranks["m2"] == ra.result.mean_ranks["m3"] == 2.5
    assert any(["m2", "m3"] == c[-2:] or {"m2", "m3"} <= set(c) for c in cd_cliques(ra.result.mean_ranks, ra.result.cd))
    t = ranks_table(runs)
    assert any("no order between them: m2, m3" in n for n in t.notes)
    (fig,) = list(cd_figures(runs))
    assert "tied (no order between them): m2 = m3" in fig.caption
    assert cd_cliques(pd.Series({"A": 1.0, "B": 2.0, "C": 2.0}), 0.5) == [["B", "C"]]


def test_protocol_table_puts_one_class_beside_multi_class(results, tables):
    t = tables["protocols_fashion_mnist"]
    runs = results.runs
    # a semantic set: the protocols pose different tasks per class, so means only and no test
    assert list(t.frame.index) == ["mean over categories"] and not any("p (n" in c for c in t.frame.columns)
    main = runs[(runs["dataset"] == "fashion_mnist") & (runs["variant"] == "mkd")]
    means = {p: main[main["protocol"] == p].groupby("seed")["image_auroc"].mean().mean() * 100
             for p in ("one-class", "multi-class")}
    assert t.frame.loc["mean over categories", "mkd · Δ (multi − one)"] == f"{means['multi-class'] - means['one-class']:.1f}"
    assert "leave one class out" in " ".join(t.notes)
    # variants that ran under one protocol only (the ablations, ocsvm on mvtec) are not in it
    assert not any(c.startswith("mkd-hints") for c in t.frame.columns)
    assert "protocols_mvtec_ad" not in tables


def test_protocol_table_tests_defect_sets_over_categories():
    from kdad.tables.protocols import protocol_tables
    rows = [_row("textures", p, c, "mkd", s, 0.5 + 0.05 * i + (0.02 if p == "one-class" else 0) + 0.001 * s)
            for p in ("one-class", "multi-class") for i, c in enumerate("abcdefg") for s in (0, 1, 2)]
    (t,) = protocol_tables(pd.DataFrame(rows))
    assert t.frame.loc["a", "mkd · Δ (multi − one)"] == "-2.0"
    p = t.data[t.data["category"] == "wilcoxon"].iloc[0]
    assert p["n"] == 7 and p["p_value"] == pytest.approx(0.015625)  # all 7 differences negative: 2/2^7
