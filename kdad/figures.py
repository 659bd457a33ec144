"""Report figures from the tidy result files (seaborn, Agg backend, PNG at 120 dpi).

Each figure is drawn only when its data exists; datasets that were not run get no figure.

``perclass_<dataset>_<protocol>.png``  image AUROC per category, one colour per method (main entries),
                                       mean ± std over seeds with every seed as a dot
``hints_<dataset>.png``                AUROC against the number of hint layers (:data:`HINT_VARIANTS`)
``loss_<dataset>.png``                 loss-term ablation (:data:`LOSS_VARIANTS`) and the λ grid
                                       (variants ``mkd-lam-<value>``)
``critical_difference.png``            average ranks with Nemenyi cliques (Demšar 2006, Fig. 1 style)

The example anomaly-map figure is drawn by the pipeline from arrays, not here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from kdad.stats import category_mean_per_seed  # noqa: E402
from kdad.tables import (  # noqa: E402
    DATASET_LABELS,
    DATASET_ORDER,
    PROTOCOL_ORDER,
    _ordered,
    _variant_order,
    load_results,
    main_rows,
    rank_analysis,
)

__all__ = ["HINT_VARIANTS", "LAMBDA_PREFIX", "LOSS_VARIANTS", "cd_cliques", "render_figures"]

DPI = 120

# Hint ablation: config variant name → number of hint layers the cloner matches in training.
# ``mkd`` is the paper's setting (four hints: the last four blocks of the expert); ``mkd-hints-k``
# keeps the last k of them.  This is the single place the mapping is defined; the config names its
# variants to match.  Variants such as ``mkd-hints-last`` are not in it and appear in the ablation
# table only.
HINT_VARIANTS: dict[str, int] = {"mkd-hints-1": 1, "mkd-hints-2": 2, "mkd-hints-3": 3, "mkd-hints-4": 4}

# Loss-term ablation: variant → label.  ``mkd`` uses both terms (direction + λ · value).
LOSS_VARIANTS: dict[str, str] = {"mkd-loss-direction": "direction only", "mkd-loss-value": "value (MSE) only",
                                 "mkd": "both (MKD)"}
# λ grid: variants named ``mkd-lam-<value>``, value parsed with float() (e.g. mkd-lam-0.01, mkd-lam-1e-3)
LAMBDA_PREFIX = "mkd-lam-"


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _pct(df: pd.DataFrame, value: str = "image_auroc") -> pd.DataFrame:
    out = df.dropna(subset=[value]).copy()
    out["AUROC (%)"] = out[value].astype(float) * 100
    return out


def perclass_figures(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    paths = []
    main = _pct(main_rows(runs))
    for dataset in _ordered(main["dataset"], DATASET_ORDER):
        for protocol in _ordered(main.loc[main["dataset"] == dataset, "protocol"], PROTOCOL_ORDER):
            d = main[(main["dataset"] == dataset) & (main["protocol"] == protocol)]
            if d.empty:
                continue
            cats = _ordered(d["category"].astype(str).unique())
            variants = _variant_order(d["variant"].unique())
            d = d.assign(category=d["category"].astype(str))
            fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(cats) + 2), 4))
            sns.stripplot(data=d, x="category", y="AUROC (%)", hue="variant", order=cats, hue_order=variants,
                          dodge=True, alpha=0.35, size=3, ax=ax, legend=False)
            sns.pointplot(data=d, x="category", y="AUROC (%)", hue="variant", order=cats, hue_order=variants,
                          dodge=0.8 - 0.8 / len(variants) if len(variants) > 1 else False, errorbar="sd",
                          linestyle="none", markers="D", markersize=4, capsize=0.1, err_kws={"linewidth": 1},
                          ax=ax)
            ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}, {protocol}: image AUROC per category "
                         f"(mean ± std over seeds; dots = seeds)", fontsize=9)
            ax.tick_params(axis="x", rotation=45 if len(cats) > 6 else 0)
            ax.legend(title="method", fontsize=8, title_fontsize=8, loc="best")
            ax.grid(axis="y", alpha=0.3)
            paths.append(_save(fig, out_dir / f"perclass_{dataset}_{protocol.replace('-', '_')}.png"))
    return paths


def _dataset_level(df: pd.DataFrame) -> pd.DataFrame:
    """Per protocol, variant and seed: image AUROC (%) averaged over categories."""
    sl = category_mean_per_seed(df, "image_auroc", ["protocol", "variant"])
    sl["AUROC (%)"] = sl["image_auroc"].astype(float) * 100
    return sl


def hint_figures(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    paths = []
    rows = runs[runs["variant"].isin(HINT_VARIANTS)]
    for dataset in _ordered(rows["dataset"], DATASET_ORDER):
        d = rows[rows["dataset"] == dataset]
        if d["variant"].nunique() < 2:
            continue
        sl = _dataset_level(d)
        if sl.empty:
            continue
        sl["hints"] = sl["variant"].map(HINT_VARIANTS)
        protocols = _ordered(sl["protocol"], PROTOCOL_ORDER)
        fig, ax = plt.subplots(figsize=(5, 3.6))
        sns.lineplot(data=sl, x="hints", y="AUROC (%)", hue="protocol", hue_order=protocols, errorbar="sd",
                     marker="o", ax=ax)
        sns.stripplot(data=sl, x="hints", y="AUROC (%)", hue="protocol", hue_order=protocols, native_scale=True,
                      alpha=0.4, size=3, ax=ax, legend=False)
        ax.set_xticks(sorted(sl["hints"].unique()))
        ax.set_xlabel("number of hint layers (last k blocks)")
        ax.set_title(f"{DATASET_LABELS.get(dataset, dataset)}: hint ablation (mean over categories, "
                     "± std over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out_dir / f"hints_{dataset}.png"))
    return paths


def _lambda(variant: str) -> float:
    try:
        return float(variant[len(LAMBDA_PREFIX):])
    except ValueError:
        return np.nan


def loss_figures(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    paths = []
    is_lam = runs["variant"].astype(str).str.startswith(LAMBDA_PREFIX)
    is_loss = runs["variant"].isin([v for v in LOSS_VARIANTS if v != "mkd"])
    for dataset in _ordered(runs.loc[is_lam | is_loss, "dataset"], DATASET_ORDER):
        in_d = runs["dataset"] == dataset
        loss = runs[in_d & runs["variant"].isin(LOSS_VARIANTS)]
        lam = runs[in_d & is_lam]
        panels = (["loss"] if loss["variant"].nunique() >= 2 else []) + (["lam"] if len(lam) else [])
        if not panels:
            continue
        protocols = _ordered(runs.loc[in_d, "protocol"], PROTOCOL_ORDER)
        palette = dict(zip(protocols, sns.color_palette(n_colors=len(protocols))))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            if panel == "loss":
                sl = _dataset_level(loss)
                order = [v for v in LOSS_VARIANTS if v in set(sl["variant"])]
                sl["loss terms"] = sl["variant"].map(LOSS_VARIANTS)
                sns.barplot(data=sl, x="loss terms", y="AUROC (%)", hue="protocol", palette=palette,
                            hue_order=[p for p in protocols if p in set(sl["protocol"])],
                            order=[LOSS_VARIANTS[v] for v in order], errorbar="sd", capsize=0.1, ax=ax)
                lo = sl["AUROC (%)"].min()
                ax.set_ylim(max(0, lo - 10), 100)
                ax.set_title("loss terms", fontsize=9)
            else:
                sl = _dataset_level(lam)
                sl["λ"] = sl["variant"].map(_lambda)
                sl = sl.dropna(subset=["λ"])
                sns.lineplot(data=sl, x="λ", y="AUROC (%)", hue="protocol", palette=palette,
                             hue_order=[p for p in protocols if p in set(sl["protocol"])], errorbar="sd",
                             marker="o", ax=ax)
                if (sl["λ"] > 0).all() and sl["λ"].nunique() > 1:
                    ax.set_xscale("log")
                ref = _dataset_level(runs[in_d & (runs["variant"] == "mkd")])
                for protocol, g in ref.groupby("protocol"):
                    ax.axhline(g["AUROC (%)"].mean(), ls="--", lw=1, color=palette.get(protocol, "grey"),
                               label=f"mkd (config λ), {protocol}")
                ax.legend(fontsize=7, title_fontsize=7, title="protocol")
                ax.set_title("loss weight λ (variants mkd-lam-<λ>)", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(f"{DATASET_LABELS.get(dataset, dataset)}: loss ablation (mean over categories, ± std over "
                     "seeds)", fontsize=10)
        paths.append(_save(fig, out_dir / f"loss_{dataset}.png"))
    return paths


def cd_cliques(mean_ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal groups of methods, consecutive by rank, whose ranks span less than ``cd``.

    Methods inside one group are not significantly different (Nemenyi); groups of one are omitted.
    """
    r = mean_ranks.sort_values()
    names, vals = list(r.index), r.to_numpy()
    cliques, last_end = [], -1
    for i in range(len(vals)):
        j = i
        while j + 1 < len(vals) and vals[j + 1] - vals[i] < cd:
            j += 1
        if j > i and j > last_end:
            cliques.append(names[i:j + 1])
            last_end = j
    return cliques


def cd_figure(runs: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Critical-difference diagram: rank axis (1 = best, left), labels, CD bar, clique bars."""
    res, blocks = rank_analysis(runs)
    if res.k < 2 or res.n_blocks == 0 or np.isnan(res.cd):
        return []
    ranks = res.mean_ranks.sort_values()
    k = res.k
    lo, hi = 1, max(k, int(np.ceil(ranks.max())))
    cliques = cd_cliques(ranks, res.cd)
    n_left = (k + 1) // 2
    height = 1.6 + 0.3 * max(n_left, k - n_left) + 0.15 * len(cliques)
    fig, ax = plt.subplots(figsize=(7, height))
    ax.set_xlim(lo - 0.5, hi + 0.5)
    ax.set_ylim(-(max(n_left, k - n_left) + 1) * 0.3 - 0.2 - 0.15 * len(cliques), 0.9)
    ax.axis("off")
    ax.hlines(0, lo, hi, color="k", lw=1)
    for t in range(lo, hi + 1):
        ax.vlines(t, 0, 0.08, color="k", lw=1)
        ax.text(t, 0.12, str(t), ha="center", va="bottom", fontsize=8)
    # the CD bar, drawn from rank 1
    ax.hlines(0.6, lo, lo + res.cd, color="k", lw=1.5)
    ax.vlines([lo, lo + res.cd], 0.55, 0.65, color="k", lw=1.5)
    ax.text(lo + res.cd / 2, 0.68, f"CD = {res.cd:.2f}", ha="center", va="bottom", fontsize=8)
    # clique bars just below the axis
    for c, members in enumerate(cliques):
        y = -0.12 - 0.12 * c
        ax.hlines(y, ranks[members[0]] - 0.03, ranks[members[-1]] + 0.03, color="k", lw=3)
    base = -0.25 - 0.12 * len(cliques)
    for i, (name, r) in enumerate(ranks.items()):
        left = i < n_left
        row = i if left else k - 1 - i
        y = base - 0.3 * row
        x_text = lo - 0.4 if left else hi + 0.4
        ax.plot([r, r, x_text], [0, y, y], color="k", lw=0.8)
        ax.text(x_text + (-0.05 if left else 0.05), y, f"{name} ({r:.2f})", ha="right" if left else "left",
                va="center", fontsize=8)
    p = "n/a" if np.isnan(res.p_value) else f"{res.p_value:.2g}"
    ax.set_title(f"Average rank of image AUROC over N = {res.n_blocks} blocks {blocks}; "
                 f"Friedman p = {p}; Nemenyi α = 0.05", fontsize=8)
    return [_save(fig, out_dir / "critical_difference.png")]


def render_figures(results_dir: Path | str, out_dir: Path | str) -> list[Path]:
    """Draw every figure whose data exists into ``out_dir``; return the PNG paths."""
    out_dir = Path(out_dir)
    results = load_results(results_dir)
    paths: list[Path] = []
    runs = results.runs
    if runs is None:
        return paths
    runs = runs.assign(category=runs["category"].astype(str))
    sns.set_theme(style="whitegrid", context="paper")
    paths += perclass_figures(runs, out_dir)
    paths += hint_figures(runs, out_dir)
    paths += loss_figures(runs, out_dir)
    paths += cd_figure(runs, out_dir)
    return paths

