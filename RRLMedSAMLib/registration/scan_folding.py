"""Folding where ``qc.json`` reports it: a working-grid field composed onto the scan's own grid.

The safety checks (:mod:`RRLMedSAMLib.registration.step_checks`) count folded *cells* of the grid
a field lives on (a non-positive Jacobian determinant at a cell corner). Resampled through the
affine pre-alignment onto the scan's voxels, and differentiated there as
:func:`~RRLMedSAMLib.geometry.deformation.folding_fraction` does, the same field can fold more:
on one prostate pair 0.07 % of the working grid's cells but 0.52 % of the scan's voxels.
:class:`ScanGridFolding` measures the latter, and :func:`shorten_until_unfolded` shortens a
working-grid step (a fraction of its displacement,
:meth:`~RRLMedSAMLib.registration.step_checks.StepJudge.longest_kept_fraction`) until at most
:data:`~RRLMedSAMLib.registration.step_checks.FOLDING_LIMIT` of the scan's voxels fold, with the
similarity still above the affine start's and the volume change still plausible; when no fraction
passes, the affine start is kept.

Displacements are tensors ``(1, 3, D, H, W)`` or arrays ``(3, D, H, W)`` in voxels of their grid,
components ``(dz, dy, dx)``, resampling direction (atlas point = grid point + displacement, in the
pre-aligned frame).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.deformation import compose_scan_displacement, folding_fraction
from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.registration.step_checks import FOLDING_LIMIT, FieldMeasure, StepCheck, StepJudge

#: ``qc.json``'s ``registration_checks`` step name of the scan-grid check of the working-grid registration.
SCAN_GRID_STEP = "working-grid registration, folding on the scan's grid"
#: ``on_scan(ddf)``: the folded fraction of the scan's voxels under a working-grid displacement ``(1, 3, D, H, W)``.
ScanFoldingOfTensor = Callable[[torch.Tensor], float]


class ScanGridFolding:
    """A field's folded fraction on the scan's own grid, as ``qc.json`` reports it.

    Called as ``(grid, ddf_zyx) -> fraction`` (see
    :func:`RRLMedSAMLib.geometry.deformation.folding_fraction`); keeps the last field it composed,
    so the caller need not compose the kept one again.
    """

    def __init__(self, scan: sitk.Image, atlas_to_scan: sitk.Transform) -> None:
        self.scan, self.atlas_to_scan = scan, atlas_to_scan
        self._last: tuple[WorkingGrid, np.ndarray, sitk.Image] | None = None

    def __call__(self, grid: WorkingGrid, ddf_zyx: np.ndarray) -> float:
        displacement = compose_scan_displacement(self.scan, self.atlas_to_scan, grid, ddf_zyx)
        self._last = (grid, ddf_zyx, displacement)
        return folding_fraction(displacement)

    def displacement_of(self, grid: WorkingGrid, ddf_zyx: np.ndarray) -> sitk.Image | None:
        """The composed field of ``ddf_zyx`` on ``grid`` when it was the last one measured (same values), else ``None``."""
        if self._last is None or self._last[0] != grid:
            return None
        last = self._last[1]
        return self._last[2] if last is ddf_zyx or np.array_equal(last, ddf_zyx) else None

    def of_tensor(self, grid: WorkingGrid) -> ScanFoldingOfTensor:
        """The measure for displacements ``(1, 3, D, H, W)`` on ``grid``."""
        return lambda ddf: self(grid, ddf[0].float().cpu().numpy())


def shorten_until_unfolded(
    judge: StepJudge, affine_start: FieldMeasure, ddf: torch.Tensor, on_scan: ScanFoldingOfTensor
) -> tuple[torch.Tensor, list[StepCheck]]:
    """``ddf`` (a step from the affine start, already kept by ``judge``), or the longest fraction of it that folds little enough on the scan.

    ``affine_start`` is ``judge``'s measure of the zero displacement. Returns the displacement kept
    (zero when no fraction passes) and the checks made: none when ``ddf`` folds at most
    :data:`~RRLMedSAMLib.registration.step_checks.FOLDING_LIMIT` of the scan's voxels, else one per
    fraction tried, their ``folding_after`` the scan-grid fraction where it was measured.
    """
    whole = on_scan(ddf)
    if whole <= FOLDING_LIMIT:
        return ddf, []

    def on_the_scan(candidate: torch.Tensor, check: StepCheck) -> StepCheck:
        folding = whole if candidate is ddf else on_scan(candidate)
        check = replace(check, folding_before=0.0, folding_after=folding)
        return check if folding <= FOLDING_LIMIT else replace(check, kept=False, reason=f"{100 * folding:.2f} % of the scan's voxels fold")

    candidate, checks = judge.longest_kept_fraction(SCAN_GRID_STEP, affine_start, ddf, on_the_scan)
    return (candidate if checks[-1].kept else torch.zeros_like(ddf)), checks
