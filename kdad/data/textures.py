"""``textures``: a synthetic-defect localisation set cut from real texture photographs.

Base photos ship with scikit-image (no download): ``brick``, ``grass``, ``gravel`` (grayscale,
512x512) and ``immunohistochemistry`` (RGB, 512x512, called ``tissue``). Each photo is split by
rows: normal training tiles come from the top ``TRAIN_FRACTION`` of the rows, test tiles (good and
defective) from the rest, and no tile straddles the boundary, so no test pixel was seen in
training. Crops are placed at random inside their region and randomly flipped / rotated by 90°.

Defects imitate MVTec AD's texture categories (:data:`DEFECT_KINDS`): ``scratch``, ``crack``,
``hole``, ``stain``, ``foreign`` (a patch of another category's photo) and ``fold`` (a blurred,
warped strip). Each is ``weight * effect + (1 - weight) * tile`` for a soft weight map; the mask is
``weight >= 0.5``. Contrast is log-uniform in :data:`CONTRAST_RANGE` grey levels and blob areas in
:data:`AREA_RANGE` of the tile, so many defects are subtle on purpose.

:func:`generate_textures` writes an MVTec-format tree (readable by
:func:`kdad.data.mvtec.load_mvtec_folder`) plus ``manifest.json`` recording every crop's origin,
transform and defect parameters. The same seed gives byte-identical files.
"""

from __future__ import annotations

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

TEXTURE_CATEGORIES = ("brick", "grass", "gravel", "tissue")
DEFECT_KINDS = ("scratch", "crack", "hole", "stain", "foreign", "fold")
_PHOTOS = {"brick": "brick", "grass": "grass", "gravel": "gravel", "tissue": "immunohistochemistry"}

# generation defaults (a change of any of them, or of the code's output, must bump GENERATOR_VERSION)
GENERATOR_VERSION = 1
TILE = 128
N_TRAIN = 200
N_TEST_GOOD = 40
N_TEST_DEFECT = 60
TRAIN_FRACTION = 0.6          # top rows → train tiles, the rest → test tiles
CONTRAST_RANGE = (8.0, 80.0)  # grey levels, log-uniform
AREA_RANGE = (0.01, 0.10)     # blob / strip defect area as a fraction of the tile, log-uniform
MAX_MASK_FRACTION = 0.2       # redraw a defect whose mask covers more of the tile than this
MIN_MASK_PIXELS = 12          # ... or fewer pixels than this
_MANIFEST_KEYS = ("generator", "version", "seed", "tile", "n_train", "n_test_good", "n_test_defect",
                  "categories", "kinds")


# ---------------------------------------------------------------------------- photos and tiles
@functools.lru_cache(maxsize=None)
def load_photo(category: str) -> np.ndarray:
    """The base photo of ``category`` as read-only uint8 [H, W, C], C = 1 (gray) or 3 (RGB)."""
    import skimage.data

    if category not in _PHOTOS:
        raise DatasetError(f"unknown texture category {category!r}; known: {', '.join(TEXTURE_CATEGORIES)}")
    img = np.asarray(getattr(skimage.data, _PHOTOS[category])(), dtype=np.uint8)
    img = img[..., None] if img.ndim == 2 else img[..., :3]
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def _photo_as(category: str, channels: int) -> np.ndarray:
    """The photo converted to ``channels`` (luma for RGB → gray, repetition for gray → RGB)."""
    img = load_photo(category)
    if img.shape[2] == channels:
        return img
    if channels == 1:
        luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(img, 3, axis=2)


def split_rows(height: int, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(train rows, test rows) as half-open ranges; each must hold at least one tile."""
    boundary = int(round(height * TRAIN_FRACTION))
    if boundary < tile or height - boundary < tile:
        raise DatasetError(f"tile {tile} does not fit both regions of a {height}-row photo")
    return (0, boundary), (boundary, height)


def extract_tile(photo: np.ndarray, y: int, x: int, tile: int, rot: int, flip: bool) -> np.ndarray:
    """Crop ``photo[y:y+tile, x:x+tile]``, mirror left-right if ``flip``, then rotate by rot·90°."""
    t = photo[y:y + tile, x:x + tile]
    if flip:
        t = t[:, ::-1]
    return np.ascontiguousarray(np.rot90(t, rot, axes=(0, 1)))


def _random_crop(rng: np.random.Generator, photo: np.ndarray, rows: tuple[int, int], tile: int
                 ) -> tuple[np.ndarray, dict]:
    y = int(rng.integers(rows[0], rows[1] - tile + 1))
    x = int(rng.integers(0, photo.shape[1] - tile + 1))
    rot, flip = int(rng.integers(4)), bool(rng.integers(2))
    return extract_tile(photo, y, x, tile, rot, flip), {"y": y, "x": x, "rot": rot, "flip": flip}


# ---------------------------------------------------------------------------- shapes
def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _blob(rng: np.random.Generator, tile: int, area: float, soft: float = 1.0) -> np.ndarray:
    """Irregular star-shaped blob of about ``area`` pixels inside the tile; weight [T, T] in [0, 1].

    Radius r(θ) = R (1 + Σ a_k cos(kθ + φ_k)), k = 2..5; the weight ramps linearly over ``soft``
    pixels across the outline, so ``weight >= 0.5`` is exactly the inside.
    """
    amps = rng.uniform(0.0, 0.12, 4)
    phases = rng.uniform(0, 2 * np.pi, 4)
    radius = np.sqrt(area / (np.pi * (1 + 0.5 * np.sum(amps ** 2))))
    margin = radius * (1 + amps.sum()) + soft + 1
    lo, hi = margin, tile - 1 - margin
    cy, cx = (rng.uniform(lo, hi, 2) if hi > lo else np.full(2, (tile - 1) / 2))
    yy, xx = np.mgrid[0:tile, 0:tile].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    dist, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    r = radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amps, phases)))
    return np.clip(0.5 + (r - dist) / soft, 0, 1).astype(np.float32)


def _walk(rng: np.random.Generator, tile: int, length: float, *, start: np.ndarray | None = None,
          angle: float | None = None, turn: float = 0.0, bend: float = 0.0) -> np.ndarray:
    """A path of half-pixel steps around a heading: ``turn`` = mean-reverting direction noise
    (jagged, crack-like), ``bend`` = random-walk noise on the curvature (smooth arcs).
    Returns float points [N, 2] (y, x)."""
    n = max(2, int(length * 2))
    p = rng.uniform(0.15 * tile, 0.85 * tile, 2) if start is None else np.asarray(start, float)
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
    return p + np.cumsum(steps, axis=0)


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


def _blend(tile: np.ndarray, effect: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = weight[..., None]
    out = tile.astype(np.float32) * (1 - w) + effect * w
    return np.clip(np.round(out), 0, 255).astype(np.uint8), weight >= 0.5


# ---------------------------------------------------------------------------- defect kinds
# Each takes (rng, tile uint8 [T, T, C], donor photo uint8 [H, W, C]) and returns
# (defective uint8 [T, T, C], mask bool [T, T], parameters dict).
def scratch(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    t = tile.shape[0]
    n = int(rng.choice([1, 1, 1, 2, 3]))
    width = int(rng.integers(1, 4))
    contrast = _log_uniform(rng, *CONTRAST_RANGE)
    sign = float(rng.choice([-1.0, 1.0]))
    paths = [_walk(rng, t, rng.uniform(0.25, 0.9) * t, bend=0.0004) for _ in range(n)]
    weight = _stroke(paths, t, width)
    out, mask = _blend(tile, tile.astype(np.float32) + sign * contrast, weight)
    return out, mask, {"lines": n, "width": width, "contrast": round(sign * contrast, 3)}


def crack(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    t = tile.shape[0]
    length = rng.uniform(0.3, 0.8) * t
    angle = rng.uniform(0, 2 * np.pi)
    main = _walk(rng, t, length, angle=angle, turn=0.35)
    paths = [main]
    for _ in range(int(rng.integers(1, 4))):
        root = main[int(rng.integers(len(main) // 5, len(main)))]
        paths.append(_walk(rng, t, rng.uniform(0.2, 0.5) * length, start=root,
                           angle=angle + float(rng.choice([-1, 1])) * rng.uniform(0.4, 1.2), turn=0.35))
    width = float(rng.choice([1.0, 1.5, 2.0]))
    contrast = _log_uniform(rng, *CONTRAST_RANGE)
    weight = _stroke(paths, t, width)
    out, mask = _blend(tile, tile.astype(np.float32) - contrast, weight)
    return out, mask, {"branches": len(paths) - 1, "width": width, "contrast": round(-contrast, 3)}


def hole(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    t = tile.shape[0]
    area = _log_uniform(rng, *AREA_RANGE) * t * t
    weight = _blob(rng, t, area)
    depth = _log_uniform(rng, *CONTRAST_RANGE)
    keep = rng.uniform(0.5, 1.0)  # how much of the texture still shows at the bottom
    inside = weight >= 0.5
    # shadow rim: darkest just inside the outline, fading towards the middle
    rim = np.exp(-ndimage.distance_transform_edt(inside) / rng.uniform(1.5, 4.0))[..., None]
    f = tile.astype(np.float32)
    mean = f[inside].mean(axis=0) if inside.any() else f.mean(axis=(0, 1))
    effect = mean + (f - mean) * keep - depth * (0.6 + 0.4 * rim)
    out, mask = _blend(tile, effect, weight)
    return out, mask, {"area": round(area, 1), "depth": round(depth, 3), "texture_kept": round(keep, 3)}


def stain(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    t, c = tile.shape[0], tile.shape[2]
    area = _log_uniform(rng, *AREA_RANGE) * t * t
    soft = rng.uniform(2.0, 6.0)
    weight = _blob(rng, t, area, soft=soft)
    contrast = _log_uniform(rng, *CONTRAST_RANGE)
    if c == 1:
        shift = np.array([float(rng.choice([-1.0, 1.0]))])
    else:  # a tint: a random colour direction scaled so its largest channel moves by `contrast`
        shift = rng.normal(size=c)
        shift /= np.abs(shift).max()
    effect = tile.astype(np.float32) + contrast * shift.astype(np.float32)
    out, mask = _blend(tile, effect, weight)
    return out, mask, {"area": round(area, 1), "edge": round(soft, 3), "contrast": round(contrast, 3),
                       "shift": [round(float(s), 3) for s in shift]}


def foreign(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    if donor is None:
        raise ValueError("foreign needs a donor photo")
    t = tile.shape[0]
    area = _log_uniform(rng, *AREA_RANGE) * t * t
    weight = _blob(rng, t, area)
    _, test_rows = split_rows(donor.shape[0], t)
    patch, origin = _random_crop(rng, donor, test_rows, t)
    patch = patch.astype(np.float32)
    matched = bool(rng.random() < 0.5)
    if matched:  # same mean and spread as the host: only the texture itself differs
        inside = weight >= 0.5
        host = tile.astype(np.float32)[inside]
        pm, ps = patch[inside].mean(axis=0), patch[inside].std(axis=0) + 1e-3
        patch = (patch - pm) / ps * host.std(axis=0) + host.mean(axis=0)
    out, mask = _blend(tile, patch, weight)
    return out, mask, {"area": round(area, 1), "matched": matched, "donor_origin": origin}


def fold(rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None):
    t = tile.shape[0]
    length = rng.uniform(0.5, 1.0) * t
    area = _log_uniform(rng, *AREA_RANGE) * t * t
    width = float(np.clip(area / length, 3, 24))
    weight = _stroke([_walk(rng, t, length, bend=0.0005)], t, width, soft=2.0)
    f = tile.astype(np.float32)
    amp, sigma = rng.uniform(1.0, 4.0), rng.uniform(1.0, 4.0)
    noise = ndimage.gaussian_filter(rng.normal(size=(2, t, t)), (0, 8, 8))
    noise *= amp / (np.abs(noise).max() + 1e-6)
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float64)
    warped = np.stack([ndimage.map_coordinates(f[..., ch], [yy + noise[0], xx + noise[1]], order=1,
                                               mode="reflect") for ch in range(f.shape[2])], axis=-1)
    shade = float(rng.choice([-1.0, 1.0])) * 0.5 * _log_uniform(rng, *CONTRAST_RANGE)
    effect = ndimage.gaussian_filter(warped, (sigma, sigma, 0)) + shade
    out, mask = _blend(tile, effect, weight)
    return out, mask, {"width": round(width, 2), "blur": round(sigma, 3), "warp": round(amp, 3),
                       "shade": round(shade, 3)}


DEFECTS: dict[str, Callable] = {"scratch": scratch, "crack": crack, "hole": hole, "stain": stain,
                                "foreign": foreign, "fold": fold}


def make_defect(kind: str, rng: np.random.Generator, tile: np.ndarray, donor: np.ndarray | None = None,
                *, tries: int = 50) -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply ``kind``; redraw until the mask holds MIN_MASK_PIXELS..MAX_MASK_FRACTION of the tile."""
    for _ in range(tries):
        out, mask, params = DEFECTS[kind](rng, tile, donor)
        if MIN_MASK_PIXELS <= mask.sum() <= MAX_MASK_FRACTION * mask.size:
            return out, mask, params
    raise RuntimeError(f"{kind}: no defect of acceptable size after {tries} tries")  # a bug, not data


# ---------------------------------------------------------------------------- the tree
def _settings(seed: int, tile: int, n_train: int, n_test_good: int, n_test_defect: int,
              categories: Sequence[str]) -> dict:
    return {"generator": "kdad.data.textures", "version": GENERATOR_VERSION, "seed": int(seed), "tile": int(tile),
            "n_train": int(n_train), "n_test_good": int(n_test_good), "n_test_defect": int(n_test_defect),
            "categories": list(categories), "kinds": list(DEFECT_KINDS)}


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


def _category_seed(seed: int, category: str, stream: int) -> np.random.Generator:
    # seeded by the category's name, so a subset of categories draws the same tiles
    return np.random.default_rng([int(seed), zlib.crc32(category.encode()), stream])


def _generate_category(folder: Path, category: str, categories: Sequence[str], seed: int, tile: int,
                       n_train: int, n_test_good: int, n_test_defect: int) -> dict:
    photo = load_photo(category)
    train_rows, test_rows = split_rows(photo.shape[0], tile)
    record: dict = {"photo": _PHOTOS[category], "height": photo.shape[0], "width": photo.shape[1],
                    "channels": photo.shape[2], "train_rows": list(train_rows), "test_rows": list(test_rows),
                    "files": {}}
    cdir = folder / category

    rng = _category_seed(seed, category, 0)
    for i in range(n_train):
        t, origin = _random_crop(rng, photo, train_rows, tile)
        rel = f"train/good/{_name(i, n_train)}.png"
        _save_png(cdir / rel, t)
        record["files"][rel] = {"split": "train", **origin}

    rng = _category_seed(seed, category, 1)
    for i in range(n_test_good):
        t, origin = _random_crop(rng, photo, test_rows, tile)
        rel = f"test/good/{_name(i, n_test_good)}.png"
        _save_png(cdir / rel, t)
        record["files"][rel] = {"split": "test", **origin}

    rng = _category_seed(seed, category, 2)
    others = [c for c in (categories if len(categories) > 1 else TEXTURE_CATEGORIES) if c != category]
    per_kind = [len(range(k, n_test_defect, len(DEFECT_KINDS))) for k in range(len(DEFECT_KINDS))]
    count = dict.fromkeys(DEFECT_KINDS, 0)
    for i in range(n_test_defect):
        kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
        t, origin = _random_crop(rng, photo, test_rows, tile)
        donor_name = others[int(rng.integers(len(others)))] if kind == "foreign" else None
        donor = _photo_as(donor_name, photo.shape[2]) if donor_name else None
        out, mask, params = make_defect(kind, rng, t, donor)
        stem = _name(count[kind], per_kind[DEFECT_KINDS.index(kind)])
        count[kind] += 1
        _save_png(cdir / f"test/{kind}/{stem}.png", out)
        _save_png(cdir / f"ground_truth/{kind}/{stem}_mask.png", mask.astype(np.uint8) * 255)
        if donor_name:
            params["donor"] = donor_name
        record["files"][f"test/{kind}/{stem}.png"] = {"split": "test", **origin, "kind": kind,
                                                       "mask_pixels": int(mask.sum()), **params}
    return record


def generate_textures(out_dir: Path, *, seed: int, tile: int = TILE, n_train: int = N_TRAIN,
                      n_test_good: int = N_TEST_GOOD, n_test_defect: int = N_TEST_DEFECT,
                      categories: Sequence[str] = TEXTURE_CATEGORIES) -> Path:
    """Write the MVTec-format textures tree under ``out_dir`` (skipped when a matching one is there).

    The tree is built in a sibling temporary folder and renamed into place at the end, so a
    killed run never leaves a tree that looks complete. ``manifest.json`` records the settings,
    each photo's train/test row ranges and every tile's crop origin, transform and defect.
    """
    out_dir = Path(out_dir)
    categories = list(categories)
    for c in categories:
        load_photo(c)  # unknown names fail here
    if min(n_train, n_test_good) < 0 or n_train < 1 or n_test_good + n_test_defect < 1:
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
        manifest = dict(settings, train_fraction=TRAIN_FRACTION, contrast_range=list(CONTRAST_RANGE),
                        area_range=list(AREA_RANGE), photos={})
        for c in categories:
            manifest["photos"][c] = _generate_category(tmp, c, categories, seed, tile, n_train,
                                                       n_test_good, n_test_defect)
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


def textures_dir(root: Path, seed: int, tile: int = TILE) -> Path:
    return Path(root) / f"textures-seed{seed}-tile{tile}"


def prepare_textures(req: PrepareRequest) -> PreparedDataset:
    from kdad.data.mvtec import load_mvtec_folder

    # module values are read here (not as bound defaults) so a config or test can change them
    folder = generate_textures(textures_dir(req.root, req.seed), seed=req.seed, tile=TILE, n_train=N_TRAIN,
                               n_test_good=N_TEST_GOOD, n_test_defect=N_TEST_DEFECT)
    ds = load_mvtec_folder(folder, TEXTURE_CATEGORIES, req.image_size, name="textures", mask_size=TILE,
                           channels=3)
    ds.meta.update(seed=req.seed, tile=TILE, generator_version=GENERATOR_VERSION)
    return ds


register(DatasetSpec(
    name="textures", kind="defect", categories=TEXTURE_CATEGORIES, image_size=128, channels=3, has_masks=True,
    prepare=prepare_textures, seeded=True,
    description="synthetic defects (scratch, crack, hole, stain, foreign, fold) on scikit-image texture "
                "photos; train and test tiles from disjoint photo regions; generated from the seed",
))

__all__ = ["AREA_RANGE", "CONTRAST_RANGE", "DEFECTS", "DEFECT_KINDS", "TEXTURE_CATEGORIES", "extract_tile",
           "generate_textures", "load_photo", "make_defect", "prepare_textures", "split_rows", "textures_dir"]
