"""Volume-keeping label smoothing: a shape prior applied to the final segmentation at ``segment``.

A registration moves the atlas's boundary voxel by voxel, and on scans whose boundaries carry
little contrast (prostate T2) the warped label comes out ragged where the true organ is a smooth
blob. Each structure's mask is blurred by a Gaussian of ``sigma_mm`` (physical units, so
anisotropic voxels are handled) and cut at the level that keeps its voxel count: the boundary
becomes smooth, the volume and position stay. A voxel that two structures claim goes to the one
whose blurred value lies further above its own cut; a voxel no structure claims is background.

``auto`` chooses the sigma per structure and scan without labels: the smallest sigma of
:data:`SIGMA_LADDER_MM` whose result is no rougher than the same structure in the atlas label
(:func:`boundary_roughness`), so a boundary is smoothed as far as the annotator's own and no
further.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: The value of ``--label-smoothing-mm`` that chooses each structure's sigma from the atlas.
AUTO = "auto"
#: A fixed Gaussian sigma in mm (0 = off), or :data:`AUTO`.
LabelSmoothing = float | str
#: The sigmas (mm) ``auto`` tries in turn, 0.25 to 4 mm in steps of a factor sqrt(2).
SIGMA_LADDER_MM = tuple(0.25 * 2 ** (step / 2) for step in range(9))
#: The blur is computed in a box around each structure, this many sigmas wide on each side.
BOX_MARGIN_SIGMAS = 3.0
#: The recursive Gaussian needs at least this many voxels along each axis; a structure whose box is
#: thinner (a scan only a few voxels thick) is kept as it is.
MIN_BOX_VOXELS = 4

#: ``(labels, label, box found, spacing xyz) -> (box used, margin above the cut, sigma mm)``.
SigmaChooser = Callable[[np.ndarray, int, tuple[slice, ...], tuple[float, ...]], tuple[tuple[slice, ...], np.ndarray, float]]


def parse_label_smoothing(text: str) -> LabelSmoothing:
    """``auto`` or a finite number of mm, 0 or more; anything else raises ``ValueError``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        sigma = float(text)
    except ValueError:
        sigma = math.nan
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"must be 0 or more (mm) or 'auto', not {text!r}")
    return sigma


def boundary_roughness(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Boundary area over volume^(2/3) of a boolean ``(z, y, x)`` mask; dimensionless, larger = rougher.

    The area counts voxel faces between inside and outside (mm^2), which for a structure many
    voxels across tends to the sum of its projected areas whatever the voxel size; a ragged
    fringe adds faces. A sphere scores about 7.2, a cube 6; an empty mask scores 0.
    """
    voxels = int(np.count_nonzero(mask))
    if voxels == 0:
        return 0.0
    volume = voxels * float(np.prod(spacing_zyx))
    area = 0.0
    for axis in range(3):
        faces = np.count_nonzero(np.diff(mask.astype(np.int8), axis=axis, prepend=0, append=0))
        area += faces * float(np.prod([s for i, s in enumerate(spacing_zyx) if i != axis]))
    return float(area / volume ** (2 / 3))


def atlas_roughness(atlas_label: sitk.Image) -> dict[int, float]:
    """:func:`boundary_roughness` of every structure of ``atlas_label``, keyed by label id."""
    labels = sitk.GetArrayViewFromImage(atlas_label)
    spacing_zyx = atlas_label.GetSpacing()[::-1]
    return {label: boundary_roughness(labels[box] == label, spacing_zyx)
            for label, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None}


def _grown(box: tuple[slice, ...], margin_voxels: Sequence[int], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` (``(z, y, x)`` slices) grown by ``margin_voxels`` on each side, clipped to ``shape``."""
    return tuple(slice(max(b.start - m, 0), min(b.stop + m, size)) for b, m, size in zip(box, margin_voxels, shape))


def _blurred(mask: np.ndarray, spacing_xyz: tuple[float, ...], sigma_mm: float) -> np.ndarray:
    """Gaussian blur (``sigma_mm``, physical) of a boolean ``(z, y, x)`` array on a grid of ``spacing_xyz`` mm."""
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.SetSpacing(spacing_xyz)
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_mm))


def _ranking(mask: np.ndarray, spacing_xyz: tuple[float, ...], sigma_mm: float) -> np.ndarray:
    """Per voxel, how strongly it belongs to ``mask``: the Gaussian blur at ``sigma_mm``, or at 0 the signed distance (mm, > 0 inside)."""
    if sigma_mm > 0:
        return _blurred(mask, spacing_xyz, sigma_mm)
    spacing_zyx = spacing_xyz[::-1]
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_zyx)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_zyx)
    return (inside - outside).astype(np.float32)


def _growth_margin_mm(voxels: int, keep_voxels: int, spacing_xyz: tuple[float, ...]) -> float:
    """How far (mm) a structure of ``voxels`` may reach when grown to ``keep_voxels``, with room to spare."""
    if keep_voxels <= voxels:
        return 0.0
    radius = (3.0 * voxels * float(np.prod(spacing_xyz)) / (4.0 * math.pi)) ** (1.0 / 3.0)
    return 2.0 * radius * ((keep_voxels / voxels) ** (1.0 / 3.0) - 1.0) + 2.0 * max(spacing_xyz)


def _ties_broken(above: np.ndarray, kept: int) -> np.ndarray:
    """``above`` with voxels tied at the cut (0) left outside, in index order, until exactly ``kept`` are >= 0."""
    tied = np.flatnonzero(above.ravel() == 0)
    surplus = int(np.count_nonzero(above >= 0)) - kept
    if surplus > 0:
        above = above.copy()
        above.ravel()[tied[len(tied) - surplus:]] = np.float32(-1e-6)
    return above


def _cut(labels: np.ndarray, label: int, found: tuple[slice, ...], spacing_xyz: tuple[float, ...],
         sigma_mm: float, keep_voxels: int | None = None) -> tuple[tuple[slice, ...], np.ndarray, float]:
    """The box around ``label``, each voxel's margin above the cut (>= 0 = inside), the sigma used.

    The cut keeps the structure's voxel count, or ``keep_voxels`` when given (grown or shrunk along
    the blurred boundary). The sigma used is 0 when ``sigma_mm`` is 0 or the box is too thin to
    blur: without ``keep_voxels`` the mask is then kept.
    """
    if sigma_mm > 0 or keep_voxels is not None:
        reach_mm = BOX_MARGIN_SIGMAS * sigma_mm
        if keep_voxels is not None:
            reach_mm += _growth_margin_mm(int(np.count_nonzero(labels[found] == label)), keep_voxels, spacing_xyz)
        margin = [max(2, math.ceil(reach_mm / s)) for s in spacing_xyz[::-1]]
        box = _grown(found, margin, labels.shape)
        mask = labels[box] == label
        if min(mask.shape) >= MIN_BOX_VOXELS:
            ranking = _ranking(mask, spacing_xyz, sigma_mm)
            kept = int(mask.sum()) if keep_voxels is None else min(max(keep_voxels, 1), mask.size)
            kept_rank = ranking.size - kept
            above = ranking - np.partition(ranking.ravel(), kept_rank)[kept_rank]
            return box, above if keep_voxels is None else _ties_broken(above, kept), sigma_mm
    return found, np.where(labels[found] == label, np.float32(0), np.float32(-1)), 0.0


def _smoothed(labelmap: sitk.Image, choose: SigmaChooser,
              keep_voxels: dict[int, int] | None = None) -> tuple[sitk.Image, dict[int, float]]:
    """Each structure cut as ``choose`` says, overlaps given to the larger margin; returns the sigmas used.

    A label in ``keep_voxels`` is then cut again at the sigma chosen, to that voxel count.
    """
    labels = sitk.GetArrayFromImage(labelmap)
    spacing_xyz = labelmap.GetSpacing()
    best_margin = np.zeros(labels.shape, np.float32)
    result = np.zeros_like(labels)
    sigmas: dict[int, float] = {}
    for label, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        box, above, sigmas[label] = choose(labels, label, found, spacing_xyz)
        if keep_voxels and label in keep_voxels:
            box, above, _ = _cut(labels, label, found, spacing_xyz, sigmas[label], keep_voxels[label])
        region_margin, region_result = best_margin[box], result[box]
        claims = (above >= 0) & ((region_result == 0) | (above > region_margin))
        region_margin[claims] = above[claims]
        region_result[claims] = label
    smoothed = sitk.GetImageFromArray(result)
    smoothed.CopyInformation(labelmap)
    return smoothed, sigmas


def _fixed(sigma_mm: float) -> SigmaChooser:
    """Every structure at ``sigma_mm``."""
    def choose(labels: np.ndarray, label: int, found: tuple[slice, ...], spacing_xyz: tuple[float, ...]):
        return _cut(labels, label, found, spacing_xyz, sigma_mm)
    return choose


def smooth_labels_keeping_volumes(labelmap: sitk.Image, sigma_mm: float) -> sitk.Image:
    """``labelmap`` (integer ids, any grid) with each structure's boundary smoothed at ``sigma_mm``; same grid and ids.

    ``sigma_mm`` <= 0 returns the labelmap unchanged. Each structure keeps its voxel count up to
    ties at its cut and to voxels lost to a neighbour that claims them more strongly.
    """
    return labelmap if sigma_mm <= 0 else _smoothed(labelmap, _fixed(sigma_mm))[0]


def smooth_labels_matching_atlas(labelmap: sitk.Image, roughness: dict[int, float],
                                 keep_voxels: dict[int, int] | None = None) -> tuple[sitk.Image, dict[int, float]]:
    """``labelmap`` with each structure smoothed until it is no rougher than ``roughness[label]``.

    ``roughness`` comes from :func:`atlas_roughness`. A structure already as smooth, one the atlas
    lacks and one too thin to blur keep sigma 0; one still rougher at the ladder's top gets 4 mm.
    Returns the smoothed labelmap and the sigma (mm) chosen for each label present. A label in
    ``keep_voxels`` is finally resized to that voxel count along its boundary smoothed at its sigma.
    """
    def matched(labels: np.ndarray, label: int, found: tuple[slice, ...], spacing_xyz: tuple[float, ...]):
        spacing_zyx = spacing_xyz[::-1]
        box, above, used = _cut(labels, label, found, spacing_xyz, 0.0)
        target = roughness.get(label)
        if target is None or boundary_roughness(above >= 0, spacing_zyx) <= target:
            return box, above, used
        for sigma in SIGMA_LADDER_MM:
            box, above, used = _cut(labels, label, found, spacing_xyz, sigma)
            if used == 0 or boundary_roughness(above >= 0, spacing_zyx) <= target:
                break
        return box, above, used

    return _smoothed(labelmap, matched, keep_voxels)


def apply_label_smoothing(labelmap: sitk.Image, setting: LabelSmoothing, roughness: dict[int, float] | None,
                          keep_voxels: dict[int, int] | None = None) -> tuple[sitk.Image, dict[int, float]]:
    """``setting`` applied, and the sigma (mm) used for each label present (0: left as it was; empty when off).

    :data:`AUTO` matches ``roughness`` (required then); a number is a fixed sigma in mm, 0 = off.
    ``keep_voxels`` (label id -> voxel count) resizes those labels to the given counts instead of
    keeping their volumes (with smoothing off, along their signed distance).
    """
    if setting == AUTO:
        if roughness is None:
            raise ValueError("label smoothing 'auto' needs the atlas's roughness")
        return smooth_labels_matching_atlas(labelmap, roughness, keep_voxels)
    sigma = float(setting)
    if sigma <= 0 and not keep_voxels:
        return labelmap, {}
    smoothed, sigmas = _smoothed(labelmap, _fixed(max(sigma, 0.0)), keep_voxels)
    return smoothed, sigmas if sigma > 0 else {}
