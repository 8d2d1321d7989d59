"""The working grid: a fixed, isotropic voxel grid in the atlas's physical space.

Every scan is pre-aligned to the atlas and resampled onto this grid, so the networks always see
the same shape. Arrays on the grid follow SimpleITK/numpy order ``(D, H, W) = (z, y, x)``; torch
tensors are ``(B, C, D, H, W)``. The grid's axes are the atlas's axes (same direction cosines).

This module is pure geometry (a grid from an atlas label, resampling onto it, intensity
normalisation) and knows nothing of runs, so it stays here; which grid a stored run uses is
:func:`RRLMedSAMLib.run.config.run_working_grid`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class WorkingGrid:
    """Geometry of the working grid.

    Attributes:
        size_xyz: voxels along x, y, z (SimpleITK order).
        spacing_mm: isotropic voxel size in millimetres.
        origin_xyz: physical position (LPS mm) of voxel (0, 0, 0).
        direction: 3x3 direction cosines, row-major (SimpleITK order).
    """

    size_xyz: tuple[int, int, int]
    spacing_mm: float
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape ``(D, H, W)``."""
        return (self.size_xyz[2], self.size_xyz[1], self.size_xyz[0])

    def reference_image(self, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
        """An empty SimpleITK image carrying this geometry (a resampling reference)."""
        image = sitk.Image([int(s) for s in self.size_xyz], pixel_type)
        image.SetSpacing([self.spacing_mm] * 3)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)
        return image

    def index_to_physical_matrix(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous ``(i, j, k, 1)`` (x, y, z index order) to LPS mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction).reshape(3, 3) * self.spacing_mm
        matrix[:3, 3] = self.origin_xyz
        return matrix

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "WorkingGrid":
        return cls(
            size_xyz=tuple(int(v) for v in data["size_xyz"]),  # type: ignore[arg-type]
            spacing_mm=float(data["spacing_mm"]),
            origin_xyz=tuple(float(v) for v in data["origin_xyz"]),  # type: ignore[arg-type]
            direction=tuple(float(v) for v in data["direction"]),
        )


def label_bounding_box_index(label: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest index ``(x, y, z)`` of the non-zero voxels of ``label``."""
    filter_ = sitk.LabelShapeStatisticsImageFilter()
    filter_.Execute(sitk.Cast(label != 0, sitk.sitkUInt8))
    box = filter_.GetBoundingBox(1)
    start = np.array(box[:3], dtype=float)
    return start, start + np.array(box[3:], dtype=float) - 1


def make_working_grid(
    atlas_label: sitk.Image,
    max_size: int,
    margin_fraction: float = 0.1,
    min_margin_mm: float = 8.0,
    divisor: int = 16,
    min_voxel_mm: float | None = None,
) -> WorkingGrid:
    """A grid around the atlas's labelled region, in the atlas frame.

    The labelled bounding box is enlarged by ``margin_fraction`` of its extent on each side (at
    least ``min_margin_mm``), clipped to the atlas image's field of view, then covered by
    isotropic voxels such that the longest side has ``max_size`` voxels; every side is rounded up
    to a multiple of ``divisor`` (the encoder's down-sampling factor) and the grid re-centred.
    Voxels are never smaller than ``min_voxel_mm`` (then the longest side has fewer voxels); by
    default that is the atlas's finest voxel spacing, so a small field of view (a prostate, 64
    voxels of 0.4 mm) is not up-sampled: up-sampling adds memory and time but no detail, and
    shrinks the anatomy the registration's NCC window and smoothness (set in voxels) cover.
    ``0`` turns the floor off.
    """
    spacing = np.array(atlas_label.GetSpacing())
    if min_voxel_mm is None:
        min_voxel_mm = float(spacing.min())
    low, high = label_bounding_box_index(atlas_label)
    extent_mm = (high - low + 1) * spacing
    margin_vox = np.maximum(extent_mm * margin_fraction, min_margin_mm) / spacing
    image_high = np.array(atlas_label.GetSize(), dtype=float) - 1
    low = np.maximum(low - margin_vox, 0.0)
    high = np.minimum(high + margin_vox, image_high)
    extent_mm = (high - low + 1) * spacing
    voxel_mm = max(float(extent_mm.max() / max_size), min_voxel_mm)
    size = [int(math.ceil(e / voxel_mm / divisor - 1e-6) * divisor) for e in extent_mm]
    direction = np.asarray(atlas_label.GetDirection()).reshape(3, 3)
    center_index = (low + high) / 2.0
    center = np.asarray(atlas_label.TransformContinuousIndexToPhysicalPoint(center_index.tolist()))
    origin = center - direction @ ((np.array(size) - 1) / 2.0 * voxel_mm)
    return WorkingGrid(
        size_xyz=tuple(size),  # type: ignore[arg-type]
        spacing_mm=voxel_mm,
        origin_xyz=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )


def resample_to_grid(
    image: sitk.Image,
    grid: WorkingGrid,
    transform: sitk.Transform | None = None,
    is_label: bool = False,
    default_value: float = 0.0,
) -> np.ndarray:
    """Sample ``image`` on the working grid; returns a ``(D, H, W)`` array.

    ``transform`` maps working-grid (atlas-space) points to ``image`` points (the pre-alignment);
    identity when ``None``. Labels use nearest-neighbour, scans linear interpolation.
    """
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pixel_type = sitk.sitkUInt16 if is_label else sitk.sitkFloat32
    resampled = sitk.Resample(
        image, grid.reference_image(pixel_type), transform or sitk.Transform(), interpolator, default_value, pixel_type
    )
    return sitk.GetArrayFromImage(resampled)


def normalize_intensity(volume: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Map the ``[low, high]`` percentile range of the non-zero voxels to ``[0, 1]`` and clip (float32)."""
    values = volume[volume != 0] if np.count_nonzero(volume) > volume.size * 0.05 else volume.ravel()
    low, high = np.percentile(values, [low_percentile, high_percentile])
    if high <= low:
        high = low + 1.0
    return np.clip((volume - low) / (high - low), 0.0, 1.0).astype(np.float32)
