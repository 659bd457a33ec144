"""kdad report end to end on a synthetic results folder (TEST DATA, tests/synthetic_results.py):
every table and figure, the index, the manifest, what it must never delete, and what it refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import pytest

import synthetic_results as sr
from kdad.figures import cd_cliques, example_file
from kdad.figures.heatmap import heatmap_frame
from kdad.report import MANIFEST, ReportError, render
from kdad.tables import load_results
from kdad.tables.results import ResultsError

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"

TABLES = ["main_fashion_mnist_one_class", "main_fashion_mnist_multi_class", "main_mvtec_ad_one_class",
          "main_mvtec_ad_one_class_pixel", "metrics_mvtec_ad_one_class", "summary", "paper_comparison",
          "ablation_fashion_mnist", "localization_mvtec_ad_one_class", "defects_mvtec_ad_one_class",
          "levels_mvtec_ad_one_class", "ranks", "speed", "training"]
FIGURES = ["heatmap_fashion_mnist_one_class", "heatmap_fashion_mnist_multi_class", "heatmap_mvtec_ad_one_class",
           "heatmap_mvtec_ad_one_class_aupro", "critical_difference", "hints_fashion_mnist",
           "curves_fashion_mnist_one_class", "curves_fashion_mnist_multi_class", "curves_mvtec_ad_one_class",
           "convergence_fashion_mnist",
           "convergence_mvtec_ad", "maps_mvtec_ad_one_class_bottle", "maps_mvtec_ad_one_class_cable"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    results = sr.write_results(tmp / "results")
    examples = sr.write_examples(tmp / "work")
    out = tmp / "report"
    (out / "paper").mkdir(parents=True)
    (out / "paper" / "index.md").write_text("another run's report")  # not ours: must survive
    (out / "notes.txt").write_text("a user's file")
    paths = render(results, out, examples)
    return tmp, results, examples, out, paths


def test_every_table_and_figure_is_written(rendered):
    _, _, _, out, paths = rendered
    names = {p.relative_to(out).as_posix() for p in paths}
    for t in TABLES:
        for ext in (".md", ".tex", ".csv"):
            assert f"{t}{ext}" in names, t + ext
        assert (out / f"{t}.md").read_text().startswith(f"**{t}**")
        assert r"\begin{tabular}" in (out / f"{t}.tex").read_text()
        assert len(pd.read_csv(out / f"{t}.csv")) > 0
    for f in FIGURES:
        data = (out / "figures" / f"{f}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 5000, f
    assert {"README_TABLE.md", "index.md"} <= names
    assert not any("cifar10" in n for n in names)  # a dataset that was not run gets nothing
    for p in paths:
        assert p.is_file()


def test_index_shows_every_figure_inline_with_a_caption_and_links_every_table(rendered):
    _, _, _, out, paths = rendered
    index = (out / "index.md").read_text()
    figures = re.findall(r"!\[([^\]]+)\]\((figures/[^)]+\.png)\)", index)
    assert {Path(f).stem for _, f in figures} == set(FIGURES)
    for caption, _ in figures:
        assert "seed" in caption, caption
    for t in TABLES:
        assert f"]({t}.md)" in index and f"]({t}.tex)" in index and f"]({t}.csv)" in index
    assert index.count("| MKD (paper)") == 1  # the summary table inline
    readme = (out / "README_TABLE.md").read_text()
    assert "| MKD (paper)" in readme and "index.md" in readme


def test_figure_captions_say_what_was_run(rendered):
    _, _, _, out, _ = rendered
    index = (out / "index.md").read_text()
    caption = re.search(r"\*(Critical difference[^*]+)\*", index).group(1)
    # blocks are (dataset, category): 4 Fashion-MNIST + 2 MVTec AD categories (the two protocols of a
    # Fashion-MNIST category are one block); ocsvm-expert (no MVTec AD run) is left out to reach 5 blocks
    assert "N = 6" in caption and "Friedman p =" in caption and "k = 3" in caption
    assert "Fashion-MNIST, MVTec AD" in caption and "ocsvm-expert" in caption
    maps = re.search(r"\*(MVTec AD, one-class, bottle: anomaly maps[^*]+)\*", index).group(1)
    assert "mkd-smoothgrad seed 0" in maps and "3 variant(s)" in maps  # the meta.json file is used
    hints = re.search(r"\*(Fashion-MNIST: hint ablation[^*]+)\*", index).group(1)
    assert "3 seeds (0, 1, 2)" in hints and "mkd-hints-1" in hints


def test_heatmap_values_are_the_mean_over_seeds(rendered):
    _, results, _, _, _ = rendered
    runs = load_results(results).runs
    rows = runs[(runs["dataset"] == "fashion_mnist") & (runs["protocol"] == "one-class") & (runs["ablation_of"] == "")]
    grid = heatmap_frame(rows, "image_auroc")
    assert list(grid.index)[0] == "mkd" and list(grid.columns) == ["0", "1", "2", "3", "mean"]
    knn = rows[(rows["variant"] == "knn") & (rows["category"] == "2")]["image_auroc"].mean() * 100
    assert grid.loc["knn", "2"] == pytest.approx(knn)
    assert grid.loc["knn", "mean"] == pytest.approx(rows[rows["variant"] == "knn"]["image_auroc"].mean() * 100)


def test_manifest_lists_exactly_what_was_written(rendered):
    _, _, _, out, paths = rendered
    listed = {ln for ln in (out / MANIFEST).read_text().splitlines() if ln and not ln.startswith("#")}
    assert listed == {p.relative_to(out).as_posix() for p in paths}
    assert not list(out.rglob("*.tmp-*"))  # atomic writes leave no temporary files


def test_rerender_deletes_only_its_own_stale_files(rendered, tmp_path):
    tmp, results, _, out, _ = rendered
    # a second results folder without mvtec_ad: its tables and figures become stale
    fewer = tmp_path / "results"
    fewer.mkdir()
    for name in ("runs", "curves", "history"):
        df = pd.read_csv(results / f"{name}.csv", dtype={"category": str})
        df[df["dataset"] == "fashion_mnist"].to_csv(fewer / f"{name}.csv", index=False)
    out2 = tmp_path / "out"
    out2.mkdir()
    for p in out.rglob("*"):
        if p.is_file():
            (out2 / p.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (out2 / p.relative_to(out)).write_bytes(p.read_bytes())
    (out2 / "figures" / "my_own.png").write_bytes(PNG)  # not in the manifest: never deleted
    render(fewer, out2)
    assert (out2 / "notes.txt").read_text() == "a user's file"
    assert (out2 / "paper" / "index.md").is_file() and (out2 / "figures" / "my_own.png").is_file()
    assert not (out2 / "main_mvtec_ad_one_class.md").exists()
    assert not list((out2 / "figures").glob("maps_*"))
    assert (out2 / "main_fashion_mnist_one_class.md").is_file()


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_report(out: Path, dest: Path) -> Path:
    for p in out.rglob("*"):
        if p.is_file():
            (dest / p.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            (dest / p.relative_to(out)).write_bytes(p.read_bytes())
    return dest


@pytest.mark.parametrize("own", ["index.md", "summary.tex", "figures/critical_difference.png"])
def test_refuses_to_overwrite_a_users_file_and_changes_nothing(rendered, tmp_path, own):
    """A file the report would write but that no earlier render wrote (not in the manifest) is the
    user's: one error naming it, and the folder is left exactly as it was."""
    _, results, examples, _, _ = rendered
    out = tmp_path / "out"
    (out / own).parent.mkdir(parents=True)
    (out / own).write_bytes(b"my own file")
    (out / "notes.txt").write_text("a user's file")
    before = _tree(out)
    with pytest.raises(ReportError, match=rf"refusing to overwrite .*{own}.*not written by an earlier `kdad report`"):
        render(results, out, examples)
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if "kdad-tmp" in p.name]  # the staging folder is gone


def test_a_failing_render_leaves_the_old_report_whole(rendered, tmp_path, monkeypatch):
    """An exception in a figure (or a full disk) halfway through: the previous report is untouched."""
    _, results, examples, out, _ = rendered
    old = _copy_report(out, tmp_path / "out")
    before = _tree(old)
    import kdad.figures

    def broken(*args, **kwargs):  # every table is rendered by then, no figure yet
        raise RuntimeError("a figure failed")
        yield

    monkeypatch.setattr(kdad.figures, "build_figures", broken)
    with pytest.raises(RuntimeError, match="a figure failed"):
        render(results, old, examples)
    assert _tree(old) == before
    assert not [p for p in tmp_path.iterdir() if "kdad-tmp" in p.name]
    monkeypatch.undo()
    render(results, old, examples)  # the same folder renders again (its files are in the manifest)
    assert (old / "index.md").read_bytes() == (out / "index.md").read_bytes()


def test_refuses_missing_or_empty_results_and_leaves_the_report_alone(tmp_path, rendered):
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.md").write_text("the previous report")
    with pytest.raises(ReportError, match="does not exist"):
        render(tmp_path / "nope", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no runs.csv"):
        render(tmp_path / "empty", out)
    (tmp_path / "empty" / "runs.csv").write_text("")
    with pytest.raises(ReportError, match="no runs.csv"):
        render(tmp_path / "empty", out)
    assert (out / "index.md").read_text() == "the previous report"
    assert sorted(p.name for p in out.iterdir()) == ["index.md"]


def test_refuses_an_output_folder_that_is_or_contains_the_results(tmp_path):
    results = sr.write_results(tmp_path / "a" / "results")
    for out in (results, tmp_path / "a", tmp_path):
        with pytest.raises(ReportError, match="contains the results"):
            render(results, out)
    assert sorted(p.name for p in results.iterdir()) == ["curves.csv", "defects.csv", "history.csv", "runs.csv"]


def test_cli_exits_non_zero_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdad", "report", "--results", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_example_files_know_their_run(tmp_path):
    p = tmp_path / "w" / "eval" / "textures" / "multi-class" / "mkd-hints-1" / "seed3" / "examples.npz"
    p.parent.mkdir(parents=True)
    np.savez(p, **{"all/image": np.zeros((1, 1, 4, 4), np.uint8)})
    e = example_file(p)
    assert (e.dataset, e.protocol, e.variant, e.seed) == ("textures", "multi-class", "mkd-hints-1", 3)
    (p.parent / "meta.json").write_text(json.dumps({"dataset": "d", "protocol": "one-class", "variant": "v",
                                                    "seed": 1}))
    assert example_file(p).dataset == "d"
    q = tmp_path / "flat" / "examples.npz"
    q.parent.mkdir()
    q.write_bytes(p.read_bytes())
    with pytest.raises(ResultsError, match="meta.json"):
        example_file(q)
    with pytest.raises(ResultsError, match="does not exist"):
        example_file(tmp_path / "none.npz")


@pytest.mark.parametrize("name", [*FIGURES, "something_new"])
def test_snakemake_caption_names_the_figure_kind(name):
    class Wildcards:
        pass

    class Snakemake:
        wildcards = Wildcards()

    Snakemake.wildcards.name = name
    text = jinja2.Template((ROOT / "rules" / "report_caption.rst").read_text()).render(snakemake=Snakemake)
    generic = "A figure of the kdad report." in text
    assert generic == (name == "something_new")
    assert "what was run" in text


def test_cd_cliques():
    ranks = pd.Series({"A": 1.0, "B": 1.5, "C": 3.0, "D": 3.2})
    assert cd_cliques(ranks, 1.0) == [["A", "B"], ["C", "D"]]


# ------------------------------------------------------------------------------------------ README numbers
def test_readme_claims_are_written_and_computed_from_the_results(rendered):
    from kdad.report import readme_claims
    _, results, _, out, paths = rendered
    text = (out / "README_CLAIMS.md").read_text()
    assert out / "README_CLAIMS.md" in paths
    assert text == readme_claims(load_results(results).runs)
    assert "ablation mkd-hints-1 (score_hints=3; train_hints=3)" in text and "n = 4 categories" in text
    assert "MKD against the best other method: mkd" in text and "vs knn" in text
    assert "Friedman p =" in text and "(N = 6)" in text


def test_readme_block_helper(tmp_path):
    from readme_blocks import mismatches, readme_block
    files = {"README_CLAIMS.md": "**Stale: results made by code that has since changed: fingerprint a, current b.**"
                                 "\n\nclaim 1\nclaim 2\n", "README_TABLE.md": "| a |\n\n- Stale: code changed.\n"}
    readme = "intro\n<!-- kdad:claims -->\nclaim 1\nclaim 2\n<!-- /kdad:claims -->\nmore\n"
    assert readme_block(readme, "table") is None and mismatches(readme, files) == {}
    assert set(mismatches(readme.replace("claim 2", "claim 3"), files)) == {"claims"}
    both = readme + "<!-- kdad:table -->\n| b |\n<!-- /kdad:table -->\n"
    assert set(mismatches(both, files)) == {"table"}
    assert mismatches(both.replace("| b |", "| a |"), files) == {}  # the staleness mark is not a number
    with pytest.raises(AssertionError, match="exactly once"):
        readme_block(readme + readme, "claims")


def _committed(name):
    path = ROOT / "report" / name
    return path.read_text() if path.is_file() else None


@pytest.mark.skipif(not any(f"<!-- kdad:{t} -->" in (ROOT / "README.md").read_text() for t in ("claims", "table")),
                    reason="README.md has no <!-- kdad:claims --> / <!-- kdad:table --> markers yet")
def test_readme_numbers_equal_the_generated_files():
    from readme_blocks import BLOCKS, mismatches
    files = {n: t for n in BLOCKS.values() if (t := _committed(n)) is not None}
    assert not (bad := mismatches((ROOT / "README.md").read_text(), files)), bad


COMMITTED_RUNS = [("", "results", "report")] + [
    (f"paper_offline/{p.name}/", f"results/paper_offline/{p.name}", f"report/paper_offline/{p.name}")
    for p in sorted((ROOT / "results" / "paper_offline").glob("*")) if (p / "runs.csv").is_file()]


@pytest.mark.parametrize("prefix,results_dir,report_dir", COMMITTED_RUNS)
def test_committed_readme_files_equal_a_fresh_computation_from_results(prefix, results_dir, report_dir):
    from readme_blocks import normalise
    from kdad.report import readme_claims, readme_table
    if _committed(f"{prefix}README_CLAIMS.md") is None:
        pytest.skip(f"{report_dir}/README_CLAIMS.md not generated yet")
    runs = load_results(ROOT / results_dir).runs
    assert normalise(_committed(f"{prefix}README_CLAIMS.md")) == normalise(readme_claims(runs))
    table = readme_table(runs, report_dir)
    assert table is None or normalise(_committed(f"{prefix}README_TABLE.md")) == normalise(table)
