"""Registration ensemble at ``segment`` (our addition, off by default): register from several starts, vote.

On scans whose boundaries carry little contrast (prostate T2) the deformable registration lands
in a different optimum when its start moves by a millimetre or a few degrees: the warped gland's
volume changes by 10 % or more. ``segment --registration-ensemble N`` registers the atlas N
times, from the affine pre-alignment and from N - 1 copies of it moved by a small random rigid
motion of the atlas about its labelled anatomy's centre, and takes the majority vote of the N
warped atlas labels (SimpleITK's ``LabelVoting``), the classical multi-atlas fusion. A voxel with
no majority keeps the unperturbed registration's label. The saved ``deformation`` and
``warped_atlas_label`` stay the unperturbed registration's; the voted label replaces it where the
segmentation is fused with the registration (atlas-prior runs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

#: Standard deviation (degrees) of each Euler angle of a member's rigid perturbation.
ROTATION_SD_DEG = 3.0
#: Standard deviation (mm) of each component of a member's translation.
SHIFT_SD_MM = 1.0


def anatomy_centre(atlas_label: sitk.Image) -> tuple[float, float, float]:
    """Centroid (LPS mm) of the atlas label's non-zero voxels: the point perturbations rotate about."""
    foreground = sitk.Cast(atlas_label > 0, sitk.sitkUInt8)
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(foreground)
    return tuple(float(v) for v in statistics.GetCentroid(1))


def perturbed_prealignments(
    atlas_to_scan: sitk.Transform, centre: Sequence[float], members: int, seed: int
) -> list[sitk.AffineTransform]:
    """``members`` affine starts (atlas point -> scan point): the pre-alignment itself, then perturbed copies.

    Member k > 0 first moves the atlas point by a rigid motion about ``centre`` (Euler angles drawn
    with sd :data:`ROTATION_SD_DEG`, translation with sd :data:`SHIFT_SD_MM`), then applies
    ``atlas_to_scan``. The draws depend only on ``seed``, so a run is reproducible.
    """
    if members < 1:
        raise ValueError(f"an ensemble needs at least one member, not {members}")
    rng = np.random.default_rng([int(seed), 20250])
    matrix = np.array(atlas_to_scan.GetMatrix()).reshape(3, 3)
    offset = _offset(atlas_to_scan)
    starts = [_affine(matrix, offset)]
    for _ in range(members - 1):
        angles = np.deg2rad(rng.normal(0.0, ROTATION_SD_DEG, 3))
        shift = rng.normal(0.0, SHIFT_SD_MM, 3)
        motion = sitk.Euler3DTransform(tuple(centre), *angles, tuple(shift))
        motion_matrix = np.array(motion.GetMatrix()).reshape(3, 3)
        starts.append(_affine(matrix @ motion_matrix, matrix @ _offset(motion) + offset))
    return starts


def _offset(transform: sitk.Transform) -> np.ndarray:
    """``b`` of the transform written as ``x -> A x + b``."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre = np.array(transform.GetCenter())
    return np.array(transform.GetTranslation()) + centre - matrix @ centre


def _affine(matrix: np.ndarray, offset: np.ndarray) -> sitk.AffineTransform:
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(matrix.ravel().tolist())
    affine.SetTranslation(offset.tolist())
    return affine


def vote(labelmaps: Sequence[sitk.Image]) -> sitk.Image:
    """Majority vote of labelmaps on one grid (integer ids); a voxel without a majority keeps the first's label."""
    if len(labelmaps) == 1:
        return labelmaps[0]
    members = [sitk.Cast(image, sitk.sitkUInt32) for image in labelmaps]
    undecided = max(int(np.max(sitk.GetArrayViewFromImage(member))) for member in members) + 1
    voted = sitk.LabelVoting(members, undecided)
    result = sitk.Cast(sitk.Mask(voted, voted != undecided) + sitk.Mask(members[0], voted == undecided),
                       labelmaps[0].GetPixelID())
    result.CopyInformation(labelmaps[0])
    return result
