"""The object category ``coins``: segmenting the coins, their split into reported and development
pairs and into train and test coins, and rendering a coin tile (see the package docstring)."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from kdad.data.textures.photos import TILE, _luma, _rng, check_part, load_photo
from kdad.data.textures.split import SPLIT_CHOICES, tile_statistics

DEV_COIN_PAIRS = (1, 4, 7, 10)  # of the 12 size-ordered pairs: spread over the sizes, for development only


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


@functools.lru_cache(maxsize=None)
def coin_pairs(part: str = "report") -> list[tuple[int, int]]:
    """The coin pairs of ``part``: the coins paired by size (smallest two, next two, ...); the
    pairs DEV_COIN_PAIRS (in that order) belong to the development part, the rest to the reported
    part."""
    coins = _coins()
    order = sorted(range(len(coins)), key=lambda i: coins[i]["r"])
    pairs = list(zip(order[0::2], order[1::2]))
    dev = check_part(part) == "dev"
    return [(int(a), int(b)) for i, (a, b) in enumerate(pairs) if (i in DEV_COIN_PAIRS) == dev]


@functools.lru_cache(maxsize=64)
def _coin_split(seed: int, part: str = "report") -> dict[str, list[int]]:
    """One coin of each of the part's pairs goes to train, the other to test. Of the 2^pairs ways,
    ranked by how well their canonical tiles (no rotation or jitter) match in mean luma and local
    std, the seed takes the (seed mod K)-th of the K = SPLIT_CHOICES best."""
    pairs = np.array(coin_pairs(part))
    canon = {int(i): tile_statistics(render_coin(_canonical(int(i)))[0][None]) for i in pairs.ravel()}
    mean = np.zeros(len(_coins()))
    std = np.ones(len(_coins()))
    for i, c in canon.items():
        mean[i], std[i] = c["mean"], c["local_std"]
    swap = ((np.arange(2 ** len(pairs))[:, None] >> np.arange(len(pairs))) & 1).astype(bool)  # [K, pairs]
    train = np.where(swap, pairs[None, :, 1], pairs[None, :, 0])
    test = np.where(swap, pairs[None, :, 0], pairs[None, :, 1])
    scale = float(np.mean([c["pixel_std"] for c in canon.values()]))
    score = (4 * np.abs(mean[train].mean(1) - mean[test].mean(1)) / scale
             + 3 * np.abs(std[train].mean(1) / std[test].mean(1) - 1))
    best = np.argsort(score, kind="stable")[:SPLIT_CHOICES]
    k = int(best[int(seed) % len(best)])
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


def _coin_tile(rng: np.random.Generator, seed: int, tile: int, side: str, index: int, part: str = "report"
               ) -> tuple[np.ndarray, dict, np.ndarray]:
    ids = _coin_split(seed, part)[side]
    order = _rng(seed, "coins", f"order-{side}", part=part).permutation(len(ids))  # balanced: each coin in turn
    coin = _coins()[ids[int(order[index % len(ids)])]]
    info = {"coin": coin["id"], "scale": _coin_scale(coin["id"], tile),
            "angle": round(float(rng.uniform(0, 360)), 4), "flip": bool(rng.integers(2)),
            "dy": round(float(rng.uniform(-4, 4)), 4), "dx": round(float(rng.uniform(-4, 4)), 4),
            "gain": round(float(rng.uniform(0.9, 1.1)), 4), "offset": round(float(rng.uniform(-6, 6)), 4),
            "noise_seed": int(rng.integers(2 ** 31))}
    img, alpha = render_coin(info, tile)
    return img, info, alpha


