"""``training``: the training budget of every trained compared method and whether it converged.

From ``results/history.csv`` (one loss per epoch and trained model) and ``runs.csv``: per dataset,
protocol, method and training phase the epochs run, training images and seconds per model, the
loss at the first and the last epoch, and its relative change over the last tenth of the epochs
(median over models): a loss still falling by several percent there had not converged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdad.tables.results import DATASET_ORDER, PROTOCOL_ORDER, dataset_label, main_rows, ordered
from kdad.tables.writer import DASH, Table, fmt_num

__all__ = ["STILL_FALLING", "convergence", "training_table"]

RUN = ["dataset", "protocol", "category", "variant", "seed", "phase"]
STILL_FALLING = -1.0  # % change over the last tenth of the epochs below which a loss is "still falling"


def _tail(n_epochs: int) -> int:
    return max(1, int(round(0.1 * n_epochs)))


def convergence(history: pd.DataFrame) -> pd.DataFrame:
    """One row per trained model and phase: epochs, first and last loss, % change over the last tenth."""
    recs = []
    for key, g in main_rows(history).groupby(RUN, sort=False):
        g = g.sort_values("epoch")
        loss = pd.to_numeric(g["loss"], errors="coerce").to_numpy(dtype=float)
        loss = loss[np.isfinite(loss)]
        if loss.size == 0:
            continue
        w = _tail(loss.size)
        before = loss[-1 - w] if loss.size > w else loss[0]
        change = (loss[-1] - before) / abs(before) * 100 if before else np.nan
        recs.append(dict(zip(RUN, key), epochs=int(g["epoch"].nunique()), first_loss=loss[0], last_loss=loss[-1],
                         tail_change_pct=change))
    return pd.DataFrame(recs)


def training_table(history: pd.DataFrame, runs: pd.DataFrame | None) -> Table | None:
    conv = convergence(history)
    if conv.empty:
        return None
    keys = ["dataset", "protocol", "variant", "phase"]
    data = conv.groupby(keys).agg(models=("seed", "size"), epochs=("epochs", "median"),
                                  first_loss=("first_loss", "median"), last_loss=("last_loss", "median"),
                                  tail_change_pct=("tail_change_pct", "median"),
                                  still_falling=("tail_change_pct", lambda s: int((s < STILL_FALLING).sum())))
    data = data.reset_index()
    if runs is not None:
        cost = main_rows(runs).copy()
        extra = {c: c for c in ("train_images", "train_seconds") if c in cost}
        if extra:
            for c in extra:
                cost[c] = pd.to_numeric(cost[c], errors="coerce")
            agg = cost.groupby(["dataset", "protocol", "variant"])[list(extra)].mean().reset_index()
            data = data.merge(agg, on=["dataset", "protocol", "variant"], how="left")
    dorder, porder = ordered(data["dataset"], DATASET_ORDER), ordered(data["protocol"], PROTOCOL_ORDER)
    data = data.sort_values(keys, key=lambda s: s.map(dorder.index) if s.name == "dataset" else (
        s.map(porder.index) if s.name == "protocol" else s)).reset_index(drop=True)
    several_phases = data.groupby(["dataset", "protocol", "variant"])["phase"].nunique().max() > 1
    frame = pd.DataFrame({
        "models": data["models"].astype(str),
        "epochs": data["epochs"].map(lambda x: fmt_num(x, 0)),
        "train images": data["train_images"].map(lambda x: fmt_num(x, 0)) if "train_images" in data else DASH,
        "train s / model": data["train_seconds"].map(lambda x: fmt_num(x, 1)) if "train_seconds" in data else DASH,
        "first loss": data["first_loss"].map(lambda x: f"{x:.3g}"),
        "last loss": data["last_loss"].map(lambda x: f"{x:.3g}"),
        "change over last tenth": data["tail_change_pct"].map(lambda x: DASH if pd.isna(x) else f"{x:+.1f} %"),
        "models still falling": [f"{int(s)}/{int(m)}" for s, m in zip(data["still_falling"], data["models"])],
    })
    idx = ["dataset", "protocol", "variant"] + (["phase"] if several_phases else [])
    keys_frame = data[idx].rename(columns={"variant": "method"})
    keys_frame["dataset"] = keys_frame["dataset"].map(dataset_label)
    frame.index = pd.MultiIndex.from_frame(keys_frame)
    bold = pd.DataFrame(False, index=frame.index, columns=frame.columns)
    bold["change over last tenth"] = (data["tail_change_pct"] < STILL_FALLING).to_numpy()
    notes = ["Medians over the trained models (categories × seeds). change over last tenth: relative change of "
             "the training loss over the last 10 % of the epochs (at least one); bold and counted as still "
             f"falling when below {STILL_FALLING:+.0f} %, i.e. more epochs would probably have lowered it further."]
    return Table("training", "Training budget and convergence of the trained compared methods.", frame, data,
                 bold, notes, kind="training")
