"""Anomaly-detection metrics: image AUROC, pixel AUROC, AU-PRO and the MKD paper's pixel metric.

All functions take numpy arrays and return a Python float.  Conventions:

* image labels / pixel masks: 1 (or True) = anomalous, 0 = normal;
* scores / anomaly maps: higher = more anomalous;
* masks are ``[N, Hm, Wm]`` and maps ``[N, H, W]`` (a singleton channel axis ``[N, 1, H, W]`` is
  accepted too).  Maps whose size differs from the masks' are resized bilinearly to mask
  resolution (:func:`_maps_to_mask_size`) before any pixel metric is computed, because the
  ground truth is defined at mask resolution.

Any NaN/inf score or malformed input raises ``ValueError``: a silently wrong AUROC is worse than
a crash in a benchmark.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["image_auroc", "pixel_auroc", "aupro", "paper_pixel_metric"]


# ---------------------------------------------------------------------------------------------
# validation and resizing helpers
# ---------------------------------------------------------------------------------------------

def _as_stack(arr, name: str) -> np.ndarray:
    """Return ``arr`` as a 3-D ``[N, H, W]`` array (squeezing a singleton channel axis)."""
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape [N, H, W] (or [N, 1, H, W]), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n_bad = int(arr.size - np.isfinite(arr).sum())
        raise ValueError(f"{name} contains {n_bad} NaN/inf value(s); anomaly scores must be finite")


def _check_binary(arr: np.ndarray, name: str) -> np.ndarray:
    """Validate that ``arr`` only holds 0/1 (or bools) and return it as a bool array."""
    if arr.dtype == bool:
        return arr
    _check_finite(arr, name)
    if np.issubdtype(arr.dtype, np.integer):  # fast path (np.isin hashes every pixel)
        if arr.size and (arr.max() > 1 or arr.min() < 0):
            bad = np.unique(arr[(arr > 1) | (arr < 0)])[:5]
            raise ValueError(f"{name} must contain only 0/1 values, found e.g. {bad.tolist()}")
        return arr.astype(bool)
    if not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{name} must contain only 0/1 values, found e.g. {bad.tolist()}")
    return arr.astype(bool)


def _resize_bilinear(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a ``[N, H, W]`` stack to ``[N, *shape]`` (float64).

    Uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, i.e. the
    half-pixel-centre convention of PyTorch/OpenCV's ``cv2.resize`` (no antialiasing).
    """
    shape = (int(shape[0]), int(shape[1]))
    stack = np.asarray(stack, dtype=np.float64)
    if stack.shape[1:] == shape:
        return stack
    t = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False)
    return out[:, 0].numpy()


def _maps_to_mask_size(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize anomaly maps ``[N, H, W]`` to mask resolution ``shape = (Hm, Wm)``.

    Bilinear, ``align_corners=False`` (see :func:`_resize_bilinear`); a no-op (apart from the cast
    to float64) when the sizes already match.  Sharing this helper keeps pixel AUROC and AU-PRO
    computed on exactly the same pixels.
    """
    maps = _as_stack(maps, "maps")
    _check_finite(maps, "maps")
    return _resize_bilinear(maps, shape)


def _masks_and_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (masks, maps) pair; return bool masks and float64 maps at mask resolution."""
    masks = _check_binary(_as_stack(masks, "masks"), "masks")
    maps = _as_stack(maps, "maps")
    if masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"masks and maps disagree on the number of images: {masks.shape[0]} vs {maps.shape[0]}"
        )
    return masks, _maps_to_mask_size(maps, masks.shape[1:])


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


# ---------------------------------------------------------------------------------------------
# image level
# ---------------------------------------------------------------------------------------------

def image_auroc(labels, scores) -> float:
    """Image-level ROC-AUC (label 1 = anomalous, higher score = more anomalous).

    Area under the ROC curve, equal to the Mann–Whitney probability that a random anomalous image
    scores higher than a random normal one (ties count 1/2).  It is the standard image-level
    detection metric on MVTec AD (Bergmann et al., CVPR 2019) and the one reported in Table 1 of
    the MKD paper (Salehi et al., CVPR 2021).  Computed by :func:`_binary_auroc` in float64 (tests check
    it equals ``sklearn.metrics.roc_auc_score``; not importing scikit-learn keeps every job's start-up short).

    Raises ``ValueError`` if only one class is present (AUROC is undefined) or if any score is
    NaN/inf.
    """
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.size} vs {scores.size}")
    if labels.size == 0:
        raise ValueError("image_auroc got no samples")
    labels = _check_binary(labels, "labels")
    _check_finite(scores, "scores")
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        which = "anomalous (1)" if n_pos else "normal (0)"
        raise ValueError(
            f"image_auroc needs both normal and anomalous samples, but all {labels.size} are {which}"
        )
    return _binary_auroc(labels, scores.astype(np.float64), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# pixel level
# ---------------------------------------------------------------------------------------------

def pixel_auroc(masks, maps) -> float:
    """Standard pixel-level ROC-AUC over all pixels of all test images (MVTec AD protocol).

    Every pixel of every test image, defect-free images included, is one sample; its label is the
    ground-truth mask and its score the anomaly map value (maps are first resized bilinearly to
    mask resolution).  This is the "pixel AUROC" used by most MVTec AD papers (e.g. Bergmann et
    al., CVPR 2020 / IJCV 2021).  It is *not* the MKD paper's own localisation number; see
    :func:`paper_pixel_metric` for that.

    Memory is O(number of pixels). Computed by :func:`_binary_auroc` (one float32 sort; tests
    check it equals ``sklearn.metrics.roc_auc_score``, which is 3-4x slower on millions of pixels).
    """
    masks, maps = _masks_and_maps(masks, maps)
    y = masks.ravel()
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError("pixel_auroc: the masks contain no anomalous pixel")
    if n_pos == y.size:
        raise ValueError("pixel_auroc: the masks contain no normal pixel")
    return _binary_auroc(y, maps.ravel())


def _binary_auroc(labels: np.ndarray, scores: np.ndarray, dtype=np.float32) -> float:
    """ROC-AUC = P(score of a positive > score of a negative) + ½ P(equal), by one sort.

    Scores are grouped into runs of equal value (ties); each group contributes
    ``pos_g · (negatives below it + ½ neg_g)``.
    """
    scores = np.asarray(scores, dtype=dtype)
    order = np.argsort(scores)
    s = scores[order]
    y = np.asarray(labels, dtype=bool)[order]
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)
    cum_pos = np.cumsum(y, dtype=np.int64)[ends]
    cum_neg = (ends + 1) - cum_pos
    pos_g = np.diff(cum_pos, prepend=0)
    neg_g = np.diff(cum_neg, prepend=0)
    n_pos, n_neg = cum_pos[-1], cum_neg[-1]
    auc = np.sum(pos_g * ((cum_neg - neg_g) + 0.5 * neg_g), dtype=np.float64) / (float(n_pos) * float(n_neg))
    return float(auc)


_STRUCT_8CONN_2D_IN_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCT_8CONN_2D_IN_3D[1] = True  # 8-connectivity within an image, none across images


def _pro_fpr_curve(masks: np.ndarray, maps: np.ndarray, num_thresholds: int | None):
    """(FPR, PRO) points for thresholds from +inf downwards; see :func:`aupro`."""
    labels, num_regions = ndimage.label(masks, structure=_STRUCT_8CONN_2D_IN_3D)
    if num_regions == 0:
        raise ValueError("aupro: the ground-truth masks contain no defect region")
    labels = labels.ravel()
    region_size = np.bincount(labels, minlength=num_regions + 1)
    num_normal = int(region_size[0])
    if num_normal == 0:
        raise ValueError("aupro: the ground-truth masks contain no normal pixel")

    # Per-pixel contribution to PRO once it is above threshold: 1 / |region| / num_regions.
    region_weight = np.zeros(num_regions + 1, dtype=np.float64)
    region_weight[1:] = 1.0 / (region_size[1:] * float(num_regions))

    scores = maps.ravel().astype(np.float32)
    # descending score; the order inside a run of ties is irrelevant (curve points are taken at
    # the ends of runs), so the faster unstable sort is fine
    order = np.argsort(scores)[::-1]
    sorted_scores = scores[order]
    sorted_labels = labels[order]
    del order
    cum_pro = np.cumsum(region_weight[sorted_labels])
    cum_fp = np.cumsum(sorted_labels == 0)
    del sorted_labels

    if num_thresholds is None:
        # One curve point per distinct score: the last position of every run of equal scores,
        # so tied pixels enter together.
        ends = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
        ends = np.append(ends, sorted_scores.size - 1)
    else:
        # Evenly spaced grid from max to min score; the number of pixels with score >= t is
        # found by binary search in the ascending order.
        asc = sorted_scores[::-1]
        thresholds = np.linspace(asc[-1], asc[0], int(num_thresholds))
        counts = asc.size - np.searchsorted(asc, thresholds, side="left")
        counts[-1] = asc.size  # min score: every pixel is above, avoid rounding in linspace
        ends = counts[counts > 0] - 1

    fpr = np.concatenate(([0.0], cum_fp[ends] / num_normal))
    pro = np.concatenate(([0.0], np.clip(cum_pro[ends], 0.0, 1.0)))
    return fpr, pro


def aupro(masks, maps, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit`` (AU-PRO).

    Definition (Bergmann et al., "MVTec AD", IJCV 2021, Sec. 5.1; also CVPR 2020 "Uninformed
    Students"): split every ground-truth mask into connected components (8-connectivity) — the
    defect regions.  For a threshold ``t``

    * ``PRO(t)`` = mean over all regions ``C_k`` of ``|C_k ∩ {map >= t}| / |C_k|``,
    * ``FPR(t)`` = fraction of all normal pixels (mask == 0, over all test images, defect-free
      ones included) with ``map >= t``.

    The metric is ``∫_0^fpr_limit PRO dFPR / fpr_limit`` (trapezoid rule, the curve linearly
    interpolated at exactly ``fpr_limit``), so a perfect detector scores 1.0 and a random one
    about ``fpr_limit / 2``.  Per-region averaging stops large defects from dominating, unlike
    pixel AUROC.

    With ``num_thresholds=None`` (default) the curve is exact: all pixel scores are sorted once
    and every distinct score is a threshold; per-region true-positive fractions are accumulated
    with a cumulative sum of per-pixel weights ``1 / |C_k| / num_regions``, so tied pixels enter
    at the same threshold and nothing loops over thresholds in Python.  With an integer
    ``num_thresholds`` the curve is sampled at that many evenly spaced thresholds between the
    minimum and maximum score instead (as in MVTec's reference evaluation; an approximation).

    Maps are resized to mask resolution with :func:`_maps_to_mask_size`.  Memory is O(pixels).
    Raises ``ValueError`` if there are no defect regions or no normal pixels.
    """
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds is not None and int(num_thresholds) < 2:
        raise ValueError(f"num_thresholds must be None or >= 2, got {num_thresholds}")
    masks, maps = _masks_and_maps(masks, maps)
    fpr, pro = _pro_fpr_curve(masks, maps, num_thresholds)

    # Keep the points with FPR <= limit and close the curve with an interpolated point at the
    # limit (the first point beyond it has strictly larger FPR, so the division is safe).
    n_in = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:n_in], pro[:n_in]
    if n_in < fpr.size:
        x0, x1, y0, y1 = fpr[n_in - 1], fpr[n_in], pro[n_in - 1], pro[n_in]
        y_lim = y0 + (fpr_limit - x0) / (x1 - x0) * (y1 - y0)
        x = np.append(x, fpr_limit)
        y = np.append(y, y_lim)
    return float(np.clip(_trapezoid(x, y) / fpr_limit, 0.0, 1.0))


_CROSS_3X3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
_CROSS_IN_3D = np.zeros((3, 3, 3), dtype=bool)
_CROSS_IN_3D[1] = _CROSS_3X3  # opening acts within each image only


def _open_grey(maps: np.ndarray) -> np.ndarray:
    """Grey-level opening of every map with the 3×3 cross, OpenCV border semantics.

    Flat morphology commutes with thresholding: ``open(map >= t) == open_grey(map) >= t`` (and
    likewise for ``>``) for every ``t`` (erosion = min filter, dilation = max filter, and ``min/max(...) > t`` is the
    AND/OR of the per-pixel tests).  So opening the grey map once gives the opened binary map at
    *every* threshold exactly.  Borders follow ``cv2.morphologyEx(MORPH_OPEN)`` defaults:
    outside pixels never erode (+inf) and never dilate (-inf).
    """
    eroded = ndimage.grey_erosion(maps, footprint=_CROSS_IN_3D, mode="constant", cval=np.inf)
    return ndimage.grey_dilation(eroded, footprint=_CROSS_IN_3D, mode="constant", cval=-np.inf)


def paper_pixel_metric(masks, maps, *, soft_masks=None, size: int = 128, num_thresholds: int = 1000) -> float:
    """The MKD paper's own localisation number — NOT the standard pixel AUROC.

    The computation of the official MKD code (``compute_localization_auc``), which produced the
    paper's pixel numbers:

    1. only *defective* test images (a mask with at least one positive pixel) are used;
    2. the ground truth is *soft*: the mask resized to ``size × size`` bilinearly, values in [0, 1]
       (``soft_masks``, uint8 0..255 coverage, when the dataset kept it; otherwise the binary mask,
       resized bilinearly when its size differs);
    3. the maps must already be normalised to [0, 1] per image — in the official code that is part
       of the localisation method (Σ|gradient| over channels, min → 0, 99th percentile → 1, clipped;
       see :mod:`kdad.localize`), so this function refuses maps outside [0, 1];
    4. for each threshold t = 0, 1/num_thresholds, …, (num_thresholds − 1)/num_thresholds the
       binary map ``map >= t`` is opened with OpenCV's 3×3 elliptic structuring element (a cross);
    5. TPR(t) = Σ opened·gt / Σ gt and FPR(t) = Σ opened·(1 − gt) / Σ (1 − gt), the soft ground
       truth acting as pixel weights;
    6. the score is the trapezoid area under those points in threshold order, exactly as
       ``sklearn.metrics.auc`` computes it; no end points are added (the curve starts at
       (1, 1) for t = 0 and stops where the highest threshold leaves it, not at (0, 0)).

    Ignoring defect-free images, the opening and the missing end segment all change the number:
    it is comparable with the paper's tables only, never with another paper's pixel AUROC.

    Implementation: flat morphology commutes with thresholding (:func:`_open_grey`), so the grey
    map is opened once and every threshold costs a binary search in the sorted values.
    """
    size = int(size)
    num_thresholds = int(num_thresholds)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be >= 2, got {num_thresholds}")
    masks = _check_binary(_as_stack(masks, "masks"), "masks")
    maps = _as_stack(maps, "maps")
    _check_finite(maps, "maps")
    if masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"masks and maps disagree on the number of images: {masks.shape[0]} vs {maps.shape[0]}"
        )
    if maps.min() < -1e-6 or maps.max() > 1 + 1e-6:
        raise ValueError(f"paper_pixel_metric needs maps normalised to [0, 1] (found {maps.min():.3g}.."
                         f"{maps.max():.3g}); normalise them as the localisation method declares")
    defective = masks.reshape(masks.shape[0], -1).any(axis=1)
    if not defective.any():
        raise ValueError("paper_pixel_metric: no defective image (every mask is empty)")
    if soft_masks is not None:
        soft = _as_stack(soft_masks, "soft_masks")
        if soft.shape != masks.shape:
            raise ValueError(f"soft_masks {soft.shape} and masks {masks.shape} differ in shape")
        gt = soft[defective].astype(np.float64) / (255.0 if soft.dtype == np.uint8 else 1.0)
    else:
        gt = masks[defective].astype(np.float64)
    gt = np.clip(_resize_bilinear(gt, (size, size)), 0.0, 1.0)
    amap = np.clip(_resize_bilinear(maps[defective], (size, size)), 0.0, 1.0)
    pos_total = float(gt.sum())
    neg_total = float((1.0 - gt).sum())
    if pos_total <= 0:
        raise ValueError(f"paper_pixel_metric: no ground-truth pixel survives resizing to {size}x{size}")
    if neg_total <= 0:
        raise ValueError("paper_pixel_metric: the defective images contain no normal pixel")

    opened = _open_grey(amap).ravel()
    order = np.argsort(opened, kind="stable")
    values = opened[order]
    w_pos = gt.ravel()[order]
    # weight of the pixels with opened value >= t: suffix sums of the sorted weights
    suffix_pos = np.concatenate((np.cumsum(w_pos[::-1])[::-1], [0.0]))
    suffix_neg = np.concatenate((np.cumsum((1.0 - w_pos)[::-1])[::-1], [0.0]))
    thresholds = np.arange(num_thresholds) / num_thresholds
    first = np.searchsorted(values, thresholds, side="left")  # first index with value >= t
    tpr = suffix_pos[first] / pos_total
    fpr = suffix_neg[first] / neg_total
    # sklearn.metrics.auc on (fpr, tpr) in threshold order: fpr never increases, so the area is
    # the negated trapezoid sum
    return float(-np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) * 0.5))


# ---------------------------------------------------------------------------------------------
# average precision, best F1 and sampled curves (image and pixel level)
# ---------------------------------------------------------------------------------------------

__all__ += ["image_ap", "image_f1max", "pixel_ap", "pixel_f1max", "roc_curve_points", "pro_curve_points"]


def _labels_and_scores(labels, scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D bool labels and finite float scores of one length, both classes present."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{what}: labels and scores differ in length: {labels.size} vs {scores.size}")
    if labels.size == 0:
        raise ValueError(f"{what} got no samples")
    labels = _check_binary(labels, "labels")
    _check_finite(scores, "scores")
    n_pos = int(np.count_nonzero(labels))
    if n_pos == 0 or n_pos == labels.size:
        which = "anomalous (1)" if n_pos else "normal (0)"
        raise ValueError(f"{what} needs both normal and anomalous samples, but all {labels.size} are {which}")
    return labels, scores


def _pixels(masks, maps, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of every image as (labels, scores), maps at mask resolution (as pixel_auroc)."""
    masks, maps = _masks_and_maps(masks, maps)
    y = masks.ravel()
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        raise ValueError(f"{what}: the masks contain no anomalous pixel")
    if n_pos == y.size:
        raise ValueError(f"{what}: the masks contain no normal pixel")
    return y, maps.ravel()


def _operating_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """True and false positives when flagging every sample with score >= t, for each distinct t.

    One sort (descending); a run of tied scores enters at once, so there is one point per distinct
    score, from the highest threshold (fewest flagged) to the lowest (all flagged).  Returns
    ``(tp, fp, n_pos)``, counts as int64 arrays (the empty "nothing flagged" point left out).
    Scores are compared as float32, like :func:`_binary_auroc`.
    """
    scores = np.asarray(scores, dtype=np.float32)
    order = np.argsort(scores)[::-1]
    s = scores[order]
    y = np.asarray(labels, dtype=bool)[order]
    ends = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)
    tp = np.cumsum(y, dtype=np.int64)[ends]
    fp = (ends + 1) - tp
    return tp, fp, int(tp[-1])


def _average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = Σ_n (R_n − R_{n−1}) P_n over the distinct thresholds, as ``sklearn``'s
    ``average_precision_score`` defines it (a step function: no interpolation between points)."""
    tp, fp, n_pos = _operating_points(labels, scores)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """max over thresholds of F1 = 2 TP / (2 TP + FP + FN), exactly (every distinct score tried)."""
    tp, fp, n_pos = _operating_points(labels, scores)
    f1 = 2.0 * tp / (2.0 * tp + fp + (n_pos - tp))
    return float(f1.max())


def image_ap(labels, scores) -> float:
    """Image-level average precision (anomalous = positive), sklearn's definition.

    ``Σ_n (R_n − R_{n−1}) P_n`` with precision and recall at every distinct score taken as a
    threshold (``score >= t`` flagged): the step-wise area under the precision-recall curve.
    Unlike AUROC it depends on the share of anomalous images, so compare it only within one test
    set.  Raises ``ValueError`` like :func:`image_auroc`.
    """
    return _average_precision(*_labels_and_scores(labels, scores, "image_ap"))


def image_f1max(labels, scores) -> float:
    """Image-level F1-max: the best F1 score over all thresholds (every distinct score tried).

    Computed exactly from one sort; F1 = 2 TP / (2 TP + FP + FN).  Raises like :func:`image_auroc`.
    """
    return _f1_max(*_labels_and_scores(labels, scores, "image_f1max"))


def pixel_ap(masks, maps) -> float:
    """Average precision over all pixels of all test images (maps resized to mask size first).

    The same pixels as :func:`pixel_auroc`; sklearn's AP definition (see :func:`image_ap`).
    """
    return _average_precision(*_pixels(masks, maps, "pixel_ap"))


def pixel_f1max(masks, maps) -> float:
    """Best F1 over thresholds, every pixel of every test image a sample (see :func:`image_f1max`)."""
    return _f1_max(*_pixels(masks, maps, "pixel_f1max"))


def _sample_curve(x: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The piecewise-linear monotone curve through the points ``(x, y)`` at the ``grid`` values.

    Points are in curve order (x and y non-decreasing); consecutive points are joined by straight
    segments, as the trapezoid rule does.  Where the curve rises vertically (several points share
    one x) the top of the rise is taken.  Between two points: linear interpolation from the last
    point with ``x <= g`` to the next one.
    """
    j = np.clip(np.searchsorted(x, grid, side="right") - 1, 0, x.size - 1)
    nxt = np.minimum(j + 1, x.size - 1)
    x0, x1, y0, y1 = x[j], x[nxt], y[j], y[nxt]
    span = x1 - x0
    frac = np.where(span > 0, (grid - x0) / np.where(span > 0, span, 1.0), 0.0)
    return y0 + np.clip(frac, 0.0, 1.0) * (y1 - y0)


def roc_curve_points(labels, scores, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The image-level ROC curve sampled at ``n`` evenly spaced FPR values in [0, 1].

    Returns ``(fpr, tpr)``: ``fpr = linspace(0, 1, n)`` and the TPR of the exact ROC curve (one
    point per distinct score, a run of ties one diagonal segment, as ``sklearn.metrics.roc_curve``
    with ``drop_intermediate=False``) at each of them; where the curve rises vertically at a
    sampled FPR the top of the rise is taken.  Curves of several runs sampled this way can be
    averaged point by point (vertical averaging).
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    y, s = _labels_and_scores(labels, scores, "roc_curve_points")
    tp, fp, n_pos = _operating_points(y, s)
    n_neg = y.size - n_pos
    fpr = np.concatenate(([0.0], fp / n_neg))
    tpr = np.concatenate(([0.0], tp / n_pos))
    grid = np.linspace(0.0, 1.0, n)
    return grid, _sample_curve(fpr, tpr, grid)


def pro_curve_points(masks, maps, fpr_limit: float = 0.3, n: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve of :func:`aupro` sampled at ``n`` evenly spaced pixel-FPR
    values in [0, ``fpr_limit``].

    Returns ``(fpr, pro)``.  The curve is the exact one :func:`aupro` integrates (every distinct
    score a threshold, points joined linearly), so the trapezoid area of a finely sampled curve
    divided by ``fpr_limit`` approaches :func:`aupro`.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    masks, maps = _masks_and_maps(masks, maps)
    fpr, pro = _pro_fpr_curve(masks, maps, None)
    grid = np.linspace(0.0, fpr_limit, n)
    return grid, _sample_curve(fpr, pro, grid)
