"""Fine-grid refinement: a second instance-optimisation pass of each registration, at ``segment``.

The networks run on the working grid (``fast``: 64 voxels along the longest side, about 2.9 mm
on a brain), and their flow lives at half that resolution, too coarse for small structures.
``segment`` therefore resamples the working-grid displacement onto a finer grid of the same
region (``preset.fine_grid_size`` voxels along the longest side, never finer than the atlas's own
voxels) and optimises a residual there, one vector per voxel, on the registration objective:
local NCC over ``preset.fine_grid_ncc_kernel`` voxels plus ``preset.fine_grid_smoothness_weight``
times the diffusion penalty (plus ``preset.fine_grid_folding_weight`` times a penalty on
Jacobian determinants below 0.1, :func:`RRLMedSAMLib.registration.losses.folding_penalty`), for
``preset.fine_grid_steps`` Adam iterations. No label is used to optimise; the atlas's labelled
region only serves the safety check (:mod:`RRLMedSAMLib.registration.step_checks`): when the
pass lowers the similarity, changes the labelled volume implausibly or folds (on the finer
grid's cells, and on the scan's own grid when :func:`~RRLMedSAMLib.registration.register.register`
passes that measure), a shorter step along the same change is tried (:data:`~RRLMedSAMLib.registration.step_checks.STEP_FRACTIONS`), and
when none passes the pass is undone.
It is the default refinement of every user preset; the MIND-SSC fine registration stage
(:mod:`RRLMedSAMLib.registration.fine_stage`) replaces it when switched on.

Displacements are ``(3, D, H, W)`` arrays in voxels of their grid, ``(dz, dy, dx)``, resampling
direction (atlas point = grid point + displacement, in the pre-aligned frame).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.deformation import resample_voxel_ddf
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, make_working_grid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.registration.instance_optimization import refine_displacement
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.registration.step_checks import FOLDING_LIMIT, STEP_FRACTIONS, StepJudge, folds_too_much, labelled_region
from RRLMedSAMLib.run.presets import Preset

#: ``scan_folding(grid, ddf_zyx)``: the folded fraction of a field ``(3, D, H, W)`` in ``grid`` voxels, on the scan's grid.
ScanFolding = Callable[[WorkingGrid, np.ndarray], float]
#: The refinement grid is used only when its voxels are at most this fraction of the working grid's.
MIN_RESOLUTION_GAIN = 0.9


@dataclass(frozen=True)
class FineRefinement:
    """The finer grid, the atlas image on it (intensities in [0, 1], ``(D, H, W)``), its labelled region (1 inside) and the pass's settings."""

    grid: WorkingGrid
    atlas: np.ndarray
    atlas_mask: np.ndarray
    steps: int
    ncc_kernel: int
    smoothness_weight: float
    device: torch.device
    folding_weight: float = 0.0

    def describe(self) -> str:
        """For ``qc.json``'s ``registration`` entry."""
        return f"fine-grid refinement ({self.steps} steps at {self.grid.spacing_mm:.2f} mm)"

    @torch.no_grad()
    def register(self, scan: sitk.Image, atlas_to_scan: sitk.Transform, working: WorkingGrid,
                 ddf_zyx: np.ndarray, scan_folding: ScanFolding | None = None) -> tuple[WorkingGrid, np.ndarray, dict]:
        """The working-grid displacement ``ddf_zyx`` refined on the fine grid: the grid, the field on it, what ran.

        Same contract as :meth:`RRLMedSAMLib.registration.fine_stage.FineStage.register`
        (``atlas_to_scan`` is the affine pre-alignment). ``scan_folding(grid, ddf_zyx)``, when given,
        measures a field's folding where ``qc.json`` reports it (on the scan's own grid); a step
        that leaves more than :data:`~RRLMedSAMLib.registration.step_checks.FOLDING_LIMIT` of the
        scan's voxels folded (and more than the working-grid field did) is then rejected too.
        """
        tick = time.perf_counter()
        initial = torch.from_numpy(resample_voxel_ddf(ddf_zyx, working, self.grid))[None].to(self.device)
        atlas = torch.from_numpy(self.atlas)[None, None].to(self.device)
        scan_fine = torch.from_numpy(normalize_intensity(resample_to_grid(scan, self.grid, atlas_to_scan)))[None, None].to(self.device)
        objective = RegistrationObjective(self.ncc_kernel, self.smoothness_weight, self.folding_weight).to(self.device)
        ddf = refine_displacement(objective, atlas, scan_fine, initial, self.steps)
        mask = torch.from_numpy(self.atlas_mask)[None, None].to(self.device)
        judge = StepJudge(self.ncc_kernel, atlas, scan_fine, mask)
        before = judge.measure(initial)
        working_on_scan = functools.cache(lambda: scan_folding(working, ddf_zyx))
        shortened = []
        for fraction in STEP_FRACTIONS:
            candidate = initial + fraction * (ddf - initial)
            check = judge.compare("fine-grid refinement", before, judge.measure(candidate))
            if check.kept:
                candidate_zyx = candidate[0].float().cpu().numpy()
                on_scan = scan_folding(self.grid, candidate_zyx) if scan_folding is not None else 0.0
                # the working field is composed only when the candidate is over the limit
                if on_scan > FOLDING_LIMIT and folds_too_much(on_scan, working_on_scan()):
                    check = replace(check, kept=False, reason=f"{100 * on_scan:.2f} % of the scan's voxels fold")
            if check.kept:
                break
            shortened.append({"step_fraction": fraction, "reason": check.reason})
        details = {"stage": "fine-grid NCC refinement", "resolution_mm": round(self.grid.spacing_mm, 4),
                   "shape_zyx": list(self.grid.shape_zyx), "iterations": self.steps, "kept": check.kept,
                   "step_fraction": fraction if check.kept else 0.0, "rejected_steps": shortened,
                   "seconds": round(time.perf_counter() - tick, 3), "folding_fraction": round(check.folding_after, 6),
                   "check": check}
        if not check.kept:
            return working, ddf_zyx, details
        return self.grid, candidate_zyx, details


def plan_fine_refinement(
    atlas_image: sitk.Image, atlas_label: sitk.Image, working_grid: WorkingGrid, preset: Preset, device: torch.device,
) -> FineRefinement | None:
    """The run's fine-grid refinement, or ``None`` when it is off or its grid would not be finer than ``working_grid``."""
    if preset.fine_grid_size <= 0 or preset.fine_grid_steps <= 0:
        return None
    grid = make_working_grid(atlas_label, preset.fine_grid_size, divisor=2, min_voxel_mm=float(min(atlas_image.GetSpacing())))
    if grid.spacing_mm > MIN_RESOLUTION_GAIN * working_grid.spacing_mm:
        return None
    atlas = normalize_intensity(resample_to_grid(atlas_image, grid))
    return FineRefinement(grid, atlas, labelled_region(atlas_label, grid), preset.fine_grid_steps, preset.fine_grid_ncc_kernel,
                          preset.fine_grid_smoothness_weight, device, preset.fine_grid_folding_weight)
