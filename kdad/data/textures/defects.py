"""The defect kinds (scratch, crack, hole, stain, foreign, fold), their shapes, and the solving of
each defect's strength for a target contrast relative to the local texture (see the package
docstring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from kdad.data.textures.photos import _local_var

DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "foreign", "fold")
LEVELS = ("easy", "medium", "subtle")
# relative contrast (mean |defect - clean| over the mask / local std) and area (fraction of the tile)
LEVEL_CONTRAST = {"easy": (3.0, 4.5), "medium": (1.7, 2.5), "subtle": (1.0, 1.4)}
LEVEL_AREA = {"easy": (0.03, 0.07), "medium": (0.015, 0.04), "subtle": (0.01, 0.025)}
LOCAL_RADIUS = 8              # "local": the defect's mask dilated by this many pixels
MIN_LOCAL_STD = 5.0           # grey levels; flat texture still gets visible defects
MASK_THRESHOLD = 0.1          # the mask: every pixel the defect changes by >= this fraction of its full strength
MAX_MASK_FRACTION = 0.1       # redraw a defect whose mask covers more of the tile than this
MIN_MASK_PIXELS = 20          # ... or fewer pixels than this


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




def defect_plan(n: int) -> list[tuple[str, str]]:
    """(kind, level) of the i-th defective test image: kinds cycle fastest, then levels."""
    return [(DEFECT_KINDS[i % len(DEFECT_KINDS)], LEVELS[(i // len(DEFECT_KINDS)) % len(LEVELS)]) for i in range(n)]
