"""The photographs: loading, the pixels a tile may contain, and the fixed split of every photo
into a reported part and a development part (:func:`reserved_region`)."""

from __future__ import annotations

import functools
import zlib

import numpy as np
from scipy import ndimage

from kdad.data.base import DatasetError

TEXTURE_CATEGORIES = ("brick", "grass", "gravel", "tissue", "hubble", "retina", "coins")  # every category
OBJECT_CATEGORIES = ("coins",)
PARTS = ("report", "dev")     # what reported runs draw from, and what development studies draw from
# category → (scikit-image loader, downscale factor)
_PHOTOS = {"brick": ("brick", 1), "grass": ("grass", 1), "gravel": ("gravel", 1),
           "tissue": ("immunohistochemistry", 1), "hubble": ("hubble_deep_field", 1), "retina": ("retina", 2),
           "coins": ("coins", 1)}

TILE = 128
BLOCK_FACTOR = 0.5            # split-grid blocks are at least this many tiles wide
DEV_MIN_BLOCKS = 3            # the development strip is at least this many blocks deep ...
MIN_DEV_POSITIONS = 20_000    # ... and deeper where needed to hold this many tile positions
FLAT_FIELD = ("brick", "grass", "gravel", "tissue", "retina")  # shading removed (load_photo)
FLAT_FIELD_SIGMA = 64.0       # px: half a tile
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_SIDES = ("top", "bottom", "left", "right")


def check_part(part: str) -> str:
    if part not in PARTS:
        raise DatasetError(f"unknown textures part {part!r}; use one of {', '.join(PARTS)}")
    return part


def _rng(seed: int, category: str, stream: str | int, index: int = 0, part: str = "report") -> np.random.Generator:
    # seeded by the category's and the stream's names and the file's index, so every file has its
    # own stream: a subset of categories or a change of counts draws the same files; the
    # development part's streams are others than the reported part's
    key = [int(seed), zlib.crc32(category.encode()), zlib.crc32(str(stream).encode()), int(index)]
    return np.random.default_rng(key if part == "report" else key + [zlib.crc32(part.encode())])


# ---------------------------------------------------------------------------- photos
@functools.lru_cache(maxsize=None)
def _raw_photo(category: str) -> np.ndarray:
    """The photo of ``category`` as shipped (downscaled where :data:`_PHOTOS` says), uint8 [H, W, C]."""
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


@functools.lru_cache(maxsize=None)
def load_photo(category: str) -> np.ndarray:
    """The base photo of ``category`` as read-only uint8 [H, W, C], C = 1 (gray) or 3 (RGB).

    Textures in :data:`FLAT_FIELD` are flat-field corrected: every pixel is multiplied by the
    photo's mean luma over its luma smoothed with a Gaussian of :data:`FLAT_FIELD_SIGMA` px
    (normalised over the pixels a tile may contain). That removes shading at scales larger than a
    tile — a brightness gradient across the photo — and keeps the texture inside a tile. Without
    it, a photo cut into a reported and a development part leaves too few block layouts to give
    train and test tiles the same brightness (measured: mean-luma effect sizes 0.8–1.7 on brick,
    grass and gravel for seed 0, 0.07–0.12 with it).
    """
    img = _raw_photo(category)
    if category not in FLAT_FIELD:
        return img
    ok = _allowed(category)
    luma = _luma(img)
    low = ndimage.gaussian_filter(np.where(ok, luma, 0), FLAT_FIELD_SIGMA)
    low /= np.maximum(ndimage.gaussian_filter(ok.astype(np.float32), FLAT_FIELD_SIGMA), 1e-6)
    gain = float(luma[ok].mean()) / np.maximum(low, 1.0)
    out = np.clip(np.round(img.astype(np.float32) * gain[..., None]), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


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
    the fovea. Found on the photo as shipped."""
    photo = _raw_photo(category)
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



# ---------------------------------------------------------------------------- parts
def _strip(side: str, n: int, ye: np.ndarray, xe: np.ndarray) -> tuple[list[int], list[int]]:
    """(dev, report) rectangles [y0, y1, x0, x1] for a strip ``n`` blocks deep along ``side``."""
    h, w = int(ye[-1]), int(xe[-1])
    cut = {"top": int(ye[n]), "bottom": int(ye[-1 - n]), "left": int(xe[n]), "right": int(xe[-1 - n])}[side]
    if side == "top":
        return [0, cut, 0, w], [cut, h, 0, w]
    if side == "bottom":
        return [cut, h, 0, w], [0, cut, 0, w]
    if side == "left":
        return [0, h, 0, cut], [0, h, cut, w]
    return [0, h, cut, w], [0, h, 0, cut]


def _rect_population(tab: dict, rect: list[int], tile: int) -> dict:
    """Statistics of the tile positions wholly inside ``rect`` (and the allowed pixels)."""
    y0, y1, x0, x1 = rect
    sl = (slice(y0, max(y0, y1 - tile + 1)), slice(x0, max(x0, x1 - tile + 1)))
    fits = tab["fits"][sl]
    n = int(fits.sum())
    means, stds = tab["tmean"][sl][fits], tab["tstd"][sl][fits]
    return {"positions": n, "mean_luma": float(means.mean()) if n else 0.0,
            "sd_tile_mean": float(means.std()) if n else 0.0, "local_std": float(stds.mean()) if n else 0.0}


@functools.lru_cache(maxsize=None)
def reserved_region(category: str, tile: int = TILE) -> dict:
    """The fixed split of a texture photo into a reported and a development part (same for every
    seed): the development part is a strip of whole blocks of the photo's split grid along one
    side, ``DEV_MIN_BLOCKS`` blocks deep or deeper until it holds ``MIN_DEV_POSITIONS`` tile
    positions (the reported part keeping at least as many); of the sides with the shallowest such
    strip, the one whose tile positions match the rest of the photo best in mean luma, spread of
    tile means and mean local std. Returns the side, the depth in blocks, both rectangles
    [y0, y1, x0, x1] (pixels, end exclusive; they share no pixel) and both parts' position
    statistics."""
    if category in OBJECT_CATEGORIES:
        raise ValueError(f"{category} is split by instances, not by region")
    photo = load_photo(category)
    if min(photo.shape[:2]) < 4 * tile:
        raise DatasetError(f"{category}: a {photo.shape[0]}x{photo.shape[1]} photo cannot hold a development "
                           f"part and a reported part of train and test tiles of {tile}")
    luma = _luma(photo)
    allowed = _allowed(category)
    tab = {"fits": _box_mean(allowed.astype(np.float32), tile) > 1 - 1e-9, "tmean": _box_mean(luma, tile),
           "tstd": _box_mean(_local_std(luma), tile)}
    scale = max(float(luma[allowed].std()), 1.0)
    ye, xe = _grid_edges(photo.shape[0], tile), _grid_edges(photo.shape[1], tile)
    found = []
    for side in _SIDES:
        blocks = len(ye if side in ("top", "bottom") else xe) - 1
        for n in range(DEV_MIN_BLOCKS, blocks // 2 + 1):
            dev, rep = _strip(side, n, ye, xe)
            pd, pr = _rect_population(tab, dev, tile), _rect_population(tab, rep, tile)
            if pd["positions"] >= MIN_DEV_POSITIONS and pr["positions"] >= pd["positions"]:
                score = (4 * abs(pd["mean_luma"] - pr["mean_luma"]) / scale
                         + 2 * abs(pd["sd_tile_mean"] - pr["sd_tile_mean"]) / scale
                         + 3 * abs(pd["local_std"] / max(pr["local_std"], 1e-6) - 1))
                found.append((n, score, side, dev, rep, pd, pr))
                break
    if not found:
        raise DatasetError(f"{category}: no strip of the photo holds a development part of "
                           f"{MIN_DEV_POSITIONS} tile positions")
    n, score, side, dev, rep, pd, pr = min(found, key=lambda f: (f[0], f[1]))
    rnd = lambda p: {k: round(v, 3) if isinstance(v, float) else v for k, v in p.items()}  # noqa: E731
    return {"side": side, "blocks": n, "dev": dev, "report": rep, "mismatch": round(score, 4),
            "population": {"dev": rnd(pd), "report": rnd(pr)}}


def part_rect(category: str, part: str, tile: int = TILE) -> list[int]:
    """[y0, y1, x0, x1] of ``part`` of a texture photo: every tile of that part lies inside it."""
    return reserved_region(category, tile)[check_part(part)]
