"""Block splits of a texture photo's part into train and test, the drawing of tile positions from
them, and the tile statistics the splits are matched and checked with (see the package
docstring)."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from kdad.data.base import DatasetError
from kdad.data.textures.photos import (_allowed, _box_mean, _grid_edges, _local_std, _luma, _rng, extract_tile,
                                       load_photo, part_rect)

SPLIT_CHOICES = 8             # the seed picks one of this many best splits (seed mod SPLIT_CHOICES)


def _axis_groups(edges: np.ndarray, n: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For tile positions 0..n-tile along one axis: group id of each position and, per group, the
    first and last block the tile overlaps."""
    p = np.arange(n - tile + 1)
    b0 = np.searchsorted(edges, p, side="right") - 1
    b1 = np.searchsorted(edges, p + tile - 1, side="right") - 1
    keys, group = np.unique(b0 * len(edges) + b1, return_inverse=True)
    return group, keys // len(edges), keys % len(edges)



@functools.lru_cache(maxsize=None)
def _split_tables(category: str, tile: int, part: str) -> dict:
    """Per-part tables for choosing a split (in the coordinates of the part's rectangle): position
    groups, and per cell of groups the number of admissible tile positions and the sums of
    tile-mean luma, its square and tile local std."""
    y0, y1, x0, x1 = part_rect(category, part, tile)
    photo = load_photo(category)[y0:y1, x0:x1]
    allowed = _allowed(category)[y0:y1, x0:x1]
    h, w = photo.shape[:2]
    if min(h, w) < tile or max(h, w) < 2 * tile:
        raise DatasetError(f"{category}: a {h}x{w} part cannot hold train and test tiles of {tile}")
    luma = _luma(photo)
    fits = _box_mean(allowed.astype(np.float32), tile) > 1 - 1e-9
    tmean = _box_mean(luma, tile)
    tstd = _box_mean(_local_std(luma), tile)
    ye, xe = _grid_edges(h, tile), _grid_edges(w, tile)
    gy, ey0, ey1 = _axis_groups(ye, h, tile)
    gx, ex0, ex1 = _axis_groups(xe, w, tile)
    cell = (gy[:, None] * len(ex0) + gx[None, :]).ravel()
    f = fits.ravel().astype(np.float64)
    size = len(ey0) * len(ex0)
    sums = [np.bincount(cell, weights=f * v, minlength=size).reshape(len(ey0), len(ex0))
            for v in (np.ones_like(f), tmean.ravel(), tmean.ravel() ** 2, tstd.ravel())]
    return {"fits": fits, "origin": (y0, x0), "y_edges": ye, "x_edges": xe, "gy": gy, "gx": gx, "y0": ey0,
            "y1": ey1, "x0": ex0, "x1": ex1, "count": sums[0], "sum": sums[1], "sum2": sums[2], "sum_std": sums[3],
            "pixel_sd": max(float(luma[allowed].std()), 1.0)}


def _population(tab: dict, assign: np.ndarray, side: bool) -> dict[str, np.ndarray]:
    """Tile-population statistics of one side of K block assignments ``assign`` [K, ny, nx]: a
    tile position is admissible when every block it overlaps is on that side (counted with an
    integral image over the blocks)."""
    g = (assign == side).astype(np.int32)
    ii = np.zeros((len(g), g.shape[1] + 1, g.shape[2] + 1), np.int32)
    ii[:, 1:, 1:] = g.cumsum(1).cumsum(2)
    y0, y1, x0, x1 = tab["y0"][:, None], tab["y1"][:, None] + 1, tab["x0"][None, :], tab["x1"][None, :] + 1
    inside = ii[:, y1, x1] - ii[:, y0, x1] - ii[:, y1, x0] + ii[:, y0, x0]
    valid = (inside == (y1 - y0) * (x1 - x0)) & (tab["count"] > 0)  # [K, cells_y, cells_x]
    n = (valid * tab["count"]).sum(axis=(1, 2))
    safe = np.maximum(n, 1)
    mean = (valid * tab["sum"]).sum(axis=(1, 2)) / safe
    sd = np.sqrt(np.maximum((valid * tab["sum2"]).sum(axis=(1, 2)) / safe - mean ** 2, 0))
    return {"positions": n, "mean": mean, "sd": sd, "local_std": (valid * tab["sum_std"]).sum(axis=(1, 2)) / safe,
            "valid": valid}


@functools.lru_cache(maxsize=None)
def _split_candidates(category: str, tile: int, part: str) -> dict:
    """The (up to) SPLIT_CHOICES best block assignments of a part, best first; the same for every
    seed. Candidates are every assignment on grids of at most 16 blocks, else 8192 smooth random
    fields cut at their median (drawn from a fixed stream); of those that give each side at least
    35 % of the admissible positions and keep at least half of the most any candidate keeps,
    ranked by how well the two tile populations match, each that admits train positions and test
    positions no better one admits (so the chosen splits differ on both sides)."""
    tab = _split_tables(category, tile, part)
    ny, nx = len(tab["y_edges"]) - 1, len(tab["x_edges"]) - 1
    if ny * nx <= 16:  # every assignment
        codes = np.arange(2 ** (ny * nx))
        assign = ((codes[:, None] >> np.arange(ny * nx)) & 1).astype(bool).reshape(-1, ny, nx)
    else:  # smooth random fields cut at their median: contiguous regions hold more tile positions
        rng = _rng(0, category, "split-candidates", part=part)
        sigma = rng.choice([1.0, 1.5, 2.0], size=8192)
        field = np.stack([ndimage.gaussian_filter(rng.normal(size=(ny, nx)), s_, mode="wrap") for s_ in sigma])
        assign = field > np.median(field.reshape(len(field), -1), axis=1)[:, None, None]
    tr, te = _population(tab, assign, True), _population(tab, assign, False)
    usable = tr["positions"] + te["positions"]
    ok = np.minimum(tr["positions"], te["positions"]) >= 0.35 * np.maximum(usable, 1)
    ok &= usable >= 0.5 * usable[ok].max(initial=0)  # no splits that leave few positions
    if not ok.any():
        raise DatasetError(f"{category}: no block split gives both sides a fair share of the tile positions")
    # differences in units of the photo's pixel std (what a tile's texture varies by), plus a
    # small preference for splits that keep many tile positions (more distinct tiles)
    scale = tab["pixel_sd"]
    score = (4 * np.abs(tr["mean"] - te["mean"]) / scale + 2 * np.abs(tr["sd"] - te["sd"]) / scale
             + 3 * np.abs(tr["local_std"] / np.maximum(te["local_std"], 1e-6) - 1)
             + 0.25 * (1 - usable / usable[ok].max()))
    best, seen = [], set()
    for k in np.argsort(np.where(ok, score, np.inf), kind="stable")[:int(ok.sum())]:
        keys = (b"train" + tr["valid"][k].tobytes(), b"test" + te["valid"][k].tobytes())
        if not seen & set(keys):  # a train and a test population no better candidate has
            best.append(int(k))
            seen.update(keys)
            if len(best) == SPLIT_CHOICES:
                break
    return {"tab": tab, "assign": assign[best], "score": score[best], "train": {k: v[best] for k, v in tr.items()},
            "test": {k: v[best] for k, v in te.items()}}


@functools.lru_cache(maxsize=64)
def _texture_split(category: str, seed: int, tile: int, part: str = "report") -> dict:
    """The seed's block assignment of a texture photo's part, the (seed mod K)-th of its K best
    (:func:`_split_candidates`), and each side's admissible positions (in the part's coordinates)."""
    cand = _split_candidates(category, tile, part)
    tab = cand["tab"]
    k = int(seed) % len(cand["assign"])
    positions = {}
    width = tab["fits"].shape[1]
    cell_size = max(1, tile // 4)
    for side in ("train", "test"):
        full = cand[side]["valid"][k][tab["gy"]][:, tab["gx"]] & tab["fits"]
        pos = np.flatnonzero(full)
        y, x = np.divmod(pos, width)
        cell = (y // cell_size) * (width // cell_size + 1) + x // cell_size
        positions[side] = pos[np.argsort(cell, kind="stable")]  # cell by cell
    stats = {side: {"positions": int(cand[side]["positions"][k]), "mean_luma": round(float(cand[side]["mean"][k]), 3),
                    "sd_tile_mean": round(float(cand[side]["sd"][k]), 3),
                    "local_std": round(float(cand[side]["local_std"][k]), 3)}
             for side in ("train", "test")}
    oy, ox = tab["origin"]
    return {"assign": cand["assign"][k], "positions": positions, "width": width, "origin": tab["origin"],
            "stats": stats, "y_edges": tab["y_edges"] + oy, "x_edges": tab["x_edges"] + ox,
            "score": float(cand["score"][k]), "rank": k, "choices": len(cand["assign"])}


_GOLDEN = 0.6180339887498949


@functools.lru_cache(maxsize=256)
def _phase(category: str, seed: int, side: str, stream: str, part: str = "report") -> float:
    return float(_rng(seed, category, f"phase-{side}-{stream}", part=part).random())


def _texture_tile(rng: np.random.Generator, category: str, seed: int, tile: int, side: str,
                  stream: str | None = None, index: int = 0, part: str = "report") -> tuple[np.ndarray, dict]:
    """A tile of ``side`` of ``part``: uniform over its positions, or with ``stream`` that stream's
    ``index``-th tile of a low-discrepancy sequence over the side's positions ordered cell by cell
    (tile/4 px cells, row-major): every prefix of a stream covers the side evenly and in
    proportion to its positions. The origin is in photo coordinates."""
    split = _texture_split(category, seed, tile, part)
    pos = split["positions"][side]
    if stream is None:
        p = int(pos[int(rng.integers(len(pos)))])
    else:
        u = (_phase(category, seed, side, stream, part) + index * _GOLDEN) % 1.0
        p = int(pos[min(int(u * len(pos)), len(pos) - 1)])
    y, x = divmod(p, split["width"])
    y, x = y + split["origin"][0], x + split["origin"][1]
    rot, flip = int(rng.integers(4)), bool(rng.integers(2))
    return extract_tile(load_photo(category), y, x, tile, rot, flip), {"y": y, "x": x, "rot": rot, "flip": flip}


# ---------------------------------------------------------------------------- statistics
def tile_statistics(tiles: np.ndarray) -> dict:
    """Luma statistics of tiles uint8 [N, T, T, C]: mean, sd of the tile means, mean local (8x8)
    std, pixel std, and the luma percentiles 1..99."""
    luma = _luma(tiles)
    means = luma.mean(axis=(1, 2))
    local = np.array([_local_std(t).mean() for t in luma])
    return {"n": len(tiles), "mean": float(means.mean()), "sd_tile_mean": float(means.std()),
            "local_std": float(local.mean()), "sd_tile_local_std": float(local.std()), "pixel_std": float(luma.std()),
            "quantiles": np.percentile(luma, np.arange(1, 100))}


def compare_splits(train: dict, test: dict) -> dict:
    """How far apart two :func:`tile_statistics` are: the difference of the mean luma (grey levels,
    in standard errors, and as an effect size: over the pooled sd of the tile means), the same
    for the mean local std (ratio and effect size), and the luma distributions' distance: the mean
    |difference| of their percentiles 1..99 (≈ Wasserstein-1) over the pooled pixel std."""
    def pooled(key):
        return max(float(np.sqrt((train[key] ** 2 + test[key] ** 2) / 2)), 1e-9)

    se = np.sqrt(train["sd_tile_mean"] ** 2 / train["n"] + test["sd_tile_mean"] ** 2 / test["n"])
    diff = test["mean"] - train["mean"]
    return {"mean_diff": float(diff), "mean_diff_se": float(diff / max(se, 1e-9)),
            "mean_effect": float(diff / pooled("sd_tile_mean")),
            "local_std_ratio": float(test["local_std"] / max(train["local_std"], 1e-9)),
            "local_std_effect": float((test["local_std"] - train["local_std"]) / pooled("sd_tile_local_std")),
            "hist_w1": float(np.abs(train["quantiles"] - test["quantiles"]).mean() / pooled("pixel_std"))}

