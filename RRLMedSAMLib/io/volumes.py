"""Read and validate 3-D scans and labelmaps (NIfTI, NRRD incl. Slicer ``.seg.nrrd``, MHA).

Every reader returns a SimpleITK image whose spacing, origin and direction are the file's own;
nothing here resamples. Problems the user can fix raise :class:`InputError` with a message that
names the file and says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.io.stored_data import check_stored_data

SUPPORTED_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Two grids are "the same" when spacing/origin agree to this many millimetres and direction
#: cosines to this tolerance.
GRID_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4


def volume_stem(path: str | os.PathLike) -> str:
    """File name without its image extension: ``/a/case01.nii.gz`` -> ``case01``."""
    name = Path(path).name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _read(path: str | os.PathLike, what: str) -> sitk.Image:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if path.is_dir():
        raise InputError(f"{what} must be a file, got a folder: {path}")
    check_stored_data(path, what)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(
            f"Cannot read {what} {path}: not a readable NIfTI/NRRD/MHA image ({first_line})."
        ) from None
    spacing = image.GetSpacing()
    if any(not np.isfinite(v) or v <= 0 for v in spacing):
        raise InputError(f"{what} {path} has zero or negative voxel spacing ({', '.join(f'{v:g}' for v in spacing)} mm); "
                         "fix the file's header.")
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        values = sitk.GetArrayViewFromImage(image)
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise InputError(f"{what} {path} contains {bad} NaN or infinite voxels; fix or mask them first.")
    return image


def _check_3d(image: sitk.Image, path: str | os.PathLike, what: str) -> sitk.Image:
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(
            f"{what} {path} has {image.GetDimension()} dimensions {tuple(size)}; a single 3-D volume "
            "is required (split 4-D series and stack 2-D slices first)."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} {path} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a scalar (grey-level) volume is required."
        )
    if min(size) < 4:
        raise InputError(f"{what} {path} is {size} voxels: every axis needs at least 4 voxels.")
    return image


def read_scan(path: str | os.PathLike, what: str = "Image") -> sitk.Image:
    """Read a 3-D scalar scan as float32, rejecting other dimensionalities and NaN/inf voxels."""
    image = _check_3d(_read(path, what), path, what)
    image = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{what} {path} contains {bad} NaN or infinite voxels; fix or mask them first.")
    return image


def read_label(path: str | os.PathLike, what: str = "Label") -> sitk.Image:
    """Read a 3-D integer labelmap (0 = background) as UInt16.

    Float files are accepted when every value is a whole number (label maps are often stored as
    float32); fractional, negative or NaN values are rejected.
    """
    image = _check_3d(_read(path, what), path, what)
    values = sitk.GetArrayFromImage(image)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise InputError(f"{what} {path} contains NaN or infinite values; a labelmap holds integer ids.")
        if not np.array_equal(values, np.round(values)):
            raise InputError(
                f"{what} {path} holds non-integer values (e.g. {values[values != np.round(values)].flat[0]:g}); "
                "a labelmap must hold integer structure ids. Did you pass an image instead of its label?"
            )
    if values.min() < 0 or values.max() > 65535:
        raise InputError(f"{what} {path} has ids outside 0..65535 (min {values.min()}, max {values.max()}).")
    label = sitk.GetImageFromArray(values.astype(np.uint16))
    label.CopyInformation(image)
    return label


#: The smallest scan the networks and the affine pre-alignment can use: voxels per axis, and the
#: extent per axis in working-grid voxels (the pre-alignment's coarsest level shrinks by 4).
MIN_VOXELS = 8
MIN_GRID_VOXELS = 12
#: Above this ratio of largest to smallest voxel side, a too-thin scan is called anisotropic in the message.
ANISOTROPY_NOTE = 10.0


def check_registrable(image: sitk.Image, path: str | os.PathLike, what: str, grid_spacing_mm: float) -> None:
    """Refuse a scan that cannot be registered: constant, too few voxels, or too thin for the working grid."""
    size, spacing = image.GetSize(), image.GetSpacing()
    if min(size) < MIN_VOXELS:
        raise InputError(f"{what} {path} is {size[0]}x{size[1]}x{size[2]} voxels, too small: every axis needs at "
                         f"least {MIN_VOXELS} voxels.")
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(values.min()), float(values.max())
    if low == high:
        raise InputError(f"{what} {path} is constant (every voxel is {low:g}): there is nothing to register. "
                         "Pass the scan itself, not an empty or masked volume.")
    extent = [n * s for n, s in zip(size, spacing)]
    needed = MIN_GRID_VOXELS * float(grid_spacing_mm)
    thin = [axis for axis, e in enumerate(extent) if e < needed]
    if thin:
        axis = thin[0]
        note = ""
        if max(spacing) / min(spacing) > ANISOTROPY_NOTE:
            note = (f" Its voxels are extremely anisotropic ({' x '.join(f'{v:g}' for v in spacing)} mm): resample "
                    "it to a less anisotropic grid covering the anatomy first.")
        raise InputError(f"{what} {path} spans only {extent[axis]:.3g} mm along axis {axis} ({size[axis]} voxels of "
                         f"{spacing[axis]:g} mm); registration needs at least {needed:.3g} mm ({MIN_GRID_VOXELS} voxels "
                         f"of the working grid, {float(grid_spacing_mm):.3g} mm) along every axis.{note}")


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True when both images have the same size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=GRID_TOLERANCE_MM)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GRID_TOLERANCE_MM)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=DIRECTION_TOLERANCE)
    )


def fit_label_to_image(label: sitk.Image, image: sitk.Image, label_path: str | os.PathLike) -> sitk.Image:
    """Return ``label`` on ``image``'s grid, or raise when the two grids do not match.

    A label whose voxels lie exactly on the image's lattice (same spacing and direction, origin
    shifted by whole voxels, as in a cropped Slicer ``.seg.nrrd``) is padded/cropped onto the image
    grid without interpolation. Anything else is an error: interpolating a label silently would
    move its boundaries.
    """
    if same_grid(label, image):
        return label
    lattice_ok = np.allclose(label.GetSpacing(), image.GetSpacing(), atol=GRID_TOLERANCE_MM) and np.allclose(
        label.GetDirection(), image.GetDirection(), atol=DIRECTION_TOLERANCE
    )
    if lattice_ok:
        index = np.array(image.TransformPhysicalPointToContinuousIndex(label.GetOrigin()))
        if np.allclose(index, np.round(index), atol=1e-3):
            resampled = sitk.Resample(label, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
            kept = int(sitk.GetArrayViewFromImage(resampled).astype(bool).sum())
            if kept == int(sitk.GetArrayViewFromImage(label).astype(bool).sum()):
                return resampled
    raise InputError(
        f"Atlas label {label_path} is not on the atlas image's grid (label size {label.GetSize()}, spacing "
        f"{_fmt(label.GetSpacing())}, origin {_fmt(label.GetOrigin())}; image size {image.GetSize()}, spacing "
        f"{_fmt(image.GetSpacing())}, origin {_fmt(image.GetOrigin())}). Export the segmentation with the atlas "
        "image as reference geometry."
    )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_atlas_label(label: sitk.Image, path: str | os.PathLike) -> None:
    """Reject an atlas label with no structure in it."""
    if not sitk.GetArrayViewFromImage(label).any():
        raise InputError(f"Atlas label {path} is empty (all voxels are 0); the atlas needs at least one structure.")


def write_image(image: sitk.Image, path: str | os.PathLike, compress: bool = True) -> None:
    """Write an image atomically; the format follows the file extension."""
    with atomic_path(path) as temp:
        sitk.WriteImage(image, str(temp), compress)


def ensure_writable_folder(path: str | os.PathLike, what: str = "Output folder") -> Path:
    """Create ``path`` if needed and check that files can be written into it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".rrlmedsam-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"{what} {path} is not writable ({error.strerror}); choose another folder.") from None
    return path
