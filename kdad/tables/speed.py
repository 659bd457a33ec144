"""``speed``: cost per compared method, and on which machine it was measured.

Per dataset, method and image size: mean training time per run, training / scoring / map
throughput and peak resident memory, over the runs (categories × seeds).  The machine columns of
``runs.csv`` (``device``, ``machine``, ``cores``, ``gpu``, ``torch_threads``) go to the caption
when all rows share one machine, otherwise each row names its machine (M1, M2, … in the notes).
"""

from __future__ import annotations

import pandas as pd

from kdad.tables.results import DATASET_ORDER, dataset_label, main_rows, ordered
from kdad.tables.writer import DASH, Table, fmt_num

__all__ = ["machine_description", "speed_table"]

COLUMNS = {"train_seconds": "train s", "train_images_per_second": "train img/s",
           "score_images_per_second": "score img/s", "map_images_per_second": "map img/s",
           "peak_rss_mb": "peak RSS MB"}
MACHINE = ("device", "machine", "cores", "gpu", "torch_threads")


def _describe(rec: dict) -> str:
    parts = []
    if rec.get("machine"):
        parts.append(str(rec["machine"]))
    if rec.get("cores"):
        parts.append(f"{rec['cores']} cores")
    parts.append(f"GPU {rec['gpu']}" if rec.get("gpu") else "no GPU")
    if rec.get("device"):
        parts.append(f"device {rec['device']}")
    if rec.get("torch_threads"):
        parts.append(f"{rec['torch_threads']} torch thread(s) per job")
    return ", ".join(parts)


def _machine_keys(rows: pd.DataFrame) -> pd.Series:
    cols = [c for c in MACHINE if c in rows]
    if not cols:
        return pd.Series("", index=rows.index)
    clean = rows[cols].astype(object).where(rows[cols].notna(), "")
    for c in ("cores", "torch_threads"):
        if c in clean:
            clean[c] = clean[c].map(lambda x: str(int(float(x))) if str(x) not in ("", "nan") else "")
    return clean.apply(lambda r: _describe(r.to_dict()), axis=1)


def machine_description(rows: pd.DataFrame) -> list[str]:
    """The distinct machines the rows were run on, described in words."""
    return [m for m in ordered(_machine_keys(rows)) if m]


def speed_table(runs: pd.DataFrame) -> Table | None:
    present = [c for c in COLUMNS if c in runs and pd.to_numeric(runs[c], errors="coerce").notna().any()]
    if not present:
        return None
    main = main_rows(runs).copy()
    for c in present:
        main[c] = pd.to_numeric(main[c], errors="coerce")
    main["_machine"] = _machine_keys(main)
    machines = [m for m in dict.fromkeys(main["_machine"]) if m]
    ids = {m: f"M{i + 1}" for i, m in enumerate(machines)}
    several = len(machines) > 1
    keys = ["dataset", "variant"] + (["image_size"] if "image_size" in main else []) + (["_machine"] if several else [])
    data = main.groupby(keys, dropna=False).agg(runs=("seed", "size"), **{c: (c, "mean") for c in present})
    data = data.reset_index()
    order = ordered(data["dataset"], DATASET_ORDER)
    data = data.sort_values(["dataset", "variant"], key=lambda s: s.map(order.index) if s.name == "dataset" else s)
    data = data.reset_index(drop=True)
    frame = data.rename(columns={"variant": "method", "image_size": "size", "_machine": "machine"}).copy()
    for c in present:
        digits = 0 if c == "peak_rss_mb" or frame[c].abs().max() >= 100 else 1
        frame[c] = frame[c].map(lambda x, d=digits: fmt_num(x, d))
    frame["runs"] = frame["runs"].astype(str)
    frame["dataset"] = frame["dataset"].map(dataset_label)
    if "size" in frame:
        frame["size"] = frame["size"].map(lambda s: f"{int(s)}×{int(s)}" if pd.notna(s) else DASH)
    if several:
        frame["machine"] = frame["machine"].map(lambda m: ids.get(m, DASH))
    idx = ["dataset", "method"] + (["size"] if "size" in frame else []) + (["machine"] if several else [])
    frame = frame.set_index(idx).rename(columns=COLUMNS)
    if several:
        data["_machine"] = data["_machine"].map(lambda m: f"{ids.get(m, '')}: {m}")
        where = "several machines (see notes)"
    else:
        where = machines[0] if machines else "a machine the result files do not name"
    data = data.rename(columns={"_machine": "machine"})
    if not several:
        data["machine"] = machines[0] if machines else ""
    notes = ["Means over runs (categories × seeds). train s: wall time of all epochs of one model; img/s: "
             "images per second. Times depend on the machine and on what else ran: compare rows measured on "
             "one machine in one run of the pipeline."]
    notes += [f"{ids[m]}: {m}." for m in machines] if several else []
    return Table("speed", f"Cost per compared method, measured on {where}.", frame, data, None, notes, kind="speed")
