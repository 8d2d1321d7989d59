"""Label propagation without training: affine only, and single-atlas ANTs SyN.

Both map the atlas label onto a scan through a transform in the resampling direction (scan point
-> atlas point), exactly like the engine's ``deformation.nrrd``, and report the folding fraction
of that mapping. Images cross between SimpleITK and ANTs through numpy with their geometry
(origin, spacing, direction) copied explicitly; both libraries use ITK's LPS physical space.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.geometry.affine import prealign_to_atlas
from RRLMedSAMLib.geometry.deformation import folding_fraction
from RRLMedSAMLib.geometry.working_grid import make_working_grid


@dataclass(frozen=True)
class AntsSettings:
    """ANTs SyN settings (``ants.registration`` arguments); :data:`QUICK_ANTS` for smoke runs.

    antspyx applies the iteration counts to ``SyN`` and its plain relatives only; its
    ``antsRegistrationSyN*`` recipes (and ``SyNCC``) run their own fixed schedules.
    """

    type_of_transform: str = "SyN"
    reg_iterations: tuple[int, ...] = (40, 20, 0)
    aff_iterations: tuple[int, ...] = (2100, 1200, 1200, 10)

    def to_dict(self) -> dict:
        return {"type_of_transform": self.type_of_transform, "reg_iterations": list(self.reg_iterations),
                "aff_iterations": list(self.aff_iterations)}

    @classmethod
    def from_dict(cls, data: dict) -> AntsSettings:
        return cls(str(data["type_of_transform"]), tuple(int(v) for v in data["reg_iterations"]),
                   tuple(int(v) for v in data["aff_iterations"]))


#: A few seconds on tiny volumes: for --quick runs and tests, not for accuracy claims.
QUICK_ANTS = AntsSettings(reg_iterations=(10, 5, 0), aff_iterations=(100, 50, 0, 0))


@dataclass
class Propagation:
    """The atlas label on the scan's grid and the folding fraction of the mapping that put it there."""

    label: sitk.Image
    folding_fraction: float


def sitk_to_ants(image: sitk.Image):
    """An ``ants.ANTsImage`` with the same voxels and geometry (float32 for scans, labels as float)."""
    import ants

    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)
    return ants.from_numpy(
        np.ascontiguousarray(array), origin=tuple(image.GetOrigin()), spacing=tuple(image.GetSpacing()),
        direction=np.asarray(image.GetDirection(), dtype=float).reshape(3, 3),
    )


def ants_to_sitk(image, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
    """A SimpleITK image with the ANTs image's voxels and geometry, cast to ``pixel_type``."""
    array = np.transpose(image.numpy(), (2, 1, 0))
    result = sitk.GetImageFromArray(np.ascontiguousarray(array))
    result.SetOrigin(tuple(float(v) for v in image.origin))
    result.SetSpacing(tuple(float(v) for v in image.spacing))
    result.SetDirection(tuple(float(v) for v in np.asarray(image.direction).ravel()))
    return sitk.Cast(result, pixel_type)


def affine_propagation(
    atlas_image: sitk.Image, atlas_label: sitk.Image, scan: sitk.Image, grid_size: int, iterations: int, seed: int,
    divisor: int = 16,
) -> Propagation:
    """The atlas label resampled onto ``scan`` through the engine's affine pre-alignment alone.

    An affine map folds either nowhere or everywhere: the folding fraction is 0 for a positive
    determinant and 1 for a reflection.
    """
    grid = make_working_grid(atlas_label, grid_size, divisor=divisor)
    atlas_to_scan = prealign_to_atlas(atlas_image, scan, grid, iterations=iterations, seed=seed)
    scan_to_atlas = atlas_to_scan.GetInverse()
    label = sitk.Resample(atlas_label, scan, scan_to_atlas, sitk.sitkNearestNeighbor, 0, atlas_label.GetPixelID())
    determinant = float(np.linalg.det(np.asarray(atlas_to_scan.GetMatrix()).reshape(3, 3)))
    return Propagation(label, 0.0 if determinant > 0 else 1.0)


def ants_syn_propagation(
    atlas_image: sitk.Image, atlas_label: sitk.Image, scan: sitk.Image, settings: AntsSettings, seed: int
) -> Propagation:
    """Register the atlas (moving) to the scan (fixed) with ANTs and carry the label across.

    The label is resampled with ANTs' ``genericLabel`` interpolator. The forward transforms
    (affine then SyN warp) are composed into one displacement field on the scan's grid, whose
    Jacobian determinant gives the folding fraction.
    """
    import ants

    fixed, moving = sitk_to_ants(sitk.Cast(scan, sitk.sitkFloat32)), sitk_to_ants(atlas_image)
    with tempfile.TemporaryDirectory(prefix="rrlmedsam-ants-") as work:
        result = ants.registration(
            fixed, moving, type_of_transform=settings.type_of_transform, reg_iterations=settings.reg_iterations,
            aff_iterations=settings.aff_iterations, outprefix=os.path.join(work, "syn_"), random_seed=seed,
        )
        warped = ants.apply_transforms(
            fixed, sitk_to_ants(atlas_label), transformlist=result["fwdtransforms"], interpolator="genericLabel"
        )
        composed = ants.apply_transforms(
            fixed, moving, transformlist=result["fwdtransforms"], compose=os.path.join(work, "composed_")
        )
        field = sitk.ReadImage(str(composed), sitk.sitkVectorFloat64)
    label = sitk.Cast(sitk.Round(ants_to_sitk(warped)), atlas_label.GetPixelID())
    label.CopyInformation(scan)
    return Propagation(label, folding_fraction(field))
