"""Deformation fields in ITK/Slicer convention, and mapping working-grid results to a scan.

Convention of every field written here: a displacement ``u`` in physical LPS millimetres, stored
on the scan's own grid, in the *resampling* direction: for a point ``x`` of the scan,
``x + u(x)`` is the matching atlas point. Slicer reads such a file as a grid transform that is
the transform's FromParent; SimpleITK reads it with ``DisplacementFieldTransform``.

The network's displacement lives on the working grid, in voxel units, channels ``(dz, dy, dx)``
matching the tensor axes ``(D, H, W)``. The complete atlas<->scan correspondence composes it with
the affine pre-alignment ``T`` (atlas point -> scan point):

    y = T^-1(x),   atlas point = y + U(y),   u(x) = T^-1(x) + U(T^-1(x)) - x

where ``U`` is the network displacement converted to millimetres.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.io.atomic import atomic_path


def voxel_ddf_to_mm(ddf_zyx: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """Network displacement ``(3, D, H, W)`` in voxels ``(dz, dy, dx)`` -> ``(D, H, W, 3)`` LPS mm ``(x, y, z)``."""
    index_xyz = np.stack([ddf_zyx[2], ddf_zyx[1], ddf_zyx[0]], axis=-1).astype(np.float64)
    direction = np.asarray(grid.direction).reshape(3, 3)
    return index_xyz @ (direction * grid.spacing_mm).T


def grid_vector_image(vectors: np.ndarray, grid: WorkingGrid) -> sitk.Image:
    """Wrap a ``(D, H, W, 3)`` array as a float64 vector image on the working grid."""
    image = sitk.GetImageFromArray(vectors.astype(np.float64), isVector=True)
    image.SetSpacing([grid.spacing_mm] * 3)
    image.SetOrigin(grid.origin_xyz)
    image.SetDirection(grid.direction)
    return image


def mm_to_voxel_ddf(vectors_mm: np.ndarray, grid: WorkingGrid) -> np.ndarray:
    """Inverse of :func:`voxel_ddf_to_mm`: ``(D, H, W, 3)`` LPS mm -> ``(3, D, H, W)`` voxels ``(dz, dy, dx)`` (float32)."""
    index_xyz = vectors_mm @ np.asarray(grid.direction).reshape(3, 3) / grid.spacing_mm
    return np.stack([index_xyz[..., 2], index_xyz[..., 1], index_xyz[..., 0]]).astype(np.float32)


def resample_voxel_ddf(ddf_zyx: np.ndarray, source: WorkingGrid, target: WorkingGrid) -> np.ndarray:
    """A working-grid displacement ``(3, D, H, W)`` (``source`` voxels) sampled on ``target``, in ``target`` voxels.

    Both grids live in the atlas frame, so the field is resampled as physical millimetres
    (linear interpolation, nearest value beyond ``source``) and converted back to voxels.
    """
    field = grid_vector_image(voxel_ddf_to_mm(ddf_zyx, source), source)
    reference = target.reference_image(sitk.sitkVectorFloat64)
    on_target = sitk.Resample(field, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64, True)
    return mm_to_voxel_ddf(sitk.GetArrayFromImage(on_target), target)


def compose_scan_displacement(
    scan_reference: sitk.Image, atlas_to_scan: sitk.Transform, grid: WorkingGrid, ddf_zyx: np.ndarray
) -> sitk.Image:
    """The complete atlas<->scan field on the scan's grid (vector float64, LPS mm).

    Args:
        scan_reference: any image on the scan's grid (only its geometry is used).
        atlas_to_scan: the affine pre-alignment (atlas point -> scan point).
        grid: the working grid the network ran on.
        ddf_zyx: network displacement ``(3, D, H, W)`` in working-grid voxels.

    Beyond the working grid the network displacement is extended by its nearest value.
    """
    scan_to_atlas = atlas_to_scan.GetInverse()
    affine_part = sitk.TransformToDisplacementField(
        scan_to_atlas,
        sitk.sitkVectorFloat64,
        scan_reference.GetSize(),
        scan_reference.GetOrigin(),
        scan_reference.GetSpacing(),
        scan_reference.GetDirection(),
    )
    network_field = grid_vector_image(voxel_ddf_to_mm(ddf_zyx, grid), grid)
    network_part = sitk.Resample(
        network_field, scan_reference, scan_to_atlas, sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64, True
    )
    return affine_part + network_part


def warp_atlas_to_scan(atlas: sitk.Image, displacement: sitk.Image, is_label: bool) -> sitk.Image:
    """Resample an atlas image or label onto the displacement field's (scan) grid through it."""
    transform = sitk.DisplacementFieldTransform(sitk.Cast(displacement, sitk.sitkVectorFloat64))
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(atlas, displacement, transform, interpolator, 0, atlas.GetPixelID())


def folding_fraction(displacement: sitk.Image) -> float:
    """Fraction of voxels where the mapping ``x -> x + u(x)`` folds (Jacobian determinant <= 0).

    The outermost voxel layer is left out: there the derivatives are one-sided (ITK assumes a
    zero normal derivative), which reports folds that the field does not have.
    """
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(displacement))
    if min(jacobian.shape) > 2:
        jacobian = jacobian[1:-1, 1:-1, 1:-1]
    return float((jacobian <= 0).mean())


def write_displacement_field(displacement: sitk.Image, path: str | os.PathLike) -> None:
    """Write the field as float32 vectors, atomically (NRRD keeps ``space: left-posterior-superior``)."""
    with atomic_path(path) as temp:
        sitk.WriteImage(sitk.Cast(displacement, sitk.sitkVectorFloat32), str(temp), True)


def _class_maps_on_scan(
    maps: np.ndarray, grid: WorkingGrid, scan_reference: sitk.Image, atlas_to_scan: sitk.Transform,
    background_outside: float,
) -> Iterator[np.ndarray]:
    """Each working-grid map of ``maps`` ``(K, D, H, W)`` resampled linearly onto the scan grid, one at a time.

    Outside the working grid the samples are 0, except class 0's, which are ``background_outside``.
    """
    scan_to_atlas = atlas_to_scan.GetInverse()
    reference = grid.reference_image()
    for index, class_map in enumerate(maps):
        image = sitk.GetImageFromArray(class_map.astype(np.float32))
        image.CopyInformation(reference)
        outside = background_outside if index == 0 else 0.0
        yield sitk.GetArrayFromImage(sitk.Resample(image, scan_reference, scan_to_atlas, sitk.sitkLinear, outside, sitk.sitkFloat32))


def _running_argmax(scores: Iterable[np.ndarray]) -> np.ndarray:
    """Index of the largest of a stream of equally shaped score arrays (ties: the first), as uint16.

    Only the best value and its index are kept, so memory stays at two arrays whatever the count.
    """
    best_value = best_class = None
    for index, score in enumerate(scores):
        if best_value is None:
            best_value, best_class = score, np.zeros(score.shape, np.uint16)
        else:
            better = score > best_value
            best_value = np.where(better, score, best_value)
            best_class[better] = index
    if best_class is None:
        raise ValueError("no class maps given")
    return best_class


def map_probabilities_to_scan(
    probabilities: np.ndarray, grid: WorkingGrid, scan_reference: sitk.Image, atlas_to_scan: sitk.Transform
) -> np.ndarray:
    """Class index per scan voxel from working-grid probabilities ``(K, D, H, W)``.

    Each class map is resampled (linearly) through the pre-alignment onto the scan grid and the
    running maximum kept, so memory stays at two scan-sized arrays whatever ``K`` is. Outside the
    working grid every voxel is background (class 0). Returns a ``(z, y, x)`` uint16 array.
    """
    return _running_argmax(_class_maps_on_scan(probabilities, grid, scan_reference, atlas_to_scan, 1.0))


def fuse_correction_on_scan(
    correction: np.ndarray, registration_classes: np.ndarray, grid: WorkingGrid, scan_reference: sitk.Image,
    atlas_to_scan: sitk.Transform, floor: float,
) -> np.ndarray:
    """Atlas-prior fusion at the scan's own resolution; class index per scan voxel.

    ``score_c(x) = log(prior_c(x) + floor) + correction_c(x)``, where the prior is the one-hot of
    ``registration_classes`` (the registration-only label on the scan grid, ``(z, y, x)`` class
    indices) and ``correction`` ``(K, D, H, W)`` the network's working-grid logits (any per-voxel
    offset is harmless), resampled linearly through the pre-alignment (0 outside the grid). Class
    by class with a running maximum, so memory stays at a few scan-sized arrays. With a zero
    correction the result is exactly ``registration_classes``; boundaries the network leaves alone
    keep the full-resolution registration, and those it moves move smoothly rather than by
    working-grid blocks. Returns a uint16 ``(z, y, x)`` array.
    """
    log_hit, log_miss = np.float32(np.log1p(floor)), np.float32(np.log(floor))
    sampled = _class_maps_on_scan(correction, grid, scan_reference, atlas_to_scan, 0.0)
    return _running_argmax(
        values + np.where(registration_classes == index, log_hit, log_miss) for index, values in enumerate(sampled)
    )
