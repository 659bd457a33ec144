"""``textures``: a synthetic-defect localisation set cut from photographs bundled with scikit-image.

Categories (:data:`TEXTURE_CATEGORIES`), every tile 128 x 128 (:data:`TILE`):

- stationary textures: ``brick``, ``grass``, ``gravel`` (gray) and ``tissue``
  (``immunohistochemistry``, RGB) at native resolution; ``hubble`` (``hubble_deep_field``, RGB,
  a sparse field of stars and galaxies on a dark sky); ``retina`` (RGB fundus photo at half
  resolution, a vessel network; only the fundus disc, without the optic disc and the fovea, which
  occur once per photo, so no good tile shows a structure seen on one side of the split only);
- an object category, ``coins`` (:data:`OBJECT_CATEGORIES`): the 24 coins of ``coins`` are
  segmented (Hough circles, then Otsu inside each circle's window); each tile shows one coin centred
  on a plain dark backdrop, scaled so the coin fills most of the tile, rotated by any angle,
  optionally mirrored, shifted by a few pixels and jittered in brightness.

Train/test split, so that training and test tiles follow the same distribution and no test pixel is
ever in a training tile:

- textures: the photo is cut into a grid of blocks at least ``BLOCK_FACTOR`` tiles (64 px) wide;
  every block goes to train or test, and a tile must lie inside its side's blocks. Candidate
  assignments are smooth random fields over the blocks cut at their median (8192 of them; every
  assignment on grids of at most 16 blocks); of those that give each side at least 35 % of the
  admissible tile positions and keep at least half of the most any candidate keeps, the seed picks
  one of the (up to) 8 whose two tile populations match best in mean luma, spread of tile means
  and mean local (8x8) std (within 25 % of the best match). Each set of tiles (train, test good,
  test defective) takes its positions from a low-discrepancy sequence with a random phase over
  its side's positions ordered by 32 px cells, so every set covers its side evenly and in
  proportion (the good and defective test sets differ less by chance than with independent
  draws); tiles are randomly flipped / rotated by 90 degrees. Both populations' statistics are
  in the manifest; :func:`split_statistics` compares drawn tiles (:func:`compare_splits`).
- ``coins``: disjoint instances: the coins are paired by size, one of each pair goes to train, the
  other to test; of the 2^12 ways the seed picks one of the 8 whose coins match best in mean luma
  and local std.

Defects imitate MVTec AD's texture categories (:data:`DEFECT_KINDS`): ``scratch`` (thin bright or
dark line), ``crack`` (dark branching jagged line; light on a dark host), ``hole`` (a cut: texture
flattened and sunk with a shadowed rim), ``stain`` (soft-edged colour / brightness change),
``foreign`` (a patch of another texture category's *test* region, given the host's mean and spread)
and ``fold`` (a warped, blurred strip with an embossed crease). Each is a soft weight map times a
change; the mask is ``weight >= MASK_THRESHOLD`` (it holds over 90 % of the change's energy, and
nothing changes more than a few pixels outside it).

Difficulty is relative to the local texture and graded in :data:`LEVELS` (``easy``, ``medium``,
``subtle``): each defect draws a target *relative contrast* from :data:`LEVEL_CONTRAST` and a target
area from :data:`LEVEL_AREA` (fraction of the tile); its strength is then solved (bisection on the
rounded result) so that the mean absolute change over its mask, ``mean_mask(mean_channels |defect -
clean|)``, equals the target times the *local std*: the square root of the median, over the mask
dilated by ``LOCAL_RADIUS`` pixels, of the clean tile's 8x8 local variance (mean over channels),
floored at ``MIN_LOCAL_STD`` grey levels (the texture's typical fine-scale noise where the defect
sits; on coins, over the coin only). Test images are split evenly over kinds x levels (kinds cycle fastest, see
:func:`defect_plan`); each defect's level, local std, target and realised relative contrast, area,
strength and shape parameters are in the manifest, and :func:`prepare_textures` fills the test
split's ``level`` from it in the loader's row order (:func:`read_levels`).

:func:`generate_textures` writes an MVTec-format tree (readable by
:func:`kdad.data.mvtec.load_mvtec_folder`) plus ``manifest.json`` recording the split, every
tile's origin and transform, and every defect's parameters. Everything is drawn from the seed
(each file from its own stream, so a subset of categories draws the same files): the same seed
gives byte-identical files (same library versions), another seed other splits, tiles and defects.
``benchmarks/textures_difficulty.py`` measures how hard each level is for label-free detectors.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from kdad.data import DatasetSpec, PrepareRequest, register
from kdad.data.base import DatasetError, PreparedDataset

TEXTURE_CATEGORIES = ("brick", "grass", "gravel", "tissue", "hubble", "retina", "coins")  # every category
OBJECT_CATEGORIES = ("coins",)
DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "foreign", "fold")
LEVELS = ("easy", "medium", "subtle")
# category → (scikit-image loader, downscale factor)
_PHOTOS = {"brick": ("brick", 1), "grass": ("grass", 1), "gravel": ("gravel", 1),
           "tissue": ("immunohistochemistry", 1), "hubble": ("hubble_deep_field", 1), "retina": ("retina", 2),
           "coins": ("coins", 1)}

# generation defaults (a change of any of them, or of the code's output, must bump GENERATOR_VERSION)
GENERATOR_VERSION = 2
TILE = 128
N_TRAIN = 200
N_TEST_GOOD = 60
N_TEST_DEFECT = 108           # 6 kinds x 3 levels x 6
# relative contrast (mean |defect - clean| over the mask / local std) and area (fraction of the tile)
LEVEL_CONTRAST = {"easy": (3.0, 4.5), "medium": (1.7, 2.5), "subtle": (1.0, 1.4)}
LEVEL_AREA = {"easy": (0.03, 0.07), "medium": (0.015, 0.04), "subtle": (0.01, 0.025)}
LOCAL_RADIUS = 8              # "local": the defect's mask dilated by this many pixels
MIN_LOCAL_STD = 5.0           # grey levels; flat texture still gets visible defects
BLOCK_FACTOR = 0.5            # split-grid blocks are at least this many tiles wide
MASK_THRESHOLD = 0.1          # the mask: every pixel the defect changes by >= this fraction of its full strength
MAX_MASK_FRACTION = 0.1       # redraw a defect whose mask covers more of the tile than this
MIN_MASK_PIXELS = 20          # ... or fewer pixels than this
_MANIFEST_KEYS = ("generator", "version", "seed", "tile", "n_train", "n_test_good", "n_test_defect",
                  "categories", "kinds", "levels")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# ---------------------------------------------------------------------------- photos
@functools.lru_cache(maxsize=None)
def load_photo(category: str) -> np.ndarray:
    """The base photo of ``category`` as read-only uint8 [H, W, C], C = 1 (gray) or 3 (RGB)."""
    import skimage.data

    if category not in _PHOTOS:
        raise DatasetError(f"unknown textures category {category!r}; known: {', '.join(TEXTURE_CATEGORIES)}")
    name, down = _PHOTOS[category]
    img = np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)
    img = img[..., None] if img.ndim == 2 else img[..., :3]
    if down > 1:  # area average over down x down blocks
        h, w = (img.shape[0] // down) * down, (img.shape[1] // down) * down
        img = img[:h, :w].reshape(h // down, down, w // down, down, -1).astype(np.float32).mean(axis=(1, 3))
        img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def _luma(img: np.ndarray) -> np.ndarray:
    """[..., C] → float32 [...] (Rec. 601 luma for RGB, the value itself for gray)."""
    f = np.asarray(img, np.float32)
    return f[..., 0] if f.shape[-1] == 1 else f @ _LUMA


def _photo_as(category: str, channels: int) -> np.ndarray:
    """The photo converted to ``channels`` (luma for RGB → gray, repetition for gray → RGB)."""
    img = load_photo(category)
    if img.shape[2] == channels:
        return img
    if channels == 1:
        return np.clip(np.round(_luma(img)), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(img, 3, axis=2)


@functools.lru_cache(maxsize=None)
def _allowed(category: str) -> np.ndarray:
    """bool [H, W]: pixels a tile may contain. Everything, except on ``retina``: the fundus disc
    (eroded, so the black surround and the tab on its rim stay out) without the optic disc and
    the fovea."""
    photo = load_photo(category)
    ok = np.ones(photo.shape[:2], bool)
    if category == "retina":
        luma = _luma(photo)
        disc = ndimage.binary_fill_holes(luma > 25)
        disc = ndimage.binary_erosion(disc, iterations=12)
        lab, n = ndimage.label(disc)
        disc = lab == 1 + int(np.argmax(ndimage.sum(disc, lab, range(1, n + 1))))
        smooth = ndimage.gaussian_filter(luma, 12)
        inner = ndimage.binary_erosion(disc, iterations=40)
        yy, xx = np.mgrid[0:luma.shape[0], 0:luma.shape[1]]
        ok = disc
        # the optic disc is the brightest place of the smoothed photo, the fovea the darkest
        optic = np.unravel_index(np.argmax(np.where(inner, smooth, -np.inf)), luma.shape)
        fovea = np.unravel_index(np.argmin(np.where(inner, smooth, np.inf)), luma.shape)
        for (cy, cx), radius in ((optic, 80), (fovea, 50)):
            ok &= np.hypot(yy - cy, xx - cx) > radius
    ok.setflags(write=False)
    return ok


def extract_tile(photo: np.ndarray, y: int, x: int, tile: int, rot: int, flip: bool) -> np.ndarray:
    """Crop ``photo[y:y+tile, x:x+tile]``, mirror left-right if ``flip``, then rotate by rot·90°."""
    t = photo[y:y + tile, x:x + tile]
    if flip:
        t = t[:, ::-1]
    return np.ascontiguousarray(np.rot90(t, rot, axes=(0, 1)))


# ---------------------------------------------------------------------------- texture split
def _box_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window (valid positions only): [H-k+1, W-k+1]."""
    c = np.pad(np.cumsum(np.cumsum(a.astype(np.float64), 0), 1), ((1, 0), (1, 0)))
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def _local_var(a: np.ndarray, k: int = 8) -> np.ndarray:
    """Variance over the k x k window around every pixel (mirrored borders), per channel of [H, W, C]."""
    size = (k, k) + (1,) * (a.ndim - 2)
    m = ndimage.uniform_filter(a, size, mode="reflect")
    return np.maximum(ndimage.uniform_filter(a * a, size, mode="reflect") - m * m, 0)


def _local_std(luma: np.ndarray, k: int = 8) -> np.ndarray:
    return np.sqrt(_local_var(luma, k))


def _grid_edges(n: int, tile: int) -> np.ndarray:
    k = max(2, int(n // (BLOCK_FACTOR * tile)))
    return np.round(np.linspace(0, n, k + 1)).astype(int)


def _axis_groups(edges: np.ndarray, n: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For tile positions 0..n-tile along one axis: group id of each position and, per group, the
    first and last block the tile overlaps."""
    p = np.arange(n - tile + 1)
    b0 = np.searchsorted(edges, p, side="right") - 1
    b1 = np.searchsorted(edges, p + tile - 1, side="right") - 1
    keys, group = np.unique(b0 * len(edges) + b1, return_inverse=True)
    return group, keys // len(edges), keys % len(edges)


@functools.lru_cache(maxsize=None)
def _split_tables(category: str, tile: int) -> dict:
    """Per-photo tables for choosing a split: position groups, and per cell of groups the number
    of admissible tile positions and the sums of tile-mean luma, its square and tile local std."""
    photo = load_photo(category)
    h, w = photo.shape[:2]
    if min(h, w) < 2 * tile:
        raise DatasetError(f"{category}: a {h}x{w} photo cannot hold train and test tiles of {tile}")
    luma = _luma(photo)
    fits = _box_mean(_allowed(category).astype(np.float32), tile) > 1 - 1e-9
    tmean = _box_mean(luma, tile)
    tstd = _box_mean(_local_std(luma), tile)
    ye, xe = _grid_edges(h, tile), _grid_edges(w, tile)
    gy, y0, y1 = _axis_groups(ye, h, tile)
    gx, x0, x1 = _axis_groups(xe, w, tile)
    cell = (gy[:, None] * len(x0) + gx[None, :]).ravel()
    f = fits.ravel().astype(np.float64)
    size = len(y0) * len(x0)
    sums = [np.bincount(cell, weights=f * v, minlength=size).reshape(len(y0), len(x0))
            for v in (np.ones_like(f), tmean.ravel(), tmean.ravel() ** 2, tstd.ravel())]
    return {"fits": fits, "y_edges": ye, "x_edges": xe, "gy": gy, "gx": gx, "y0": y0, "y1": y1, "x0": x0,
            "x1": x1, "count": sums[0], "sum": sums[1], "sum2": sums[2], "sum_std": sums[3],
            "pixel_sd": max(float(luma[_allowed(category)].std()), 1.0)}


def _best(score: np.ndarray, k: int = 8) -> np.ndarray:
    """Indices of the (at most) k lowest finite scores within 25 % (+0.02) of the lowest."""
    order = np.argsort(score, kind="stable")[:k]
    return order[score[order] <= 1.25 * score[order[0]] + 0.02]


def _population(tab: dict, assign: np.ndarray, side: bool) -> dict[str, np.ndarray]:
    """Tile-population statistics of one side of K block assignments ``assign`` [K, ny, nx]: a
    tile position is admissible when every block it overlaps is on that side (counted with an
    integral image over the blocks)."""
    g = (assign == side).astype(np.int32)
    ii = np.zeros((len(g), g.shape[1] + 1, g.shape[2] + 1), np.int32)
    ii[:, 1:, 1:] = g.cumsum(1).cumsum(2)
    y0, y1, x0, x1 = tab["y0"][:, None], tab["y1"][:, None] + 1, tab["x0"][None, :], tab["x1"][None, :] + 1
    inside = ii[:, y1, x1] - ii[:, y0, x1] - ii[:, y1, x0] + ii[:, y0, x0]
    valid = inside == (y1 - y0) * (x1 - x0)  # [K, cells_y, cells_x]
    n = (valid * tab["count"]).sum(axis=(1, 2))
    safe = np.maximum(n, 1)
    mean = (valid * tab["sum"]).sum(axis=(1, 2)) / safe
    sd = np.sqrt(np.maximum((valid * tab["sum2"]).sum(axis=(1, 2)) / safe - mean ** 2, 0))
    return {"positions": n, "mean": mean, "sd": sd, "local_std": (valid * tab["sum_std"]).sum(axis=(1, 2)) / safe,
            "valid": valid}


@functools.lru_cache(maxsize=64)
def _texture_split(category: str, seed: int, tile: int) -> dict:
    """The seed's block assignment of a texture photo and each side's admissible positions."""
    tab = _split_tables(category, tile)
    ny, nx = len(tab["y_edges"]) - 1, len(tab["x_edges"]) - 1
    rng = _rng(seed, category, "split")
    if ny * nx <= 16:  # every assignment
        codes = np.arange(2 ** (ny * nx))
        assign = ((codes[:, None] >> np.arange(ny * nx)) & 1).astype(bool).reshape(-1, ny, nx)
    else:  # smooth random fields cut at their median: contiguous regions hold more tile positions
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
    best = _best(np.where(ok, score, np.inf))
    k = int(best[int(rng.integers(len(best)))])
    positions = {}
    width = tab["fits"].shape[1]
    cell_size = max(1, tile // 4)
    for side, pop in ((True, tr), (False, te)):
        full = pop["valid"][k][tab["gy"]][:, tab["gx"]] & tab["fits"]
        pos = np.flatnonzero(full)
        y, x = np.divmod(pos, width)
        cell = (y // cell_size) * (width // cell_size + 1) + x // cell_size
        positions["train" if side else "test"] = pos[np.argsort(cell, kind="stable")]  # cell by cell
    stats = {name: {"positions": int(pop["positions"][k]), "mean_luma": round(float(pop["mean"][k]), 3),
                    "sd_tile_mean": round(float(pop["sd"][k]), 3),
                    "local_std": round(float(pop["local_std"][k]), 3)}
             for name, pop in (("train", tr), ("test", te))}
    return {"assign": assign[k], "positions": positions, "width": width, "stats": stats,
            "y_edges": tab["y_edges"], "x_edges": tab["x_edges"], "score": float(score[k])}


_GOLDEN = 0.6180339887498949


@functools.lru_cache(maxsize=256)
def _phase(category: str, seed: int, side: str, stream: str) -> float:
    return float(_rng(seed, category, f"phase-{side}-{stream}").random())


def _texture_tile(rng: np.random.Generator, category: str, seed: int, tile: int, side: str,
                  stream: str | None = None, index: int = 0) -> tuple[np.ndarray, dict]:
    """A tile of ``side``: uniform over its positions, or with ``stream`` that stream's
    ``index``-th tile of a low-discrepancy sequence over the side's positions ordered cell by cell
    (tile/4 px cells, row-major): every prefix of a stream covers the side evenly and in
    proportion to its positions."""
    split = _texture_split(category, seed, tile)
    pos = split["positions"][side]
    if stream is None:
        p = int(pos[int(rng.integers(len(pos)))])
    else:
        u = (_phase(category, seed, side, stream) + index * _GOLDEN) % 1.0
        p = int(pos[min(int(u * len(pos)), len(pos) - 1)])
    y, x = divmod(p, split["width"])
    rot, flip = int(rng.integers(4)), bool(rng.integers(2))
    return extract_tile(load_photo(category), y, x, tile, rot, flip), {"y": y, "x": x, "rot": rot, "flip": flip}


# ---------------------------------------------------------------------------- coins (object)
@functools.lru_cache(maxsize=None)
def _coins() -> list[dict]:
    """Segment the coins of ``coins``: Hough circles for the centres, then Otsu inside each
    circle's window (the photo's lighting varies too much for one threshold). Sorted by position."""
    from skimage.feature import canny
    from skimage.filters import threshold_otsu
    from skimage.transform import hough_circle, hough_circle_peaks

    luma = _luma(load_photo("coins"))
    radii = np.arange(14, 36)
    _, cxs, cys, rs = hough_circle_peaks(hough_circle(canny(luma, sigma=2.5), radii), radii,
                                         min_xdistance=35, min_ydistance=35, total_num_peaks=24)
    smooth = ndimage.gaussian_filter(luma, 1.5)
    union = np.zeros(luma.shape, bool)
    coins = []
    for cy, cx, r in zip(cys, cxs, rs):
        y0, x0 = max(0, cy - r - 8), max(0, cx - r - 8)
        win = smooth[y0:cy + r + 9, x0:cx + r + 9]
        lab, _ = ndimage.label(ndimage.binary_fill_holes(win > threshold_otsu(win)))
        m = ndimage.binary_opening(lab == lab[cy - y0, cx - x0], iterations=2)
        m = ndimage.binary_fill_holes(ndimage.binary_dilation(m))  # keep the dark rim
        full = np.zeros(luma.shape, bool)
        full[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        union |= full
        my, mx = ndimage.center_of_mass(full)
        coins.append({"cy": float(my), "cx": float(mx), "r": float(np.sqrt(full.sum() / np.pi)), "mask": full})
    backdrop = float(np.median(luma[~ndimage.binary_dilation(union, iterations=4)]))
    for c in coins:  # one plain backdrop for all (the photo's lighting varies across it)
        c["backdrop"] = backdrop
    coins.sort(key=lambda c: (round(c["cy"] / 40), c["cx"]))  # rows, then left to right
    for i, c in enumerate(coins):
        c["id"] = i
    return coins


@functools.lru_cache(maxsize=64)
def _coin_split(seed: int) -> dict[str, list[int]]:
    """Pair the coins by size; one of each pair goes to train, the other to test. Of the 2^12 ways,
    the seed picks one of the 8 whose canonical tiles (no rotation or jitter) match best in mean
    luma and local std."""
    coins = _coins()
    order = sorted(range(len(coins)), key=lambda i: coins[i]["r"])
    pairs = np.array(list(zip(order[0::2], order[1::2])))
    canon = [tile_statistics(render_coin(_canonical(i))[0][None]) for i in range(len(coins))]
    mean = np.array([c["mean"] for c in canon])
    std = np.array([c["local_std"] for c in canon])
    swap = ((np.arange(2 ** len(pairs))[:, None] >> np.arange(len(pairs))) & 1).astype(bool)  # [K, pairs]
    train = np.where(swap, pairs[None, :, 1], pairs[None, :, 0])
    test = np.where(swap, pairs[None, :, 0], pairs[None, :, 1])
    scale = float(np.mean([c["pixel_std"] for c in canon]))
    score = (4 * np.abs(mean[train].mean(1) - mean[test].mean(1)) / scale
             + 3 * np.abs(std[train].mean(1) / std[test].mean(1) - 1))
    best = _best(score)
    k = int(best[int(_rng(seed, "coins", "split").integers(len(best)))])
    return {"train": sorted(map(int, train[k])), "test": sorted(map(int, test[k]))}


def _coin_scale(coin: int, tile: int) -> float:
    """Photo → tile scale: the median coin gets a radius of 0.34 tile, the others sqrt-compressed
    around it (sizes differ, but less than on the photo)."""
    median_r = float(np.median([c["r"] for c in _coins()]))
    r = _coins()[coin]["r"]
    return round(0.34 * tile * np.sqrt(r / median_r) / r, 6)


def _canonical(coin: int) -> dict:
    return {"coin": coin, "scale": _coin_scale(coin, TILE), "angle": 0.0, "flip": False, "dy": 0.0, "dx": 0.0,
            "gain": 1.0, "offset": 0.0, "noise_seed": 0}


def render_coin(info: dict, tile: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """The tile of ``info`` (keys of a coins entry in the manifest): uint8 [T, T, 1] and the
    coin's alpha [T, T] in [0, 1]."""
    coin = _coins()[info["coin"]]
    photo = _luma(load_photo("coins"))
    c = (tile - 1) / 2
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float64)
    v = (yy - c - info["dy"]) / info["scale"]
    u = (xx - c - info["dx"]) / info["scale"]
    if info["flip"]:
        u = -u
    a = np.deg2rad(info["angle"])
    py = coin["cy"] + np.cos(a) * v - np.sin(a) * u
    px = coin["cx"] + np.sin(a) * v + np.cos(a) * u
    reach = int(np.ceil(tile / info["scale"])) + 4
    y0, x0 = max(0, int(coin["cy"]) - reach), max(0, int(coin["cx"]) - reach)
    win = photo[y0:int(coin["cy"]) + reach, x0:int(coin["cx"]) + reach]
    mwin = coin["mask"][y0:y0 + win.shape[0], x0:x0 + win.shape[1]].astype(np.float32)
    coords = [py - y0, px - x0]
    fg = ndimage.map_coordinates(win, coords, order=3, mode="nearest")
    alpha = ndimage.map_coordinates(mwin, coords, order=1, mode="constant", cval=0.0)
    alpha = np.clip(ndimage.gaussian_filter(alpha, 0.6), 0, 1)
    noise = ndimage.gaussian_filter(np.random.default_rng(info["noise_seed"]).normal(size=(tile, tile)), 1.0)
    bg = coin["backdrop"] + noise * (3.0 / 0.282)  # filtered white noise: std 0.282 before scaling
    out = (alpha * fg + (1 - alpha) * bg) * info["gain"] + info["offset"]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)[..., None], alpha.astype(np.float32)


def _coin_tile(rng: np.random.Generator, seed: int, tile: int, side: str, index: int
               ) -> tuple[np.ndarray, dict, np.ndarray]:
    ids = _coin_split(seed)[side]
    order = _rng(seed, "coins", f"order-{side}").permutation(len(ids))  # balanced: each coin in turn
    coin = _coins()[ids[int(order[index % len(ids)])]]
    info = {"coin": coin["id"], "scale": _coin_scale(coin["id"], tile),
            "angle": round(float(rng.uniform(0, 360)), 4), "flip": bool(rng.integers(2)),
            "dy": round(float(rng.uniform(-4, 4)), 4), "dx": round(float(rng.uniform(-4, 4)), 4),
            "gain": round(float(rng.uniform(0.9, 1.1)), 4), "offset": round(float(rng.uniform(-6, 6)), 4),
            "noise_seed": int(rng.integers(2 ** 31))}
    img, alpha = render_coin(info, tile)
    return img, info, alpha


def clean_tile(category: str, info: dict, tile: int = TILE) -> np.ndarray:
    """The defect-free tile a manifest entry was cut from, uint8 [T, T, C]."""
    if category in OBJECT_CATEGORIES:
        return render_coin(info, tile)[0]
    return extract_tile(load_photo(category), info["y"], info["x"], tile, info["rot"], info["flip"])


# ---------------------------------------------------------------------------- shapes
def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _pick_point(rng: np.random.Generator, room: np.ndarray, need: float) -> np.ndarray:
    """A random pixel whose distance to the outside (``room``: EDT) is >= need, else the roomiest."""
    where = np.flatnonzero(room.ravel() >= need)
    p = int(where[int(rng.integers(len(where)))]) if len(where) else int(np.argmax(room))
    return np.array(divmod(p, room.shape[1]), float)


def _blob(rng: np.random.Generator, room: np.ndarray, area: float, soft: float = 1.0) -> np.ndarray:
    """Irregular star-shaped blob of about ``area`` pixels; weight [T, T] in [0, 1].

    Radius r(θ) = R (1 + Σ a_k cos(kθ + φ_k)), k = 2..5; the weight ramps linearly over ``soft``
    pixels across the outline, so ``weight >= 0.5`` is exactly the inside.
    """
    t = room.shape[0]
    amps = rng.uniform(0.0, 0.12, 4)
    phases = rng.uniform(0, 2 * np.pi, 4)
    radius = np.sqrt(area / (np.pi * (1 + 0.5 * np.sum(amps ** 2))))
    cy, cx = _pick_point(rng, room, radius * (1 + amps.sum()) + soft / 2 + 1)
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    dist, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    r = radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amps, phases)))
    return np.clip(0.5 + (r - dist) / soft, 0, 1).astype(np.float32)


def _walk(rng: np.random.Generator, start: np.ndarray, length: float, *, angle: float | None = None,
          turn: float = 0.0, bend: float = 0.0) -> np.ndarray:
    """A path of half-pixel steps around a heading: ``turn`` = mean-reverting direction noise
    (jagged, crack-like), ``bend`` = random-walk noise on the curvature (smooth arcs).
    Returns float points [N, 2] (y, x)."""
    n = max(2, int(length * 2))
    heading = rng.uniform(0, 2 * np.pi) if angle is None else angle
    curvature = rng.normal(0, bend * 3)
    wiggle = 0.0
    angles = np.empty(n)
    for i in range(n):
        curvature += rng.normal(0, bend)
        heading += curvature
        wiggle = 0.85 * wiggle + rng.normal(0, turn)
        angles[i] = heading + wiggle
    steps = 0.5 * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return np.asarray(start, float) + np.cumsum(steps, axis=0)


def _centred_walk(rng: np.random.Generator, room: np.ndarray, length: float, **kw) -> np.ndarray:
    """A walk whose middle lies on a random roomy pixel (so it rarely leaves the region)."""
    mid = _pick_point(rng, room, min(length / 2, 0.8 * float(room.max())))
    path = _walk(rng, np.zeros(2), length, **kw)
    return path - path[len(path) // 2] + mid


def _stroke(points: Sequence[np.ndarray], tile: int, width: float, soft: float = 1.0) -> np.ndarray:
    """Weight [T, T] of paths drawn ``width`` px wide (weight >= 0.5 within width/2 of a path)."""
    line = np.zeros((tile, tile), bool)
    for pts in points:
        ij = np.round(pts).astype(int)
        ok = (ij >= 0).all(axis=1) & (ij < tile).all(axis=1)
        line[ij[ok, 0], ij[ok, 1]] = True
    if not line.any():
        return np.zeros((tile, tile), np.float32)
    dist = ndimage.distance_transform_edt(~line)
    return np.clip(0.5 + (width / 2 - dist) / soft, 0, 1).astype(np.float32)


def _emboss(weight: np.ndarray, angle: float) -> np.ndarray:
    """Shading of a raised ridge lit from ``angle``: +1 on the lit flank, -1 on the other, inside weight."""
    g = ndimage.gaussian_filter(weight.astype(np.float64), 1.5)
    d = np.cos(angle) * ndimage.sobel(g, 0) + np.sin(angle) * ndimage.sobel(g, 1)
    d *= weight
    return (d / (np.abs(d).max() + 1e-9)).astype(np.float32)


# ---------------------------------------------------------------------------- defect kinds
# Each takes (rng, clean float32 [T, T, C], area in pixels, room = EDT of where the defect may lie,
# donor uint8 [T, T, C] or None) and returns (weight [T, T] in [0, 1], delta, params) where
# delta(s, sigma, mu, sigma_c) is the change at strength s >= 0 (0 = none, growing with s):
# sigma = local std (scalar), mu / sigma_c = per-channel mean / std of the local texture.
Delta = Callable[[float, float, np.ndarray, np.ndarray], np.ndarray]


def _sign(f: np.ndarray, weight: np.ndarray, default: float) -> float:
    """``default`` (+1 lighter, -1 darker) unless the texture under the defect is too dark or too
    light to change that way (a crack on the night sky shows light)."""
    level = float(np.median(f[weight >= 0.5].mean(axis=-1))) if (weight >= 0.5).any() else 128.0
    return 1.0 if level < 60 else -1.0 if level > 195 else default


def _line_geometry(area: float, width: float, tile: int) -> tuple[int, float]:
    length = area / width
    n = max(1, int(np.ceil(length / (0.9 * tile))))
    return n, length / n


def scratch(rng, f, area, room, donor=None):
    t, c = f.shape[0], f.shape[2]
    width = float(rng.uniform(1.5, 3.5))
    n, length = _line_geometry(area, width, t)
    weight = _stroke([_centred_walk(rng, room, length, bend=0.0004) for _ in range(n)], t, width)
    sign = _sign(f, weight, float(rng.choice([-1.0, 1.0])))
    w = weight[..., None]
    return weight, (lambda s, sigma, mu, sc: sign * s * sigma * w * np.ones(c, np.float32)), \
        {"lines": n, "width": round(width, 3), "sign": sign}


def crack(rng, f, area, room, donor=None):
    t, c = f.shape[0], f.shape[2]
    width = float(rng.uniform(1.5, 3.0))
    total = area / width
    branches = int(rng.integers(1, 4))
    length = total / (1 + 0.35 * branches)
    angle = rng.uniform(0, 2 * np.pi)
    main = _centred_walk(rng, room, min(length, 1.2 * t), angle=angle, turn=0.35)
    paths = [main]
    for _ in range(branches):
        root = main[int(rng.integers(len(main) // 5, len(main)))]
        paths.append(_walk(rng, root, 0.35 * length, turn=0.35,
                           angle=angle + float(rng.choice([-1, 1])) * rng.uniform(0.4, 1.2)))
    weight = _stroke(paths, t, width)
    sign = _sign(f, weight, -1.0)
    w = weight[..., None]
    return weight, (lambda s, sigma, mu, sc: sign * s * sigma * w * np.ones(c, np.float32)), \
        {"branches": branches, "width": round(width, 3), "sign": sign}


def hole(rng, f, area, room, donor=None):
    weight = _blob(rng, room, area)
    keep = float(rng.uniform(0.3, 0.7))  # how much of the texture still shows at the bottom
    inside = weight >= 0.5
    rim = np.exp(-ndimage.distance_transform_edt(inside) / rng.uniform(1.5, 4.0))[..., None]
    mean = f[inside].mean(axis=0) if inside.any() else f.mean(axis=(0, 1))
    flatten = (keep - 1) * (f - mean)
    shade = (0.6 + 0.4 * rim).astype(np.float32)
    sign = _sign(f, weight, -1.0)  # a cut shows what is behind: dark, or light on a dark host
    w = weight[..., None]
    return weight, (lambda s, sigma, mu, sc: s * w * (flatten + sign * sigma * shade)), \
        {"texture_kept": round(keep, 3), "sign": sign}


def stain(rng, f, area, room, donor=None):
    c = f.shape[2]
    soft = float(rng.uniform(2.0, 6.0))
    weight = _blob(rng, room, area, soft=soft)
    if c == 1:
        shift = np.array([float(rng.choice([-1.0, 1.0]))], np.float32)
    else:  # a tint: a random colour direction, mean |component| = 1
        shift = rng.normal(size=c).astype(np.float32)
        shift /= np.abs(shift).mean()
    if _sign(f, weight, 0.0) * shift.sum() < 0:  # lighten dark texture, darken light texture
        shift = -shift
    w = weight[..., None]
    return weight, (lambda s, sigma, mu, sc: s * sigma * w * shift), \
        {"edge": round(soft, 3), "shift": [round(float(v), 3) for v in shift]}


def foreign(rng, f, area, room, donor=None):
    if donor is None:
        raise ValueError("foreign needs a donor tile")
    weight = _blob(rng, room, area)
    inside = weight >= 0.5
    d = donor.astype(np.float32)
    sel = d[inside] if inside.sum() > 1 else d.reshape(-1, d.shape[2])
    z = (d - sel.mean(axis=0)) / np.maximum(sel.std(axis=0), 2.0)
    w = weight[..., None]

    def delta(s, sigma, mu, sc):  # s <= 1: opacity of the patch; s > 1: the patch's contrast grows
        opacity, gain = min(s, 1.0), max(s, 1.0)
        return opacity * w * (mu + gain * sc * z - f)
    return weight, delta, {}


def fold(rng, f, area, room, donor=None):
    t = f.shape[0]
    length = float(rng.uniform(0.5, 0.9)) * t
    width = float(np.clip(area / length, 3 * t / 128, 20 * t / 128))
    weight = _stroke([_centred_walk(rng, room, length, bend=0.0005)], t, width, soft=2.0)
    amp, blur = float(rng.uniform(1.5, 4.0)), float(rng.uniform(1.5, 3.5))
    noise = ndimage.gaussian_filter(rng.normal(size=(2, t, t)), (0, 8, 8))
    noise *= amp / (np.abs(noise).max() + 1e-6)
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float64)
    warped = np.stack([ndimage.map_coordinates(f[..., ch], [yy + noise[0], xx + noise[1]], order=1,
                                               mode="reflect") for ch in range(f.shape[2])], axis=-1)
    smooth = ndimage.gaussian_filter(warped, (blur, blur, 0)).astype(np.float32) - f
    light = float(rng.uniform(0, 2 * np.pi))
    crease = _emboss(weight, light)[..., None]
    w = weight[..., None]

    def delta(s, sigma, mu, sc):  # s <= 1: blend of the warped blur; s > 1: plus the crease's relief
        return min(s, 1.0) * w * smooth + max(s - 1.0, 0.0) * sigma * crease
    return weight, delta, {"width": round(width, 2), "blur": round(blur, 3), "warp": round(amp, 3),
                           "light": round(light, 3)}


DEFECTS: dict[str, Callable] = {"scratch": scratch, "crack": crack, "hole": hole, "stain": stain,
                                "foreign": foreign, "fold": fold}


def local_std(clean: np.ndarray, mask: np.ndarray, region: np.ndarray | None = None
              ) -> tuple[float, np.ndarray, np.ndarray]:
    """The local texture around a defect, over ``mask`` dilated by LOCAL_RADIUS (within
    ``region``): (sigma, per-channel mean, per-channel std). sigma is the texture's typical
    fine-scale variation there: the square root of the median over those pixels of the 8x8 local
    variance (mean over channels), floored at MIN_LOCAL_STD. The median, not the mean, so that a
    few strong edges (brick's mortar, a bright galaxy) do not set the contrast of a defect on the
    plain surface beside them. The per-channel std is the plain std over those pixels."""
    near = ndimage.distance_transform_edt(~mask) <= LOCAL_RADIUS
    if region is not None:
        near &= region
    near = near if near.any() else mask
    f = clean.astype(np.float64)
    var = _local_var(f).mean(axis=2)
    px = f[near]
    return max(MIN_LOCAL_STD, float(np.sqrt(np.median(var[near])))), px.mean(axis=0), px.std(axis=0)


def relative_contrast(defective: np.ndarray, clean: np.ndarray, mask: np.ndarray, sigma: float) -> float:
    """mean over the mask of mean_channels |defective - clean|, in units of ``sigma``."""
    d = np.abs(defective.astype(np.float32) - clean.astype(np.float32)).mean(axis=2)
    return float(d[mask].mean() / sigma) if mask.any() else 0.0


def _solve(delta: Delta, f: np.ndarray, mask: np.ndarray, target: float, sigma: float, mu, sc
           ) -> tuple[float, np.ndarray, float]:
    """Strength s whose rounded, clipped result has relative contrast ``target`` (bisection)."""
    def result(s):
        out = np.clip(np.round(f + delta(s, sigma, mu, sc)), 0, 255).astype(np.uint8)
        return out, relative_contrast(out, f, mask, sigma)

    lo, hi = 0.0, 1.0
    out, rc = result(hi)
    while rc < target and hi < 64:
        lo, hi = hi, hi * 2
        out, rc = result(hi)
    best = (hi, out, rc)
    for _ in range(30):
        if abs(best[2] - target) <= 0.01 * target:
            break
        mid = (lo + hi) / 2
        out, rc = result(mid)
        if abs(rc - target) < abs(best[2] - target):
            best = (mid, out, rc)
        lo, hi = (mid, hi) if rc < target else (lo, mid)
    return best


def make_defect(kind: str, level: str, rng: np.random.Generator, tile: np.ndarray, *,
                region: np.ndarray | None = None, donor: np.ndarray | None = None, tries: int = 50
                ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply ``kind`` at ``level`` to uint8 [T, T, C] ``tile``: (defective uint8, mask bool [T, T], params).

    The defect lies in ``region`` (bool [T, T], default the whole tile); its area is drawn from
    LEVEL_AREA[level], its relative contrast from LEVEL_CONTRAST[level], and its strength solved
    to hit that contrast. Redrawn until the mask and the contrast are acceptable."""
    t = tile.shape[0]
    f = tile.astype(np.float32)
    region = np.ones((t, t), bool) if region is None else region
    room = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    inside = region[..., None].astype(np.float32)
    (alo, ahi), (clo, chi) = LEVEL_AREA[level], LEVEL_CONTRAST[level]
    for _ in range(tries):
        area = _log_uniform(rng, alo, ahi) * t * t
        target = float(rng.uniform(clo, chi))
        weight, delta, params = DEFECTS[kind](rng, f, area, room, donor)
        weight = weight * region  # a defect never leaves its region (the coin)
        mask = weight >= MASK_THRESHOLD
        n = int(mask.sum())
        if not (max(MIN_MASK_PIXELS, 0.4 * alo * t * t) <= n <= min(MAX_MASK_FRACTION, 1.6 * ahi) * t * t):
            continue
        sigma, mu, sc = local_std(tile, mask, region)
        s, out, rc = _solve(lambda s_, *a: delta(s_, *a) * inside, f, mask, target, sigma, mu, sc)
        if abs(rc - target) > 0.03 * target:  # clipping kept it from reaching the target
            continue
        changed = np.abs(out.astype(np.int16) - tile.astype(np.int16)).max(axis=2) > 0
        if (changed & (weight == 0)).any():  # nothing may change where the weight is zero
            raise RuntimeError(f"{kind}: changed pixels outside its weight")  # a bug, not data
        params = {**params, "level": level, "area_fraction": round(n / (t * t), 5),
                  "target_area_fraction": round(area / (t * t), 5), "mask_pixels": n,
                  "local_std": round(sigma, 4), "target_contrast": round(target, 4),
                  "rel_contrast": round(rc, 4), "abs_contrast": round(rc * sigma, 4), "strength": round(s, 5)}
        return out, mask, params
    raise RuntimeError(f"{kind}/{level}: no acceptable defect after {tries} tries")  # a bug, not data


# ---------------------------------------------------------------------------- the tree
def _rng(seed: int, category: str, stream: str | int, index: int = 0) -> np.random.Generator:
    # seeded by the category's and the stream's names and the file's index, so every file has its
    # own stream: a subset of categories or a change of counts draws the same files
    return np.random.default_rng([int(seed), zlib.crc32(category.encode()), zlib.crc32(str(stream).encode()),
                                  int(index)])


def _settings(seed: int, tile: int, n_train: int, n_test_good: int, n_test_defect: int,
              categories: Sequence[str]) -> dict:
    return {"generator": "kdad.data.textures", "version": GENERATOR_VERSION, "seed": int(seed), "tile": int(tile),
            "n_train": int(n_train), "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "categories": list(categories), "kinds": list(DEFECT_KINDS), "levels": list(LEVELS)}


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _matches(manifest: dict | None, settings: dict) -> bool:
    return manifest is not None and all(manifest.get(k) == settings[k] for k in _MANIFEST_KEYS)


def _save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr).save(path, format="PNG")


def _name(i: int, n: int) -> str:
    return f"{i:0{max(3, len(str(max(n - 1, 0))))}d}"


def draw_tile(category: str, seed: int, side: str, index: int, stream: str, tile: int = TILE
              ) -> tuple[np.ndarray, dict, np.ndarray]:
    """One defect-free tile of ``side`` ("train"/"test"): (uint8 [T, T, C], origin, region where a
    defect may lie)."""
    rng = _rng(seed, category, stream, index)
    if category in OBJECT_CATEGORIES:
        img, origin, alpha = _coin_tile(rng, seed, tile, side, index)
        return img, origin, _object_region(alpha)
    img, origin = _texture_tile(rng, category, seed, tile, side, stream, index)
    return img, origin, np.ones((tile, tile), bool)


def _object_region(alpha: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(alpha >= 0.5, iterations=3)


def defect_region(category: str, info: dict, tile: int = TILE) -> np.ndarray:
    """bool [T, T]: where a defect of the tile of manifest entry ``info`` may lie (the coin, 3 px
    inside its outline; the whole tile for textures). Also the region its local std is taken over."""
    if category in OBJECT_CATEGORIES:
        return _object_region(render_coin(info, tile)[1])
    return np.ones((tile, tile), bool)


def _donor(rng: np.random.Generator, category: str, seed: int, channels: int, tile: int) -> tuple[np.ndarray, dict]:
    """A patch of another texture category's *test* region, in the host's channels."""
    others = [c for c in TEXTURE_CATEGORIES if c != category and c not in OBJECT_CATEGORIES]
    name = others[int(rng.integers(len(others)))]
    _, origin = _texture_tile(rng, name, seed, tile, "test")
    patch = extract_tile(_photo_as(name, channels), origin["y"], origin["x"], tile, origin["rot"], origin["flip"])
    return patch, {"donor": name, "donor_origin": origin}


def defect_plan(n: int) -> list[tuple[str, str]]:
    """(kind, level) of the i-th defective test image: kinds cycle fastest, then levels."""
    return [(DEFECT_KINDS[i % len(DEFECT_KINDS)], LEVELS[(i // len(DEFECT_KINDS)) % len(LEVELS)]) for i in range(n)]


def _generate_category(folder: Path, category: str, seed: int, tile: int, n_train: int, n_test_good: int,
                       n_test_defect: int) -> dict:
    photo = load_photo(category)
    record: dict = {"photo": _PHOTOS[category][0], "downscale": _PHOTOS[category][1], "height": photo.shape[0],
                    "width": photo.shape[1], "channels": photo.shape[2],
                    "type": "object" if category in OBJECT_CATEGORIES else "texture", "files": {}}
    if category in OBJECT_CATEGORIES:
        record["split"] = {"scheme": "instances", **_coin_split(seed),
                           "instances": [{"id": c["id"], "cy": round(c["cy"], 2), "cx": round(c["cx"], 2),
                                          "r": round(c["r"], 2)} for c in _coins()]}
    else:
        sp = _texture_split(category, seed, tile)
        record["split"] = {"scheme": "blocks", "y_edges": sp["y_edges"].tolist(), "x_edges": sp["x_edges"].tolist(),
                           "train_blocks": sp["assign"].astype(int).tolist(), "population": sp["stats"],
                           "imbalance": round(sp["score"], 4)}
    cdir = folder / category

    for i in range(n_train):
        img, origin, _ = draw_tile(category, seed, "train", i, "train", tile)
        rel = f"train/good/{_name(i, n_train)}.png"
        _save_png(cdir / rel, img)
        record["files"][rel] = {"split": "train", **origin}

    for i in range(n_test_good):
        img, origin, _ = draw_tile(category, seed, "test", i, "test-good", tile)
        rel = f"test/good/{_name(i, n_test_good)}.png"
        _save_png(cdir / rel, img)
        record["files"][rel] = {"split": "test", **origin}

    plan = defect_plan(n_test_defect)
    per_kind = {k: sum(1 for kk, _ in plan if kk == k) for k in DEFECT_KINDS}
    count = dict.fromkeys(DEFECT_KINDS, 0)
    for i, (kind, level) in enumerate(plan):
        img, origin, region = draw_tile(category, seed, "test", i, "test-defect", tile)
        rng = _rng(seed, category, "defect", i)
        donor, donor_info = _donor(rng, category, seed, img.shape[2], tile) if kind == "foreign" else (None, {})
        out, mask, params = make_defect(kind, level, rng, img, region=region, donor=donor)
        stem = _name(count[kind], per_kind[kind])
        count[kind] += 1
        _save_png(cdir / f"test/{kind}/{stem}.png", out)
        _save_png(cdir / f"ground_truth/{kind}/{stem}_mask.png", mask.astype(np.uint8) * 255)
        record["files"][f"test/{kind}/{stem}.png"] = {"split": "test", **origin, "kind": kind, **params,
                                                       **donor_info}
    return record


def generate_textures(out_dir: Path, *, seed: int, tile: int = TILE, n_train: int = N_TRAIN,
                      n_test_good: int = N_TEST_GOOD, n_test_defect: int = N_TEST_DEFECT,
                      categories: Sequence[str] = TEXTURE_CATEGORIES) -> Path:
    """Write the MVTec-format textures tree under ``out_dir`` (skipped when a matching one is there).

    The tree is built in a sibling temporary folder and renamed into place at the end, so a
    killed run never leaves a tree that looks complete. ``manifest.json`` records the settings,
    each category's split and every tile's origin, transform and defect.
    """
    out_dir = Path(out_dir)
    categories = list(categories)
    for c in categories:
        load_photo(c)  # unknown names fail here
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1 or n_test_good + n_test_defect < 1:
        raise DatasetError("textures needs at least one train tile and one test tile per category")
    settings = _settings(seed, tile, n_train, n_test_good, n_test_defect, categories)
    if out_dir.exists():
        found = _read_manifest(out_dir)
        if _matches(found, settings):
            return out_dir
        if found is None or found.get("generator") != settings["generator"]:
            raise DatasetError(f"{out_dir} exists and is not a generated textures tree; move it away")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = dict(settings, level_contrast={k: list(v) for k, v in LEVEL_CONTRAST.items()},
                        level_area={k: list(v) for k, v in LEVEL_AREA.items()}, local_radius=LOCAL_RADIUS,
                        min_local_std=MIN_LOCAL_STD, photos={})
        for c in categories:
            manifest["photos"][c] = _generate_category(tmp, c, seed, tile, n_train, n_test_good, n_test_defect)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if out_dir.exists():  # an outdated tree of ours, or another process just finished this one
            if _matches(_read_manifest(out_dir), settings):
                shutil.rmtree(tmp, ignore_errors=True)
                return out_dir
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ---------------------------------------------------------------------------- checks
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


def split_statistics(category: str, seed: int, n: int = 200, tile: int = TILE) -> dict:
    """Draw ``n`` train and ``n`` test tiles as the generator does and compare their statistics."""
    tiles = {side: np.stack([draw_tile(category, seed, side, i, f"check-{side}", tile)[0] for i in range(n)])
             for side in ("train", "test")}
    a, b = tile_statistics(tiles["train"]), tile_statistics(tiles["test"])
    return {"train": a, "test": b, **compare_splits(a, b)}


# ---------------------------------------------------------------------------- the dataset
def textures_dir(root: Path, seed: int, tile: int = TILE, categories: Sequence[str] = TEXTURE_CATEGORIES) -> Path:
    """Where a generated tree lives; a subset of the categories gets a folder of its own (each
    category's tiles do not depend on which others are generated with it)."""
    suffix = "" if list(categories) == list(TEXTURE_CATEGORIES) else "-" + "-".join(sorted(categories))
    return Path(root) / f"textures-seed{seed}-tile{tile}{suffix}"


def read_levels(folder: Path, categories: Sequence[str]) -> np.ndarray:
    """The level of every test image of a generated tree, in the loader's row order ("" = good)."""
    from kdad.data.mvtec import _category_files

    files = (_read_manifest(Path(folder)) or {}).get("photos", {})
    levels = []
    for c in categories:
        for path, defect, _ in _category_files(Path(folder), c)[1]:
            info = files.get(c, {}).get("files", {}).get(f"test/{defect}/{path.name}")
            if info is None:
                raise DatasetError(f"{path}: not in {folder}/manifest.json; delete the tree and prepare again")
            levels.append(info.get("level", ""))
    return np.array(levels, dtype=f"<U{max([1, *map(len, LEVELS)])}")


def prepare_textures(req: PrepareRequest) -> PreparedDataset:
    from kdad.data.mvtec import load_mvtec_folder

    # only the categories the config asks for; module values are read here (not as bound defaults)
    # so a config or test can change them
    categories = [c for c in TEXTURE_CATEGORIES if c in (req.categories or TEXTURE_CATEGORIES)]
    folder = generate_textures(textures_dir(req.root, req.seed, TILE, categories), seed=req.seed, tile=TILE,
                               n_train=N_TRAIN, n_test_good=N_TEST_GOOD, n_test_defect=N_TEST_DEFECT,
                               categories=categories)
    ds = load_mvtec_folder(folder, categories, req.image_size, name="textures", mask_size=TILE, channels=3)
    levels = read_levels(folder, categories)
    ds.test = dataclasses.replace(ds.test, level=levels)
    ds.train = dataclasses.replace(ds.train, level=np.full(len(ds.train), "", dtype=levels.dtype))
    ds.meta.update(seed=req.seed, tile=TILE, generator_version=GENERATOR_VERSION)
    return ds


register(DatasetSpec(
    name="textures", kind="defect", categories=TEXTURE_CATEGORIES, image_size=128, channels=3, has_masks=True,
    prepare=prepare_textures, seeded=True,
    description="synthetic defects (scratch, crack, hole, stain, foreign, fold) at three levels relative to the "
                "local texture (easy, medium, subtle) on scikit-image photos: six textures (brick, grass, gravel, "
                "tissue, hubble, retina) and one object (coins); 128 px tiles; train and test from matched "
                "disjoint photo blocks (coins: disjoint coins); generated from the seed",
))

__all__ = ["DEFECTS", "DEFECT_KINDS", "GENERATOR_VERSION", "LEVELS", "LEVEL_AREA", "LEVEL_CONTRAST",
           "OBJECT_CATEGORIES", "TEXTURE_CATEGORIES", "clean_tile", "compare_splits", "defect_plan", "defect_region",
           "draw_tile", "extract_tile", "generate_textures", "load_photo", "local_std", "make_defect",
           "prepare_textures", "read_levels", "relative_contrast", "render_coin", "split_statistics", "textures_dir",
           "tile_statistics"]
