"""``maps_<dataset>_<protocol>_<category>.png``: example anomaly maps of every variant that made
them, from the evaluations' ``examples.npz`` files.

Columns are the example test images (normal ones first); rows are the image, its ground truth,
then one row per variant.  Each map row has ONE colour scale shared by its images (and a colour
bar), so a normal image's map can be compared with a defective one's within a method; scales
differ between methods, whose scores are not comparable.

Which run a file belongs to
---------------------------
``examples.npz`` keys are ``<category>/image`` (uint8 [K, C, H, W]), ``<category>/mask`` (uint8
[K, Hm, Wm]), ``<category>/label`` (int [K], 0 good / 1 defective; taken from the masks when
absent) and ``<category>/map`` (float32 [K, H, W]).  Its dataset, protocol, variant and seed come
from a ``meta.json`` beside it (keys ``dataset``, ``protocol``, ``variant``, ``seed``) when there is
one, else from its folder, which must end in ``<dataset>/<protocol>/<variant>/seed<seed>/`` (the
evaluation stage's layout, ``<work>/eval/<dataset>/<protocol>/<variant>/seed<seed>/examples.npz``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdad.figures.style import MAP_CMAP, Figure, new_figure, wrap
from kdad.tables.results import ResultsError, dataset_label, natural_key, slug

__all__ = ["ExampleFile", "example_file", "map_figures"]

MAX_EXAMPLES = 6


@dataclass(frozen=True)
class ExampleFile:
    path: Path
    dataset: str
    protocol: str
    variant: str
    seed: int


def example_file(path: str | Path) -> ExampleFile:
    """Where an ``examples.npz`` comes from: ``meta.json`` beside it, else its folder names."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"examples file {path} does not exist")
    meta = path.parent / "meta.json"
    if meta.is_file():
        try:
            m = json.loads(meta.read_text(encoding="utf-8"))
            return ExampleFile(path, str(m["dataset"]), str(m["protocol"]), str(m["variant"]), int(m["seed"]))
        except (ValueError, KeyError, TypeError) as err:
            raise ResultsError(f"{meta}: cannot read dataset, protocol, variant and seed from it ({err})") from err
    parts = path.resolve().parent.parts
    match = re.fullmatch(r"seed(\d+)", parts[-1]) if parts else None
    if match is None or len(parts) < 4:
        raise ResultsError(f"{path}: cannot tell which run it belongs to; its folder must end in "
                           "<dataset>/<protocol>/<variant>/seed<N>/ or hold a meta.json with the keys dataset, "
                           "protocol, variant and seed")
    return ExampleFile(path, parts[-4], parts[-3], parts[-2], int(match.group(1)))


def _load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{category: {"image", "mask", "label", "map"}}`` with shapes checked."""
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: not a readable npz file ({err})") from err
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in raw.items():
        if "/" not in key:
            raise ResultsError(f"{path}: key {key!r} is not <category>/<image|mask|label|map>")
        cat, what = key.rsplit("/", 1)
        out.setdefault(cat, {})[what] = arr
    for cat, d in out.items():
        missing = [k for k in ("image", "mask", "map") if k not in d]
        if missing:
            raise ResultsError(f"{path}: category {cat!r} lacks {', '.join(missing)}")
        k = len(d["image"])
        if d["image"].ndim != 4 or len(d["mask"]) != k or len(d["map"]) != k or d["map"].ndim != 3:
            raise ResultsError(f"{path}: {cat}: image {d['image'].shape}, mask {d['mask'].shape}, map "
                               f"{d['map'].shape}; expected [K, C, H, W], [K, Hm, Wm], [K, H, W]")
        if "label" not in d:
            d["label"] = d["mask"].reshape(k, -1).any(axis=1).astype(int)
        d["label"] = np.asarray(d["label"]).reshape(-1).astype(int)
    return out


def _show_image(ax, image: np.ndarray) -> None:
    img = image[0] if image.shape[0] == 1 else np.transpose(image[:3], (1, 2, 0))
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)


def map_figures(files: Sequence[ExampleFile], label=None) -> Iterator[Figure]:
    """One figure per (dataset, protocol, category) found in the files; per variant its lowest seed."""
    label = label or (lambda v: v)
    by_run: dict[tuple[str, str], dict[str, ExampleFile]] = {}
    for f in sorted(files, key=lambda f: f.seed):
        by_run.setdefault((f.dataset, f.protocol), {}).setdefault(f.variant, f)
    for (dataset, protocol), variants in sorted(by_run.items()):
        names = sorted(variants, key=lambda v: (v != "mkd", not v.startswith("mkd"), natural_key(v)))
        loaded = {v: _load(variants[v].path) for v in names}
        cats = sorted({c for d in loaded.values() for c in d}, key=natural_key)
        for cat in cats:
            have = [v for v in names if cat in loaded[v]]
            ref = loaded[have[0]][cat]
            shown, skipped = [], []
            for v in have:
                d = loaded[v][cat]
                same = d["image"].shape == ref["image"].shape and np.array_equal(d["image"], ref["image"])
                (shown if same else skipped).append(v)
            order = np.argsort(ref["label"], kind="stable")[:MAX_EXAMPLES]
            order = np.concatenate([order[ref["label"][order] == 0], order[ref["label"][order] == 1]])
            n = len(order)
            rows = 2 + len(shown)
            width = 1.35 * n + 1.9
            # a narrow last column holds each map row's colour bar, so all image columns align
            fig, axes = new_figure(width, 1.35 * rows + 0.8, nrows=rows, ncols=n + 1,
                                   gridspec_kw={"width_ratios": [1.0] * n + [0.07]})
            for j, i in enumerate(order):
                _show_image(axes[0, j], ref["image"][i])
                axes[0, j].set_title("normal" if ref["label"][i] == 0 else "defective", fontsize=7)
                axes[1, j].imshow(ref["mask"][i], cmap="gray", vmin=0, vmax=1)
            for r, v in enumerate(shown, start=2):
                maps = loaded[v][cat]["map"][order].astype(float)
                finite = maps[np.isfinite(maps)]
                vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
                for j in range(n):
                    im = axes[r, j].imshow(maps[j], cmap=MAP_CMAP, vmin=vmin, vmax=vmax)
                cb = fig.colorbar(im, cax=axes[r, n])
                cb.ax.tick_params(labelsize=6)
            for r, text in enumerate(["image", "ground truth", *[label(v) for v in shown]]):
                axes[r, 0].set_ylabel(text, fontsize=7)
            for ax in axes[:, :n].ravel():
                ax.set_xticks([]), ax.set_yticks([])
                ax.grid(False)
            axes[0, n].set_visible(False)
            axes[1, n].set_visible(False)
            seeds = ", ".join(f"{v} seed {variants[v].seed}" for v in shown)
            what = (f"{dataset_label(dataset)}, {protocol}, {cat}: anomaly maps of {len(shown)} variant(s), "
                    f"{int((ref['label'][order] == 0).sum())} normal and {int((ref['label'][order] == 1).sum())} "
                    f"defective test images; one colour scale per row")
            fig.suptitle(wrap(what, width), fontsize=8)
            note = f" Not shown (other example images): {', '.join(skipped)}." if skipped else ""
            yield Figure(f"maps_{slug(dataset)}_{slug(protocol)}_{slug(cat)}", f"{what} ({seeds}).{note}", fig, "maps")
