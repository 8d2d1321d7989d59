"""Paint T1-like images on brain label maps (real anatomy, synthetic contrast).

The intensity of every FreeSurfer aseg structure is measured on one real skull-stripped T1 scan
(``vxm_test_scan.npz``: keys ``vol`` in [0, 1] and ``seg`` with aseg ids). A label map is then
painted with those statistics, blurred (partial volume), multiplied by a smooth bias field and
given Rician noise, with a fixed random seed per subject.

Background mapping (skull stripping): ids >= 100 (extra-cerebral tissue of the SynthSeg maps)
and 24 (CSF around the brain) become 0 in both the painted image and the kept label map.

Fallback for ids (1..99) present in a label map but absent from the reference scan: the other
hemisphere's structure (:data:`MIRROR`), else a related structure (:data:`FALLBACK_IDS`, e.g.
25/57 "lesion" take the statistics of 77 "WM-hypointensities"), else the voxel-weighted mean of
the id's tissue class (:data:`TISSUE_CLASS`, grey matter by default).
Arrays are numpy ``(z, y, x)`` as returned by ``sitk.GetArrayFromImage``; spacing in mm.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from RRLMedSAMLib.errors import InputError

#: Ids at or above this value are extra-cerebral (skull, scalp, eyes...) in SynthSeg label maps.
EXTRA_CEREBRAL_MIN_ID = 100
#: Ids below 100 that are removed as well: 24 = CSF around the brain.
REMOVED_BRAIN_IDS = (24,)
#: Left/right aseg pairs: a structure missing from the reference scan first borrows its mirror's statistics.
MIRROR_PAIRS = ((2, 41), (3, 42), (4, 43), (5, 44), (7, 46), (8, 47), (10, 49), (11, 50), (12, 51), (13, 52),
                (17, 53), (18, 54), (25, 57), (26, 58), (28, 60), (30, 62), (31, 63))
MIRROR = {**dict(MIRROR_PAIRS), **{b: a for a, b in MIRROR_PAIRS}}
#: Then the statistics of a related structure (25/57 lesions look like WM hypointensities, ...).
FALLBACK_IDS = {25: 77, 57: 77, 5: 4, 44: 43, 72: 14, 30: 10, 62: 49, 31: 4, 63: 43, 80: 77, 26: 11, 58: 50}
#: Last resort: the voxel-weighted mean of the id's coarse tissue class (unknown ids count as grey matter).
TISSUE_CLASS = {
    **{i: "wm" for i in (2, 7, 16, 28, 41, 46, 60, 85, 251, 252, 253, 254, 255)},
    **{i: "csf" for i in (4, 5, 14, 15, 24, 31, 43, 44, 63, 72)},
    **{i: "hypointensity" for i in (77, 80)},  # kept out of the class means
}

IntensityStats = dict[int, tuple[float, float]]


def brain_only(labels: np.ndarray) -> np.ndarray:
    """Copy of an integer label array with extra-cerebral ids (>= 100, and 24) set to 0."""
    out = np.asarray(labels).copy()
    out[(out >= EXTRA_CEREBRAL_MIN_ID) | np.isin(out, REMOVED_BRAIN_IDS)] = 0
    return out


def measure_intensity_stats(volume: np.ndarray, segmentation: np.ndarray) -> IntensityStats:
    """Mean and standard deviation of ``volume`` inside every non-zero id of ``segmentation``."""
    seg = np.asarray(segmentation).astype(np.int64).ravel()
    vol = np.asarray(volume, dtype=np.float64).ravel()
    counts = np.bincount(seg)
    sums = np.bincount(seg, weights=vol)
    squares = np.bincount(seg, weights=vol * vol)
    stats: IntensityStats = {}
    for label_id in np.nonzero(counts)[0]:
        if label_id == 0:
            continue
        mean = sums[label_id] / counts[label_id]
        var = max(squares[label_id] / counts[label_id] - mean * mean, 0.0)
        stats[int(label_id)] = (float(mean), float(np.sqrt(var)))
    stats[0] = (0.0, 0.0)
    class_stats = _class_stats(stats, counts)
    measured = dict(stats)
    for label_id in range(1, EXTRA_CEREBRAL_MIN_ID):
        if label_id in measured:
            continue
        donors = [d for d in (MIRROR.get(label_id), FALLBACK_IDS.get(label_id)) if d in measured]
        tissue = TISSUE_CLASS.get(label_id, "gm")
        stats[label_id] = measured[donors[0]] if donors else class_stats.get(tissue, class_stats["gm"])
    return stats


def _class_stats(stats: IntensityStats, counts: np.ndarray) -> dict[str, tuple[float, float]]:
    result = {}
    for name in ("wm", "gm", "csf"):
        ids = [i for i in stats if i > 0 and TISSUE_CLASS.get(i, "gm") == name and i < len(counts)]
        if not ids:
            result[name] = (0.25, 0.04)
            continue
        weights = np.array([counts[i] for i in ids], dtype=float)
        result[name] = (
            float(np.average([stats[i][0] for i in ids], weights=weights)),
            float(np.average([stats[i][1] for i in ids], weights=weights)),
        )
    return result


def load_reference_stats(path: str | os.PathLike) -> IntensityStats:
    """Intensity statistics from a reference scan ``.npz`` with keys ``vol`` and ``seg``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Reference scan not found: {path}. Pass the vxm_test_scan.npz file (keys vol, seg).")
    try:
        with np.load(path) as data:
            volume, seg = data["vol"], data["seg"]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(
            f"Cannot read reference scan {path} ({error}); it must be an .npz with keys 'vol' and 'seg'."
        ) from None
    if volume.shape != seg.shape or volume.ndim != 3:
        raise InputError(f"Reference scan {path}: 'vol' {volume.shape} and 'seg' {seg.shape} must be equal 3-D shapes.")
    if not np.isfinite(volume).all() or not np.array_equal(seg, np.round(seg)) or seg.min() < 0:
        raise InputError(f"Reference scan {path}: 'vol' must be finite and 'seg' must hold non-negative integer ids.")
    return measure_intensity_stats(volume, seg.astype(np.int64))


def subject_seed(name: str, seed: int) -> int:
    """A stable 63-bit seed from a subject name and the user's seed (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(f"{name}:{int(seed)}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth positive multiplicative field, ``exp`` of a cubic-upsampled 4x4x4 random grid."""
    coarse = rng.normal(0.0, strength, size=(4, 4, 4))
    zoom = [s / 4 for s in shape]
    field = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    return np.exp(field).astype(np.float32)


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Slices of the smallest box holding every true voxel of a non-empty ``mask``, grown by ``margin``."""
    box = []
    for axis in range(mask.ndim):
        hits = np.nonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, mask.shape[axis])))
    return tuple(box)


def paint_t1(
    labels: np.ndarray,
    stats: IntensityStats,
    spacing_zyx: tuple[float, float, float],
    rng: np.random.Generator,
    noise: float = 0.012,
    bias_strength: float = 0.1,
    blur_mm: float = 0.6,
) -> np.ndarray:
    """Paint a T1-like float32 image, shape of ``labels`` (z, y, x), background exactly 0.

    ``labels`` must already be brain-only (see :func:`brain_only`). Per subject, structure means are
    jittered by 3 %, a smooth texture scaled by half the measured std is added, then partial-volume
    blur (Gaussian, ``blur_mm`` sigma), a bias field and Rician noise of sigma ``noise`` (image units,
    white matter is about 0.4). Work happens in the brain's bounding box for speed.
    """
    labels = np.asarray(labels)
    image = np.zeros(labels.shape, dtype=np.float32)
    mask = labels > 0
    if not mask.any():
        return image
    box = bounding_box(mask, margin=4)
    crop = labels[box].astype(np.int64)
    ids = np.unique(crop)
    lut_mean = np.zeros(int(ids.max()) + 1, dtype=np.float32)
    lut_std = np.zeros_like(lut_mean)
    for label_id in ids:
        mean, std = stats.get(int(label_id), stats.get(FALLBACK_IDS.get(int(label_id), -1), (0.25, 0.04)))
        lut_mean[label_id] = mean * (1.0 + rng.normal(0.0, 0.03)) if label_id else 0.0
        lut_std[label_id] = std
    texture = ndimage.gaussian_filter(rng.standard_normal(crop.shape, dtype=np.float32), 1.0)
    texture /= max(float(texture.std()), 1e-6)
    painted = lut_mean[crop] + 0.5 * lut_std[crop] * texture
    sigma = [blur_mm / s for s in spacing_zyx]
    painted = ndimage.gaussian_filter(painted, sigma)
    painted *= _bias_field(painted.shape, rng, bias_strength)
    real = painted + rng.normal(0.0, noise, size=painted.shape).astype(np.float32)
    imag = rng.normal(0.0, noise, size=painted.shape).astype(np.float32)
    painted = np.sqrt(real * real + imag * imag)
    keep = ndimage.binary_dilation(crop > 0, iterations=1)
    image[box] = np.where(keep, painted, 0.0).astype(np.float32)
    return image
