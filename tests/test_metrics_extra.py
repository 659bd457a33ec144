"""kdad.metrics: average precision, F1-max and the sampled ROC / PRO curves, against sklearn, slow
reference implementations on tiny arrays and hand-worked values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, f1_score, roc_curve

from kdad.metrics import (
    _maps_to_mask_size,
    aupro,
    image_ap,
    image_f1max,
    pixel_ap,
    pixel_f1max,
    pro_curve_points,
    roc_curve_points,
)

# labels [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8]; thresholds high → low:
#   0.8: TP 1 FP 0 (P 1, R .5);  0.4: TP 1 FP 1 (P .5, R .5);  0.35: TP 2 FP 1 (P 2/3, R 1);  0.1: TP 2 FP 2
# AP = .5·1 + 0·.5 + .5·(2/3) + 0 = 5/6;  F1 = 2/3, 1/2, 4/5, 2/3 → F1-max = 0.8
HAND_Y = np.array([0, 0, 1, 1])
HAND_S = np.array([0.1, 0.4, 0.35, 0.8])


def _slow_f1max(y, s):
    return max(f1_score(y, (s >= t).astype(int), zero_division=0.0) for t in np.unique(s))


def _slow_sample(x, y, grid):
    """Brute force: the highest value any segment of the polyline takes at g."""
    out = []
    for g in grid:
        best = -np.inf
        for a in range(len(x) - 1):
            xa, xb, ya, yb = x[a], x[a + 1], y[a], y[a + 1]
            if xa <= g <= xb:
                best = max(best, max(ya, yb) if xb == xa else ya + (g - xa) / (xb - xa) * (yb - ya))
        out.append(best)
    return np.array(out)


def _tied_scores(rng, n, levels=7):
    return rng.integers(0, levels, n).astype(np.float32) / levels


def test_image_ap_and_f1max_hand_values():
    assert image_ap(HAND_Y, HAND_S) == pytest.approx(5 / 6)
    assert image_f1max(HAND_Y, HAND_S) == pytest.approx(0.8)
    # a perfect ranking
    assert image_ap([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0 and image_f1max([0, 0, 1], [0.1, 0.2, 0.9]) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_ap_and_f1max_match_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = (0, 1)
    s = _tied_scores(rng, 60) + 0.2 * y
    assert image_ap(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert image_f1max(y, s) == pytest.approx(_slow_f1max(y, s), abs=1e-12)


def test_pixel_ap_and_f1max_match_sklearn_on_resized_maps():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 8, 8), dtype=np.uint8)
    masks[0, 2:5, 2:5] = 1
    masks[1, 0:2, 6:8] = 1
    maps = rng.random((3, 4, 4)).astype(np.float32)  # upsampled to 8×8 as pixel_auroc does
    up = _maps_to_mask_size(maps, (8, 8)).astype(np.float32)
    y, s = masks.ravel(), up.ravel()
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert pixel_f1max(masks, maps) == pytest.approx(_slow_f1max(y, s), abs=1e-12)


def test_ap_f1_errors():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        image_ap([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        image_f1max([0, 1], [0.2, np.nan])
    with pytest.raises(ValueError, match="no anomalous pixel"):
        pixel_ap(np.zeros((1, 4, 4)), np.ones((1, 4, 4)))


def test_roc_curve_points_hand_value():
    # ROC corners: (0,0) (0,.5) (.5,.5) (.5,1) (1,1)
    x, y = roc_curve_points(HAND_Y, HAND_S, n=5)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0.5, 0.5, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="n must be"):
        roc_curve_points(HAND_Y, HAND_S, n=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_points_match_sklearn_roc_curve(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = (0, 1)
    s = _tied_scores(rng, 40, levels=5) + 0.1 * y
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    x, got = roc_curve_points(y, s, n=101)
    np.testing.assert_allclose(x, np.linspace(0, 1, 101))
    np.testing.assert_allclose(got, _slow_sample(fpr, tpr, x), atol=1e-12)


def _slow_pro_curve(masks, maps):
    """Every distinct score as threshold (descending), regions by 8-connectivity per image, by loops."""
    labels = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    normal = masks == 0
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        flagged = maps >= t
        xs.append(float((flagged & normal).sum() / normal.sum()))
        overlaps = []
        for img, lab in enumerate(labels):
            for r in range(1, lab.max() + 1):
                region = lab == r
                overlaps.append((flagged[img] & region).sum() / region.sum())
        ys.append(float(np.mean(overlaps)))
    return np.array(xs), np.array(ys)


def test_pro_curve_points_match_slow_reference_and_aupro():
    rng = np.random.default_rng(5)
    masks = np.zeros((3, 10, 10), dtype=np.uint8)
    masks[0, 1:4, 1:4] = 1
    masks[0, 6:9, 6:8] = 1
    masks[1, 4:7, 2:9] = 1  # image 2 is defect-free
    maps = np.round(rng.random((3, 10, 10)) + 0.6 * masks, 1).astype(np.float32)  # many ties
    x, got = pro_curve_points(masks, maps, fpr_limit=0.3, n=31)
    np.testing.assert_allclose(x, np.linspace(0, 0.3, 31))
    fx, fy = _slow_pro_curve(masks, maps)
    np.testing.assert_allclose(got, _slow_sample(fx, fy, x), atol=1e-12)
    # a finely sampled curve integrates to AU-PRO
    xf, yf = pro_curve_points(masks, maps, n=3001)
    area = float(np.sum(np.diff(xf) * (yf[1:] + yf[:-1]) / 2)) / 0.3
    assert area == pytest.approx(aupro(masks, maps), abs=1e-3)
    with pytest.raises(ValueError, match="fpr_limit"):
        pro_curve_points(masks, maps, fpr_limit=0)
