"""Overlap and surface-distance metrics between two integer labelmaps on the same grid.

Arrays are numpy ``(z, y, x)`` (``sitk.GetArrayFromImage`` order); ``spacing`` is in mm in the
same ``(z, y, x)`` order (the reverse of ``sitk.Image.GetSpacing()``).

Conventions, for a label present in the truth:
- absent from the prediction: Dice 0, HD95 NaN (no surface to measure; means skip NaN);
- both present: Dice in [0, 1], HD95 = 95th percentile of the symmetric surface distances, in mm
  (MONAI ``compute_hausdorff_distance``, Euclidean).
A label absent from both gets Dice NaN and HD95 NaN (it is normally not asked for).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance
from scipy import ndimage


def labels_in(array: np.ndarray) -> list[int]:
    """Sorted non-zero ids present in an integer array."""
    return [int(v) for v in np.unique(array) if v != 0]


def dice_score(pred_mask: np.ndarray, truth_mask: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    pred_mask, truth_mask = np.asarray(pred_mask, bool), np.asarray(truth_mask, bool)
    total = int(pred_mask.sum()) + int(truth_mask.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred_mask, truth_mask).sum()) / total


def dice_per_label(pred: np.ndarray, truth: np.ndarray, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice per id (default: the ids present in ``truth``); ``pred`` and ``truth`` of equal shape."""
    pred, truth = _check_pair(pred, truth)
    ids = labels_in(truth) if labels is None else [int(i) for i in labels]
    boxes = _union_boxes(pred, truth, ids)
    return {i: dice_score(pred[boxes[i]] == i, truth[boxes[i]] == i) for i in ids}


def hd95_mask(pred_mask: np.ndarray, truth_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) of two boolean masks; NaN if either is empty.

    Works on the bounding box of the union (plus a 1-voxel margin) so that large volumes stay fast.
    """
    pred_mask, truth_mask = np.asarray(pred_mask, bool), np.asarray(truth_mask, bool)
    if not pred_mask.any() or not truth_mask.any():
        return float("nan")
    union = pred_mask | truth_mask
    box = []
    for axis in range(union.ndim):
        hits = np.nonzero(np.any(union, axis=tuple(a for a in range(union.ndim) if a != axis)))[0]
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    crop = tuple(box)
    p = torch.from_numpy(np.ascontiguousarray(pred_mask[crop]))[None, None]
    t = torch.from_numpy(np.ascontiguousarray(truth_mask[crop]))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            p, t, include_background=True, percentile=95, spacing=[float(s) for s in spacing]
        )
    return float(value.reshape(-1)[0])


def hd95_per_label(
    pred: np.ndarray, truth: np.ndarray, labels: Iterable[int] | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[int, float]:
    """HD95 in mm per id (default: the ids present in ``truth``); NaN where either mask is empty."""
    pred, truth = _check_pair(pred, truth)
    if len(spacing) != truth.ndim:
        raise ValueError(f"spacing {tuple(spacing)} must have one value per axis of the {truth.ndim}-D arrays")
    ids = labels_in(truth) if labels is None else [int(i) for i in labels]
    boxes = _union_boxes(pred, truth, ids)
    return {i: hd95_mask(pred[boxes[i]] == i, truth[boxes[i]] == i, spacing) for i in ids}


def _union_boxes(pred: np.ndarray, truth: np.ndarray, ids: list[int]) -> dict[int, tuple[slice, ...]]:
    """Per id, the smallest box holding it in ``pred`` or ``truth`` (an empty box when in neither)."""
    top = max(ids, default=0)
    if top <= 0:
        return {i: tuple(slice(0, 0) for _ in truth.shape) for i in ids}
    found = [
        ndimage.find_objects(np.where((array > 0) & (array <= top), array, 0).astype(np.int64), max_label=top)
        for array in (pred, truth)
    ]
    boxes = {}
    for i in ids:
        parts = [objects[i - 1] for objects in found if i > 0 and objects[i - 1] is not None]
        if not parts:
            boxes[i] = tuple(slice(0, 0) for _ in truth.shape)
            continue
        boxes[i] = tuple(slice(min(p[a].start for p in parts), max(p[a].stop for p in parts)) for a in range(truth.ndim))
    return boxes


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth
