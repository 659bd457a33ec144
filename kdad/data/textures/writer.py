"""Writing a textures tree (:func:`generate_textures`), its manifest, the checks that draw tiles as
the generator does, and the two registered datasets, ``textures`` (reported) and ``textures_dev``
(development)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from kdad.data import DatasetSpec, PrepareRequest, register
from kdad.data.base import DatasetError, PreparedDataset
from kdad.data.textures.coins import DEV_COIN_PAIRS, _coin_split, _coin_tile, _coins, coin_pairs, render_coin
from kdad.data.textures.defects import (DEFECT_KINDS, LEVEL_AREA, LEVEL_CONTRAST, LEVELS, LOCAL_RADIUS,
                                        MIN_LOCAL_STD, defect_plan, make_defect)
from kdad.data.textures.photos import (_PHOTOS, OBJECT_CATEGORIES, TEXTURE_CATEGORIES, TILE, _photo_as, _rng,
                                       check_part, extract_tile, load_photo, reserved_region)
from kdad.data.textures.split import _texture_split, _texture_tile, compare_splits, tile_statistics

# generation defaults (a change of any of them, or of the code's output, must bump GENERATOR_VERSION)
GENERATOR_VERSION = 3
N_TRAIN = 200
N_TEST_GOOD = 60
N_TEST_DEFECT = 108           # 6 kinds x 3 levels x 6
_MANIFEST_KEYS = ("generator", "version", "part", "seed", "tile", "n_train", "n_test_good", "n_test_defect",
                  "categories", "kinds", "levels")


def _settings(seed: int, tile: int, n_train: int, n_test_good: int, n_test_defect: int,
              categories: Sequence[str], part: str) -> dict:
    return {"generator": "kdad.data.textures", "version": GENERATOR_VERSION, "part": part, "seed": int(seed),
            "tile": int(tile), "n_train": int(n_train), "n_test_good": int(n_test_good),
            "n_test_defect": int(n_test_defect), "categories": list(categories), "kinds": list(DEFECT_KINDS),
            "levels": list(LEVELS)}


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


def draw_tile(category: str, seed: int, side: str, index: int, stream: str, tile: int = TILE,
              part: str = "report") -> tuple[np.ndarray, dict, np.ndarray]:
    """One defect-free tile of ``side`` ("train"/"test") of ``part`` ("report"/"dev"): (uint8
    [T, T, C], origin, region where a defect may lie)."""
    rng = _rng(seed, category, stream, index, part)
    if category in OBJECT_CATEGORIES:
        img, origin, alpha = _coin_tile(rng, seed, tile, side, index, part)
        return img, origin, _object_region(alpha)
    img, origin = _texture_tile(rng, category, seed, tile, side, stream, index, part)
    return img, origin, np.ones((tile, tile), bool)


def _object_region(alpha: np.ndarray) -> np.ndarray:
    return ndimage.binary_erosion(alpha >= 0.5, iterations=3)


def defect_region(category: str, info: dict, tile: int = TILE) -> np.ndarray:
    """bool [T, T]: where a defect of the tile of manifest entry ``info`` may lie (the coin, 3 px
    inside its outline; the whole tile for textures). Also the region its local std is taken over."""
    if category in OBJECT_CATEGORIES:
        return _object_region(render_coin(info, tile)[1])
    return np.ones((tile, tile), bool)


def clean_tile(category: str, info: dict, tile: int = TILE) -> np.ndarray:
    """The defect-free tile a manifest entry was cut from, uint8 [T, T, C]."""
    if category in OBJECT_CATEGORIES:
        return render_coin(info, tile)[0]
    return extract_tile(load_photo(category), info["y"], info["x"], tile, info["rot"], info["flip"])


def _donor(rng: np.random.Generator, category: str, seed: int, channels: int, tile: int, part: str
           ) -> tuple[np.ndarray, dict]:
    """A patch of another texture category's *test* region of the same part, in the host's channels."""
    others = [c for c in TEXTURE_CATEGORIES if c != category and c not in OBJECT_CATEGORIES]
    name = others[int(rng.integers(len(others)))]
    _, origin = _texture_tile(rng, name, seed, tile, "test", part=part)
    patch = extract_tile(_photo_as(name, channels), origin["y"], origin["x"], tile, origin["rot"], origin["flip"])
    return patch, {"donor": name, "donor_origin": origin}


def _region_record(category: str, tile: int, part: str) -> dict:
    """The part a category's tiles come from and what is reserved for development."""
    if category in OBJECT_CATEGORIES:
        return {"part": part, "dev_pairs": [list(p) for p in coin_pairs("dev")],
                "report_pairs": [list(p) for p in coin_pairs("report")], "dev_pair_ranks": list(DEV_COIN_PAIRS)}
    return {"part": part, **reserved_region(category, tile)}


def _generate_category(folder: Path, category: str, seed: int, tile: int, n_train: int, n_test_good: int,
                       n_test_defect: int, part: str) -> dict:
    photo = load_photo(category)
    record: dict = {"photo": _PHOTOS[category][0], "downscale": _PHOTOS[category][1], "height": photo.shape[0],
                    "width": photo.shape[1], "channels": photo.shape[2],
                    "type": "object" if category in OBJECT_CATEGORIES else "texture",
                    "region": _region_record(category, tile, part), "files": {}}
    if category in OBJECT_CATEGORIES:
        record["split"] = {"scheme": "instances", **_coin_split(seed, part),
                           "instances": [{"id": c["id"], "cy": round(c["cy"], 2), "cx": round(c["cx"], 2),
                                          "r": round(c["r"], 2)} for c in _coins()]}
    else:
        sp = _texture_split(category, seed, tile, part)
        record["split"] = {"scheme": "blocks", "y_edges": sp["y_edges"].tolist(), "x_edges": sp["x_edges"].tolist(),
                           "train_blocks": sp["assign"].astype(int).tolist(), "population": sp["stats"],
                           "imbalance": round(sp["score"], 4), "rank": sp["rank"], "choices": sp["choices"]}
    cdir = folder / category

    for i in range(n_train):
        img, origin, _ = draw_tile(category, seed, "train", i, "train", tile, part)
        rel = f"train/good/{_name(i, n_train)}.png"
        _save_png(cdir / rel, img)
        record["files"][rel] = {"split": "train", **origin}

    for i in range(n_test_good):
        img, origin, _ = draw_tile(category, seed, "test", i, "test-good", tile, part)
        rel = f"test/good/{_name(i, n_test_good)}.png"
        _save_png(cdir / rel, img)
        record["files"][rel] = {"split": "test", **origin}

    plan = defect_plan(n_test_defect)
    per_kind = {k: sum(1 for kk, _ in plan if kk == k) for k in DEFECT_KINDS}
    count = dict.fromkeys(DEFECT_KINDS, 0)
    for i, (kind, level) in enumerate(plan):
        img, origin, region = draw_tile(category, seed, "test", i, "test-defect", tile, part)
        rng = _rng(seed, category, "defect", i, part)
        donor, donor_info = (_donor(rng, category, seed, img.shape[2], tile, part) if kind == "foreign"
                             else (None, {}))
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
                      categories: Sequence[str] = TEXTURE_CATEGORIES, part: str = "report") -> Path:
    """Write the MVTec-format textures tree under ``out_dir`` (skipped when a matching one is there).

    The tree is built in a sibling temporary folder and renamed into place at the end, so a
    killed run never leaves a tree that looks complete. ``manifest.json`` records the settings,
    each category's part (and what is reserved for development), split and every tile's origin,
    transform and defect. ``part``: "report" (reported runs) or "dev" (development studies only);
    the two share no photo pixel and no coin.
    """
    out_dir = Path(out_dir)
    categories = list(categories)
    check_part(part)
    for c in categories:
        load_photo(c)  # unknown names fail here
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1 or n_test_good + n_test_defect < 1:
        raise DatasetError("textures needs at least one train tile and one test tile per category")
    settings = _settings(seed, tile, n_train, n_test_good, n_test_defect, categories, part)
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
            manifest["photos"][c] = _generate_category(tmp, c, seed, tile, n_train, n_test_good, n_test_defect, part)
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
def split_statistics(category: str, seed: int, n: int = 200, tile: int = TILE, part: str = "report") -> dict:
    """Draw ``n`` train and ``n`` test tiles of ``part`` as the generator does and compare their statistics."""
    tiles = {side: np.stack([draw_tile(category, seed, side, i, f"check-{side}", tile, part)[0] for i in range(n)])
             for side in ("train", "test")}
    a, b = tile_statistics(tiles["train"]), tile_statistics(tiles["test"])
    return {"train": a, "test": b, **compare_splits(a, b)}


# ---------------------------------------------------------------------------- the dataset
def textures_dir(root: Path, seed: int, tile: int = TILE, categories: Sequence[str] = TEXTURE_CATEGORIES,
                 part: str = "report") -> Path:
    """Where a generated tree lives; a subset of the categories gets a folder of its own (each
    category's tiles do not depend on which others are generated with it); the development part
    lives in ``textures-dev-...`` folders."""
    suffix = "" if list(categories) == list(TEXTURE_CATEGORIES) else "-" + "-".join(sorted(categories))
    prefix = "textures" if check_part(part) == "report" else "textures-dev"
    return Path(root) / f"{prefix}-seed{seed}-tile{tile}{suffix}"


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


def prepare_textures(req: PrepareRequest, part: str = "report") -> PreparedDataset:
    from kdad.data import textures as settings  # the package's values, so a config or test can change them
    from kdad.data.mvtec import load_mvtec_folder

    # only the categories the config asks for
    categories = [c for c in TEXTURE_CATEGORIES if c in (req.categories or TEXTURE_CATEGORIES)]
    name = "textures" if check_part(part) == "report" else "textures_dev"
    folder = generate_textures(textures_dir(req.root, req.seed, TILE, categories, part), seed=req.seed, tile=TILE,
                               n_train=settings.N_TRAIN, n_test_good=settings.N_TEST_GOOD,
                               n_test_defect=settings.N_TEST_DEFECT, categories=categories, part=part)
    ds = load_mvtec_folder(folder, categories, req.image_size, name=name, mask_size=TILE, channels=3)
    levels = read_levels(folder, categories)
    ds.test = dataclasses.replace(ds.test, level=levels)
    ds.train = dataclasses.replace(ds.train, level=np.full(len(ds.train), "", dtype=levels.dtype))
    ds.meta.update(seed=req.seed, tile=TILE, generator_version=GENERATOR_VERSION, part=part)
    return ds


def prepare_textures_dev(req: PrepareRequest) -> PreparedDataset:
    return prepare_textures(req, part="dev")


_DESCRIPTION = ("synthetic defects (scratch, crack, hole, stain, foreign, fold) at three levels relative to the "
                "local texture (easy, medium, subtle) on scikit-image photos: six textures (brick, grass, gravel, "
                "tissue, hubble, retina) and one object (coins); 128 px tiles; train and test from matched "
                "disjoint photo blocks (coins: disjoint coins); generated from the seed")
register(DatasetSpec(
    name="textures", kind="defect", categories=TEXTURE_CATEGORIES, image_size=128, channels=3, has_masks=True,
    prepare=prepare_textures, seeded=True,
    description=_DESCRIPTION + "; drawn from the reported part of each photo (shares no pixel or coin with "
                               "textures_dev)",
))
register(DatasetSpec(
    name="textures_dev", kind="defect", categories=TEXTURE_CATEGORIES, image_size=128, channels=3, has_masks=True,
    prepare=prepare_textures_dev, seeded=True,
    description="for development studies only (choosing settings), never for reported results: the textures "
                "set drawn from a fixed development part of every photo (a strip of blocks along one side) and "
                "4 of the 12 coin pairs, sharing no photo pixel and no coin with textures; " + _DESCRIPTION,
))
