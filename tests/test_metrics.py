"""Property tests for kdad.metrics against hand-computed values and slow independent references."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from kdad.metrics import _maps_to_mask_size, aupro, image_auroc, paper_pixel_metric, pixel_auroc


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _blob_masks(rng, n, h, w, n_good=0, max_rects=3):
    """Masks with 1-3 random rectangles per defective image, plus ``n_good`` empty masks."""
    masks = np.zeros((n + n_good, h, w), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(1, max_rects + 1)):
            rh, rw = rng.integers(3, h // 3, size=2)
            y, x = rng.integers(0, h - rh), rng.integers(0, w - rw)
            masks[i, y:y + rh, x:x + rw] = 1
    return masks


def _bilinear_numpy(img, out_h, out_w):
    """Independent bilinear resize with half-pixel centres (align_corners=False)."""
    in_h, in_w = img.shape

    def coords(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        src = np.clip(src, 0, None)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, fy = coords(out_h, in_h)
    x0, x1, fx = coords(out_w, in_w)
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bot = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy)[:, None] + bot * fy[:, None]


def _aupro_reference(masks, maps, fpr_limit=0.3):
    """Slow AU-PRO: one Python iteration per distinct threshold, regions labelled per image."""
    masks = masks.astype(bool)
    eight = np.ones((3, 3), dtype=int)
    region_imgs = []
    for idx, m in enumerate(masks):
        lab, k = ndimage.label(m, structure=eight)
        region_imgs += [(idx, lab == j) for j in range(1, k + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        above = maps >= t
        pro = np.mean([above[i][r].sum() / r.sum() for i, r in region_imgs])
        fpr = (above & normal).sum() / normal.sum()
        points.append((fpr, pro))
    area = 0.0
    for (xa, ya), (xb, yb) in zip(points[:-1], points[1:]):
        if xa >= fpr_limit:
            break
        if xb > fpr_limit:  # clip the segment at the limit with linear interpolation
            yb = ya + (fpr_limit - xa) / (xb - xa) * (yb - ya)
            xb = fpr_limit
        area += (xb - xa) * (ya + yb) / 2
    return area / fpr_limit


def _paper_reference(masks, maps, size, num_thresholds, soft=None):
    """Slow, literal transcription of the official computation: per threshold t = i/num_thresholds a
    binary map ``map >= t``, an explicit binary opening with the 3×3 cross (OpenCV border semantics:
    the outside neither erodes nor dilates), soft ground truth as weights, sklearn's ``auc`` over the
    points in threshold order."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import auc

    defective = masks.reshape(len(masks), -1).any(1)

    def resize(a):
        t = torch.from_numpy(a[defective].astype(np.float64))[:, None]
        return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()

    gt = resize(masks if soft is None else soft / 255.0)
    amap = resize(maps)
    cross = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    tpr, fpr = [], []
    for i in range(num_thresholds):
        t = i / num_thresholds
        binary = np.stack([ndimage.binary_dilation(ndimage.binary_erosion(a >= t, structure=cross, border_value=1),
                                                   structure=cross, border_value=0) for a in amap]).astype(float)
        tpr.append((binary * gt).sum() / gt.sum())
        fp, tn = (binary * (1 - gt)).sum(), ((1 - binary) * (1 - gt)).sum()
        fpr.append(fp / (fp + tn))
    return float(auc(fpr, tpr))


# ---------------------------------------------------------------------------------------------
# image_auroc
# ---------------------------------------------------------------------------------------------

def test_image_auroc_hand_value():
    # pairs (anomalous, normal): (0.35,0.1)+ (0.35,0.4)- (0.8,0.1)+ (0.8,0.4)+  -> 3/4
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_image_auroc_matches_mann_whitney():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 20, 200).astype(float)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert image_auroc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_image_auroc_errors():
    with pytest.raises(ValueError, match="both"):
        image_auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1, 1], [0.1, np.inf, 0.3])


# ---------------------------------------------------------------------------------------------
# pixel_auroc
# ---------------------------------------------------------------------------------------------

def test_pixel_auroc_equals_sklearn_on_flattened_pixels():
    rng = np.random.default_rng(1)
    masks = _blob_masks(rng, 6, 32, 32, n_good=3)
    maps = rng.random(masks.shape) + 0.7 * masks
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))


def test_pixel_auroc_upsamples_maps_bilinearly():
    rng = np.random.default_rng(2)
    masks = _blob_masks(rng, 5, 32, 32, n_good=2)
    maps_half = rng.random((7, 16, 16))
    by_hand = np.stack([_bilinear_numpy(m, 32, 32) for m in maps_half])
    np.testing.assert_allclose(_maps_to_mask_size(maps_half, (32, 32)), by_hand, atol=1e-12)
    assert pixel_auroc(masks, maps_half) == pytest.approx(pixel_auroc(masks, by_hand), abs=1e-12)


def test_pixel_auroc_errors():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 0, 0] = 1
    maps = np.zeros((2, 4, 4))
    maps[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(masks, maps)
    with pytest.raises(ValueError, match="no anomalous"):
        pixel_auroc(np.zeros((2, 4, 4), np.uint8), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="number of images"):
        pixel_auroc(masks, np.zeros((3, 4, 4)))


# ---------------------------------------------------------------------------------------------
# aupro
# ---------------------------------------------------------------------------------------------

def test_aupro_perfect_map_is_one():
    rng = np.random.default_rng(3)
    masks = _blob_masks(rng, 4, 32, 32, n_good=2)
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert aupro(masks, masks.astype(float), num_thresholds=50) == pytest.approx(1.0)


def test_aupro_hand_computed():
    # Image A: region R1 = {(0,0), (0,1)} (2 px).  Image B: region R2 = diagonal of 4 px — one
    # region under 8-connectivity (it would be 4 regions under 4-connectivity).
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 0, 0:2] = 1
    for i in range(4):
        masks[1, i, i] = 1
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0], maps[0, 0, 1] = 0.9, 0.5                  # R1 scores
    maps[1, 0, 0] = maps[1, 1, 1] = 0.9                      # R2 scores 0.9 0.9 0.2 0.2
    maps[1, 2, 2] = maps[1, 3, 3] = 0.2
    maps[0, 3, 3] = 0.7                                      # normal pixel (FP)
    maps[1, 0, 3] = 0.5                                      # normal pixel tied with R1's 0.5
    # 26 normal pixels.  Curve (FPR, PRO) over the distinct thresholds:
    #   t>0.9: (0, 0);  t=0.9: (0, (1/2 + 2/4)/2 = 0.5);  t=0.7: (1/26, 0.5)
    #   t=0.5: (2/26, (1 + 1/2)/2 = 0.75)  (tied pixels enter together)
    #   t=0.2: (2/26, 1);  t=0: (1, 1) -> interpolated at 0.3: (0.3, 1)
    # area = 0.5/26 + (1/26)(0.5+0.75)/2 + (0.3 - 2/26)*1 = 0.3 - 0.875/26
    expected = (0.3 - 0.875 / 26) / 0.3                      # = 0.88782...
    assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert _aupro_reference(masks, maps) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_slow_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    masks = _blob_masks(rng, 4, 20, 20, n_good=2)
    maps = np.round(rng.random(masks.shape) + 0.5 * masks, 1)   # ~15 distinct values: many ties
    for limit in (0.3, 0.05):
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(
            _aupro_reference(masks, maps, limit), abs=1e-6
        )


def test_aupro_grid_approximates_exact():
    rng = np.random.default_rng(4)
    masks = _blob_masks(rng, 6, 32, 32, n_good=2)
    maps = rng.random(masks.shape) + 0.8 * masks
    assert aupro(masks, maps, num_thresholds=2000) == pytest.approx(aupro(masks, maps), abs=5e-3)


def test_aupro_random_map_is_about_half_the_limit():
    rng = np.random.default_rng(5)
    masks = _blob_masks(rng, 20, 64, 64, n_good=5)
    maps = rng.random(masks.shape)
    assert aupro(masks, maps) == pytest.approx(0.15, abs=0.02)


def test_aupro_upsampled_maps_match_manual_resize():
    rng = np.random.default_rng(6)
    masks = _blob_masks(rng, 4, 32, 32)
    maps = rng.random((4, 16, 16))
    manual = np.stack([_bilinear_numpy(m, 32, 32) for m in maps])
    assert aupro(masks, maps) == pytest.approx(aupro(masks, manual), abs=1e-9)


def test_aupro_errors():
    maps = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="no defect region"):
        aupro(np.zeros((2, 8, 8), np.uint8), maps)
    with pytest.raises(ValueError, match="no normal pixel"):
        aupro(np.ones((2, 8, 8), np.uint8), maps)
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:4, 2:4] = 1
    with pytest.raises(ValueError, match="NaN"):
        aupro(masks, np.full((2, 8, 8), np.nan))
    with pytest.raises(ValueError, match="0/1"):
        aupro(masks * 255, maps)


# ---------------------------------------------------------------------------------------------
# paper_pixel_metric
# ---------------------------------------------------------------------------------------------

def test_paper_metric_perfect_map():
    rng = np.random.default_rng(7)
    masks = _blob_masks(rng, 5, 128, 128)
    # Not exactly 1: the cross-shaped opening shaves the corner pixels off every rectangle, so
    # the best TPR is slightly below 1 (a property of the paper's metric, not a bug).
    assert paper_pixel_metric(masks, masks.astype(float)) == pytest.approx(1.0, abs=1e-2)


def test_paper_metric_hand_worked_case():
    """One 4×4 image, a 2×2 defect in the middle, no blur. With 2 thresholds (0 and 0.5): at t = 0
    every pixel is on (TPR = FPR = 1); at t = 0.5 the map is on exactly on the defect, but the
    opening with the cross removes a 2×2 square entirely (no pixel keeps all four neighbours), so
    TPR = FPR = 0. sklearn's auc of [(1, 1), (0, 0)] = 0.5; with the map on a plus-shaped region
    that survives the opening, TPR = 1 at FPR = 1/12 and the area is 1 - (1/12)/2."""
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 1:3, 1:3] = 1
    assert paper_pixel_metric(masks, masks.astype(float), size=4, num_thresholds=2) == pytest.approx(0.5)
    plus = np.zeros((1, 5, 5), np.uint8)
    plus[0, 1:4, 2] = plus[0, 2, 1:4] = 1          # the defect: a plus of 5 pixels
    big = np.zeros((1, 5, 5))
    big[0, 0:5, 2] = big[0, 2, 0:5] = 1.0           # the map: a longer plus, 4 pixels outside the defect
    # the opening keeps the big plus except its 4 arm ends; all 5 defect pixels stay → TPR 1, FPR 0
    assert paper_pixel_metric(plus, big, size=5, num_thresholds=2) == pytest.approx(1.0)


def test_paper_metric_uses_soft_masks_as_weights():
    masks = np.zeros((1, 8, 8), np.uint8)
    masks[0, 2:6, 2:6] = 1
    soft = masks * 255
    soft[0, 2, 2:6] = 64                            # a border row only a quarter covered
    maps = np.clip(np.random.default_rng(0).random((1, 8, 8)) * 0.5 + masks * 0.5, 0, 1)
    got = paper_pixel_metric(masks, maps, soft_masks=soft, size=8, num_thresholds=50)
    assert got == pytest.approx(_paper_reference(masks, maps, 8, 50, soft=soft), abs=1e-12)
    assert got != pytest.approx(paper_pixel_metric(masks, maps, size=8, num_thresholds=50), abs=1e-6)


def test_paper_metric_ignores_good_images():
    rng = np.random.default_rng(8)
    masks = _blob_masks(rng, 5, 64, 64)
    maps = np.clip(0.5 * rng.random(masks.shape) + 0.5 * masks, 0, 1)
    base = paper_pixel_metric(masks, maps, size=64, num_thresholds=200)
    good_masks = np.zeros((4, 64, 64), np.uint8)
    good_maps = rng.random((4, 64, 64))
    with_good = paper_pixel_metric(
        np.concatenate([good_masks[:2], masks, good_masks[2:]]),
        np.concatenate([good_maps[:2], maps, good_maps[2:]]),
        size=64, num_thresholds=200,
    )
    assert with_good == base
    assert 0.5 < base <= 1.0


def test_paper_metric_inverted_map_scores_low():
    rng = np.random.default_rng(9)
    masks = _blob_masks(rng, 5, 128, 128)
    maps = np.clip(1.0 - masks + 0.1 * rng.random(masks.shape) - 0.1, 0, 1)
    assert paper_pixel_metric(masks, maps) < 0.3


def test_paper_metric_matches_the_official_computation():
    rng = np.random.default_rng(10)
    masks = _blob_masks(rng, 3, 40, 40, n_good=1)
    # smooth-ish maps so that openings at different thresholds differ non-trivially
    maps = np.clip(ndimage.uniform_filter(rng.random(masks.shape), size=(1, 3, 3)) * 0.7 + 0.3 * masks, 0, 1)
    got = paper_pixel_metric(masks, maps, size=32, num_thresholds=60)
    assert got == pytest.approx(_paper_reference(masks, maps, 32, 60), abs=1e-12)
    got = paper_pixel_metric(masks, maps, size=40, num_thresholds=1000)
    assert got == pytest.approx(_paper_reference(masks, maps, 40, 1000), abs=1e-12)


def test_paper_metric_speed():
    rng = np.random.default_rng(11)
    masks = _blob_masks(rng, 50, 128, 128)
    maps = np.clip(rng.random(masks.shape).astype(np.float32) * 0.5 + masks * 0.5, 0, 1)
    t0 = time.perf_counter()
    val = paper_pixel_metric(masks, maps, size=128, num_thresholds=1000)
    assert time.perf_counter() - t0 < 20.0
    assert 0.0 <= val <= 1.0


def test_paper_metric_errors():
    with pytest.raises(ValueError, match="no defective image"):
        paper_pixel_metric(np.zeros((2, 16, 16), np.uint8), np.zeros((2, 16, 16)))
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[0, 4:8, 4:8] = 1
    maps = np.zeros((2, 16, 16))
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        paper_pixel_metric(masks, maps)
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        paper_pixel_metric(masks, np.full((2, 16, 16), 3.0))
