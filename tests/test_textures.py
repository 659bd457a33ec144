"""The generated textures set: determinism, disjoint train/test, a development part that shares no
pixel or coin with the reported part, distinct splits per seed, matched statistics, masks where the
defects are, graded levels, loader alignment, prepare()."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kdad.data import DATASETS, PrepareRequest, PreparedDataset
from kdad.data import textures
from kdad.data.base import DatasetError
from kdad.data.mvtec import _category_files, load_mvtec_folder
from kdad.data.textures import (DEFECT_KINDS, LEVEL_CONTRAST, LEVELS, OBJECT_CATEGORIES, PARTS, SPLIT_CHOICES,
                                TEXTURE_CATEGORIES, clean_tile, coin_pairs, defect_region, generate_textures,
                                local_std, prepare_textures, read_levels, relative_contrast, reserved_region,
                                split_statistics, textures_dir)
from kdad.data.textures.coins import _coin_split
from kdad.data.textures.split import _texture_split

# one defective image per kind x level
SMALL = dict(tile=128, n_train=4, n_test_good=2, n_test_defect=len(DEFECT_KINDS) * len(LEVELS))
SUBSET = ("gravel", "tissue", "coins")  # gray texture, colour texture, object


def tree_hash(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    base = tmp_path_factory.mktemp("tex")
    a = generate_textures(base / "a", seed=3, **SMALL)
    return base, a, json.loads((a / "manifest.json").read_text())


def _png(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path))
    return a[..., None] if a.ndim == 2 else a


def _mask(a: Path, cat: str, rel: str) -> np.ndarray:
    return np.asarray(Image.open(a / cat / rel.replace("test/", "ground_truth/").replace(".png", "_mask.png")))


def test_same_seed_same_bytes_other_seed_differs(gen):
    base, a, _ = gen
    b = generate_textures(base / "b", seed=3, categories=SUBSET, **SMALL)
    c = generate_textures(base / "c", seed=4, categories=SUBSET, **SMALL)
    ha, hb, hc = tree_hash(a), tree_hash(b), tree_hash(c)
    ha = {k: v for k, v in ha.items() if k.split("/")[0] in SUBSET}  # a subset draws the same files
    hb.pop("manifest.json"), hc.pop("manifest.json")
    assert ha == hb
    assert ha.keys() == hc.keys()
    differing = [k for k in ha if ha[k] != hc[k]]
    assert len(differing) > 0.9 * len(ha)
    assert not list(base.glob("*.partial*"))
    # the split itself depends on the seed too
    m3 = json.loads((b / "manifest.json").read_text())["photos"]
    m4 = json.loads((c / "manifest.json").read_text())["photos"]
    assert m3["coins"]["split"]["train"] != m4["coins"]["split"]["train"]


def test_tree_layout_every_kind_at_every_level(gen):
    _, a, manifest = gen
    assert manifest["seed"] == 3 and manifest["kinds"] == list(DEFECT_KINDS) and manifest["levels"] == list(LEVELS)
    assert manifest["version"] == textures.GENERATOR_VERSION == 3 and manifest["part"] == "report"
    for cat in TEXTURE_CATEGORIES:
        assert len(list((a / cat / "train/good").glob("*.png"))) == 4
        assert len(list((a / cat / "test/good").glob("*.png"))) == 2
        for kind in DEFECT_KINDS:  # equal shares
            imgs = sorted((a / cat / "test" / kind).glob("*.png"))
            assert [p.name for p in imgs] == ["000.png", "001.png", "002.png"]
            assert all((a / cat / "ground_truth" / kind / f"{p.stem}_mask.png").is_file() for p in imgs)
        assert not (a / cat / "ground_truth/good").exists()
        files = manifest["photos"][cat]["files"]
        combos = sorted((i["kind"], i["level"]) for i in files.values() if "kind" in i)
        assert combos == sorted((k, lv) for k in DEFECT_KINDS for lv in LEVELS)
        for img in (a / cat).rglob("*.png"):
            assert Image.open(img).size == (128, 128)


def _footprint(shape: tuple[int, int], info: dict, tile: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[info["y"]:info["y"] + tile, info["x"]:info["x"] + tile] = True
    return m


def _side_map(rec: dict) -> np.ndarray:
    """int8 [H, W] of a texture photo: 1 train block, 0 test block, -1 outside the tree's part."""
    sp = rec["split"]
    ye, xe = sp["y_edges"], sp["x_edges"]
    out = np.full((rec["height"], rec["width"]), -1, np.int8)
    out[ye[0]:ye[-1], xe[0]:xe[-1]] = np.repeat(np.repeat(np.array(sp["train_blocks"]), np.diff(ye), axis=0),
                                                np.diff(xe), axis=1)
    return out


def check_tree_split(manifest: dict) -> None:
    """Every tile lies inside its side's blocks of its part, train and test share no pixel (coins:
    no coin), and a foreign patch comes from the donor photo's test blocks of the same part."""
    tile, part = manifest["tile"], manifest["part"]
    for cat, rec in manifest["photos"].items():
        assert rec["region"]["part"] == part
        if cat in OBJECT_CATEGORIES:  # disjoint instances, from the part's pairs
            split = rec["split"]
            assert not set(split["train"]) & set(split["test"])
            assert len(split["train"]) == len(split["test"]) == len(coin_pairs(part))
            assert set(split["train"]) | set(split["test"]) == {c for p in coin_pairs(part) for c in p}
            for rel, info in rec["files"].items():
                assert info["coin"] in split[info["split"]], rel
            continue
        y0, y1, x0, x1 = rec["region"][part]
        side_of_pixel = _side_map(rec)
        assert (side_of_pixel[y0:y1, x0:x1] >= 0).all() and (side_of_pixel >= 0).sum() == (y1 - y0) * (x1 - x0)
        cover = {"train": np.zeros(side_of_pixel.shape, bool), "test": np.zeros(side_of_pixel.shape, bool)}
        for rel, info in rec["files"].items():
            fp = _footprint(side_of_pixel.shape, info, tile)
            assert fp.sum() == tile * tile, rel
            cover[info["split"]] |= fp
            # every tile lies inside its side's blocks (so inside its part)
            assert (side_of_pixel[fp] == int(info["split"] == "train")).all(), rel
            if "donor" in info and info["donor"] in manifest["photos"]:  # the donor's test blocks
                dside = _side_map(manifest["photos"][info["donor"]])
                assert (dside[_footprint(dside.shape, info["donor_origin"], tile)] == 0).all(), rel
        assert not (cover["train"] & cover["test"]).any(), cat


def test_train_and_test_never_share_pixels(gen):
    check_tree_split(gen[2])


def test_good_tiles_are_their_recorded_crop(gen):
    _, a, manifest = gen
    for cat in TEXTURE_CATEGORIES:
        for rel, info in manifest["photos"][cat]["files"].items():
            if "kind" not in info:
                assert (_png(a / cat / rel) == clean_tile(cat, info)).all(), rel


def test_masks_are_where_the_defects_are_and_levels_hold(gen):
    _, a, manifest = gen
    by_level = {lv: [] for lv in LEVELS}
    for cat in TEXTURE_CATEGORIES:
        for rel, info in manifest["photos"][cat]["files"].items():
            if "kind" not in info:
                continue
            img = _png(a / cat / rel)
            mask = _mask(a, cat, rel)
            assert set(np.unique(mask)) <= {0, 255}
            m = mask > 0
            assert 0 < m.sum() <= textures.MAX_MASK_FRACTION * m.size and m.sum() == info["mask_pixels"], rel
            clean = clean_tile(cat, info)
            diff = np.abs(img.astype(float) - clean).mean(axis=2)
            # nothing changes away from the mask (soft edges reach a few pixels out) ...
            assert (diff[~ndimage.binary_dilation(m, iterations=4)] == 0).all(), rel
            # ... and the mask holds most of the change
            assert (diff[m] ** 2).sum() >= 0.9 * (diff ** 2).sum(), rel
            region = defect_region(cat, info)
            assert region[m].all(), rel  # on the coin
            # the recorded contrast, recomputed from the files, and inside its level's range
            sigma, _, _ = local_std(clean, m, region)
            rc = relative_contrast(img, clean, m, sigma)
            assert sigma == pytest.approx(info["local_std"], abs=1e-3) and rc == pytest.approx(info["rel_contrast"],
                                                                                             abs=1e-3), rel
            lo, hi = LEVEL_CONTRAST[info["level"]]
            assert lo * 0.97 <= rc <= hi * 1.03, (rel, info["level"], rc)
            by_level[info["level"]].append(info["abs_contrast"])
    means = [np.mean(by_level[lv]) for lv in LEVELS]
    assert means[0] > means[1] > means[2] > 5  # easy > medium > subtle, subtle still several grey levels


# With a development strip reserved, each part has fewer block layouts to choose from. Flat-field
# correction (photos.load_photo) removes the brightness gradients that made brick, grass and
# gravel fail; the fundus's vessel density varies across the disc (retina: local std 1.35-1.45x),
# tissue's staining texture slightly (1.12x), and the development parts are narrow strips. These
# (part, category) pairs fail the checks below with seed 0 (the package docstring says so); strict,
# so a fix that makes them pass shows up.
MISMATCHED = {("report", "tissue"), ("report", "retina"), ("dev", "grass"), ("dev", "gravel"), ("dev", "tissue"),
              ("dev", "retina")}


def _mark(part: str, category: str):
    return pytest.param(part, category, marks=pytest.mark.xfail(
        (part, category) in MISMATCHED, reason="split does not match train and test on this part", strict=True))


@pytest.mark.parametrize("part,category", [_mark(p, c) for p in PARTS for c in TEXTURE_CATEGORIES])
def test_train_and_test_tiles_have_the_same_statistics(part, category):
    """Train and test tiles drawn as the generator draws them: equal mean luma (within half the sd
    of tile means), local std (within 10 %) and luma histograms (percentiles within 0.25 pixel sd)."""
    s = split_statistics(category, seed=0, n=100, part=part)
    assert abs(s["mean_effect"]) <= 0.5, s
    assert 0.9 <= s["local_std_ratio"] <= 1.1, s
    assert s["hist_w1"] <= 0.25, s


@pytest.mark.parametrize("part", PARTS)
def test_population_statistics_match_and_positions_suffice(part):
    for cat in TEXTURE_CATEGORIES:
        if cat in OBJECT_CATEGORIES:
            continue
        pop = _texture_split(cat, 0, 128, part)["stats"]
        tr, te = pop["train"], pop["test"]
        # many distinct tiles on each side (the development strip holds fewer)
        assert min(tr["positions"], te["positions"]) > (9_000 if part == "report" else 3_000), cat
        if (part, cat) not in MISMATCHED:
            assert abs(tr["mean_luma"] - te["mean_luma"]) <= 0.25 * max(tr["sd_tile_mean"], te["sd_tile_mean"]), cat
            assert 0.93 <= tr["local_std"] / te["local_std"] <= 1.07, cat


def test_reserved_region_is_a_block_strip_with_room_on_both_parts():
    for cat in TEXTURE_CATEGORIES:
        if cat in OBJECT_CATEGORIES:
            continue
        r = reserved_region(cat)
        h, w = textures.load_photo(cat).shape[:2]
        dev, rep = np.zeros((h, w), bool), np.zeros((h, w), bool)
        dev[r["dev"][0]:r["dev"][1], r["dev"][2]:r["dev"][3]] = True
        rep[r["report"][0]:r["report"][1], r["report"][2]:r["report"][3]] = True
        assert not (dev & rep).any() and (dev | rep).all(), cat  # the two parts tile the photo
        assert r["blocks"] >= textures.DEV_MIN_BLOCKS
        assert r["population"]["dev"]["positions"] >= textures.MIN_DEV_POSITIONS, cat
        assert r["population"]["report"]["positions"] >= r["population"]["dev"]["positions"], cat
    dev_coins = {c for p in coin_pairs("dev") for c in p}
    report_coins = {c for p in coin_pairs("report") for c in p}
    assert len(coin_pairs("dev")) == 4 and len(coin_pairs("report")) == 8 and not dev_coins & report_coins


@pytest.mark.parametrize("part", PARTS)
def test_distinct_seeds_give_distinct_splits(part):
    """Seeds 0..7 take the 8 best distinct splits of every category and part."""
    for cat in TEXTURE_CATEGORIES:
        if cat in OBJECT_CATEGORIES:
            splits = [tuple(_coin_split(s, part)["train"]) for s in range(SPLIT_CHOICES)]
        else:
            assert _texture_split(cat, 0, 128, part)["choices"] == SPLIT_CHOICES, cat
            splits = [_texture_split(cat, s, 128, part)["positions"]["train"].tobytes() for s in range(SPLIT_CHOICES)]
        assert len(set(splits)) == SPLIT_CHOICES, cat
        assert splits[0] == (tuple(_coin_split(SPLIT_CHOICES, part)["train"]) if cat in OBJECT_CATEGORIES else
                             _texture_split(cat, SPLIT_CHOICES, 128, part)["positions"]["train"].tobytes())


def test_reported_and_development_draws_share_no_pixel_or_coin(tmp_path):
    small = dict(tile=128, n_train=4, n_test_good=2, n_test_defect=len(DEFECT_KINDS))
    cover: dict = {part: {} for part in PARTS}
    for part in PARTS:
        for seed in range(4):
            folder = generate_textures(textures_dir(tmp_path, seed, part=part), seed=seed, part=part, **small)
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["part"] == part and manifest["seed"] == seed
            check_tree_split(manifest)
            for cat, rec in manifest["photos"].items():
                if cat in OBJECT_CATEGORIES:
                    cover[part].setdefault(cat, set()).update(info["coin"] for info in rec["files"].values())
                    continue
                m = cover[part].setdefault(cat, np.zeros((rec["height"], rec["width"]), bool))
                for info in rec["files"].values():
                    m |= _footprint(m.shape, info, 128)
                    if "donor" in info:
                        d = cover[part].setdefault(info["donor"], np.zeros(textures.load_photo(info["donor"]).shape[:2],
                                                                           bool))
                        d |= _footprint(d.shape, info["donor_origin"], 128)
    for cat in TEXTURE_CATEGORIES:
        a, b = cover["report"][cat], cover["dev"][cat]
        if cat in OBJECT_CATEGORIES:
            assert a and b and not a & b, cat
        else:
            assert a.any() and b.any() and not (a & b).any(), cat
    assert textures_dir(tmp_path, 0, part="dev") != textures_dir(tmp_path, 0)


def test_loader_reads_the_tree_with_levels_aligned(gen):
    _, a, manifest = gen
    ds = load_mvtec_folder(a, TEXTURE_CATEGORIES, 128, name="textures", mask_size=128, channels=3)
    n_cat = len(TEXTURE_CATEGORIES)
    assert ds.train.images.shape == (4 * n_cat, 3, 128, 128)  # gray categories repeated next to RGB ones
    assert ds.test.masks.shape == (20 * n_cat, 128, 128)
    assert not ds.test.masks[~ds.test.anomalous].any()
    assert all(m.any() for m in ds.test.masks[ds.test.anomalous])
    levels = read_levels(a, TEXTURE_CATEGORIES)
    assert levels.shape == (len(ds.test),)
    assert ((levels == "") == ~ds.test.anomalous).all()
    rows = [(c, p, d) for c in TEXTURE_CATEGORIES for p, d, _ in _category_files(a, c)[1]]
    for i, (cat, path, defect) in enumerate(rows):  # row i is that file, with that file's level
        img = _png(path)
        assert (ds.test.images[i] == np.repeat(img, 3 // img.shape[2], axis=2).transpose(2, 0, 1)).all()
        assert ds.test.defect[i] == defect and TEXTURE_CATEGORIES[ds.test.category[i]] == cat
        info = manifest["photos"][cat]["files"][f"test/{defect}/{path.name}"]
        assert levels[i] == info.get("level", "")
        if defect != "good":
            assert (ds.test.masks[i] == (_mask(a, cat, f"test/{defect}/{path.name}") > 0)).all()


def test_existing_tree_is_reused_or_replaced(tmp_path):
    out = tmp_path / "t"
    small = dict(tile=128, n_train=2, n_test_good=1, n_test_defect=6, categories=("brick", "coins"))
    generate_textures(out, seed=0, **small)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    before = tree_hash(out)
    generate_textures(out, seed=0, **small)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # not regenerated
    generate_textures(out, seed=1, **small)  # other settings: replaced
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and tree_hash(out) != before

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a generated textures tree"):
        generate_textures(other, seed=0, **small)
    assert (other / "notes.txt").read_text() == "keep me"


def test_prepare(tmp_path, monkeypatch):
    spec = DATASETS.get("textures")
    assert spec.kind == "defect" and spec.categories == TEXTURE_CATEGORIES and spec.channels == 3
    assert spec.image_size == 128 and spec.has_masks
    assert len(TEXTURE_CATEGORIES) == 7 and OBJECT_CATEGORIES == ("coins",)
    monkeypatch.setattr(textures, "N_TRAIN", 2)
    monkeypatch.setattr(textures, "N_TEST_GOOD", 1)
    monkeypatch.setattr(textures, "N_TEST_DEFECT", 6)
    ds = prepare_textures(PrepareRequest(root=tmp_path, image_size=64, seed=7))
    n = len(TEXTURE_CATEGORIES)
    assert isinstance(ds, PreparedDataset) and ds.kind == "defect" and ds.name == "textures"
    assert ds.categories == list(TEXTURE_CATEGORIES)
    assert ds.train.images.shape == (2 * n, 3, 64, 64) and not ds.train.anomalous.any()
    assert ds.test.images.shape == (7 * n, 3, 64, 64) and ds.test.masks.shape == (7 * n, 128, 128)
    assert ds.test.anomalous.sum() == 6 * n and set(np.unique(ds.test.masks)) <= {0, 1}
    assert (ds.test.level[ds.test.anomalous] == "easy").all() and (ds.test.level[~ds.test.anomalous] == "").all()
    assert (ds.train.level == "").all()
    folder = tmp_path / "textures-seed7-tile128"
    assert (folder / "manifest.json").is_file() and (ds.test.level == read_levels(folder, TEXTURE_CATEGORIES)).all()
    assert ds.meta["generator_version"] == textures.GENERATOR_VERSION
    dev = DATASETS.get("textures_dev").prepare(PrepareRequest(root=tmp_path, image_size=64, seed=7,
                                                              categories=("brick", "coins")))
    assert dev.name == "textures_dev" and dev.meta["part"] == "dev" and ds.meta["part"] == "report"
    assert "development" in DATASETS.get("textures_dev").description
    assert (tmp_path / "textures-dev-seed7-tile128-brick-coins" / "manifest.json").is_file()
    path = tmp_path / "textures.npz"
    ds.save(path)
    back = PreparedDataset.load(path)
    assert back.test.masks.sum() == ds.test.masks.sum() and (back.test.level == ds.test.level).all()
