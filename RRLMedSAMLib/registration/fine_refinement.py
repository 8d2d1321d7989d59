"""Fine-grid refinement: a second instance-optimisation pass of each registration, at ``segment``.

The networks run on the working grid (``fast``: 64 voxels along the longest side, about 2.9 mm
on a brain), and their flow lives at half that resolution, too coarse for small structures.
``segment`` therefore resamples the working-grid displacement onto a finer grid of the same
region (``preset.refinement_grid_size`` voxels along the longest side, never finer than the
atlas's own voxels) and optimises a residual there, one vector per voxel, on the registration
objective: local NCC over ``preset.refinement_ncc_kernel`` voxels plus
``preset.refinement_smoothness_weight`` times the smoothness penalty, for
``preset.refinement_steps`` Adam iterations. No label is used. Training's pseudo labels are made
without this pass (they live on the working grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.deformation import resample_voxel_ddf
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, make_working_grid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.registration.instance_optimization import refine_displacement
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.run.presets import Preset

#: The refinement grid is used only when its voxels are at most this fraction of the working grid's.
MIN_RESOLUTION_GAIN = 0.9


@dataclass(frozen=True)
class FineRefinement:
    """The finer grid, the atlas image on it (intensities in [0, 1], ``(D, H, W)``) and the pass's objective settings."""

    grid: WorkingGrid
    atlas: np.ndarray
    steps: int
    ncc_kernel: int
    smoothness_weight: float

    def describe(self) -> str:
        """For ``qc.json``'s ``registration`` entry."""
        return f"fine-grid refinement ({self.steps} steps at {self.grid.spacing_mm:.2f} mm)"


def plan_fine_refinement(
    atlas_image: sitk.Image, atlas_label: sitk.Image, working_grid: WorkingGrid, preset: Preset, steps: int | None = None
) -> FineRefinement | None:
    """The refinement of a run (``steps`` overrides the preset's), or ``None`` when it is off or would not be finer."""
    steps = preset.refinement_steps if steps is None else steps
    if preset.refinement_grid_size <= 0 or steps <= 0:
        return None
    grid = make_working_grid(
        atlas_label, preset.refinement_grid_size, divisor=2, min_voxel_mm=float(min(atlas_image.GetSpacing()))
    )
    if grid.spacing_mm > MIN_RESOLUTION_GAIN * working_grid.spacing_mm:
        return None
    atlas = normalize_intensity(resample_to_grid(atlas_image, grid))
    return FineRefinement(grid, atlas, steps, preset.refinement_ncc_kernel, preset.refinement_smoothness_weight)


def refine_on_fine_grid(
    refinement: FineRefinement,
    scan: sitk.Image,
    atlas_to_scan: sitk.Transform,
    working_grid: WorkingGrid,
    ddf_zyx: np.ndarray,
    device: torch.device,
) -> np.ndarray:
    """The working-grid displacement ``(3, D, H, W)`` refined on the fine grid: ``(3, D', H', W')`` fine-grid voxels.

    Args:
        scan: the scan (any grid); ``atlas_to_scan`` its affine pre-alignment.
        ddf_zyx: atlas->scan displacement on ``working_grid``, in its voxels.
    """
    initial = resample_voxel_ddf(ddf_zyx, working_grid, refinement.grid)
    scan_fine = normalize_intensity(resample_to_grid(scan, refinement.grid, atlas_to_scan))
    objective = RegistrationObjective(refinement.ncc_kernel, refinement.smoothness_weight).to(device)
    ddf = refine_displacement(
        objective,
        torch.from_numpy(refinement.atlas)[None, None].to(device),
        torch.from_numpy(scan_fine)[None, None].to(device),
        torch.from_numpy(initial)[None].to(device),
        refinement.steps,
    )
    return ddf[0].float().cpu().numpy()
