"""Safety checks between registration steps: a step is kept only when it makes the match better.

Every deformable step of :func:`RRLMedSAMLib.registration.register.register` (the working-grid
registration, the fine-grid pass) is judged against what came before it, on the step's own grid:

* similarity: local NCC of the warped atlas and the scan (higher is better, at most 1; see
  :meth:`StepJudge.similarity`); a step that lowers it is undone;
* plausibility of the volume change: the atlas's labelled region warped after the step, over the
  same region warped before it; a step that shrinks or grows it beyond :data:`PLAUSIBLE_VOLUME_RATIO`
  is undone (a gross failure, not anatomy: the affine pre-alignment already matched the scale);
* folding: a step that leaves more than :data:`FOLDING_LIMIT` of the grid's cells folded (a
  non-positive Jacobian determinant at one of a cell's corners,
  :func:`RRLMedSAMLib.registration.losses.folded_cell_fraction`), when the field before it folded
  less, is undone.

What was judged goes to ``qc.json`` (``registration_checks``), one entry per step.

Arrays are ``(D, H, W)`` tensors ``(1, 1, D, H, W)`` in [0, 1]; displacements ``(1, 3, D, H, W)``
in voxels of the grid, channels ``(dz, dy, dx)``, resampling direction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, resample_to_grid
from RRLMedSAMLib.registration.losses import folded_cell_fraction
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer

#: A step may change the atlas's warped labelled volume by at most this factor, either way.
PLAUSIBLE_VOLUME_RATIO = 3.0
#: Largest fraction of folded cells a step may leave (when the field before it folded less).
FOLDING_LIMIT = 0.005
#: Fractions of a step tried in turn, the whole step first, until one passes the checks.
STEP_FRACTIONS = (1.0, 0.75, 0.5, 0.25)
#: A scan voxel counts in the similarity when the intensity's standard deviation in its NCC window
#: exceeds this (intensities in [0, 1]); in flatter windows the NCC is numerical noise.
TEXTURE_STD = 0.01


@dataclass(frozen=True)
class StepCheck:
    """What one step changed and whether it was kept (``reason`` says why not; empty when kept)."""

    step: str
    ncc_before: float
    ncc_after: float
    volume_ratio: float
    folding_before: float
    folding_after: float
    kept: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in asdict(self).items()}


#: ``veto(candidate, check) -> check``: a further test of a displacement the checks kept (see :meth:`StepJudge.longest_kept_fraction`).
Veto = Callable[[torch.Tensor, "StepCheck"], "StepCheck"]


@dataclass(frozen=True)
class FieldMeasure:
    """What :class:`StepJudge` measures of one field: local NCC, warped labelled volume (voxels), folded-cell fraction."""

    ncc: float
    volume: float
    folding: float


class StepJudge:
    """Judges the steps of one registration: fields over one ``(atlas, scan)`` pair on one grid.

    ``atlas``, ``scan`` ``(1, 1, D, H, W)`` in [0, 1]; ``mask`` the atlas's labelled region, same
    shape, 1 inside. The scan's textured voxels (:meth:`similarity`) are found once here. A field
    judged against several candidates is measured once (:meth:`measure`) and compared with each
    (:meth:`compare`); :meth:`check` does both for one step.
    """

    def __init__(self, ncc_kernel: int, atlas: torch.Tensor, scan: torch.Tensor, mask: torch.Tensor) -> None:
        self.atlas, self.scan, self.mask = atlas, scan, mask
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel, reduction="none")
        self.warp = SpatialTransformer()
        pool = {"kernel_size": ncc_kernel, "stride": 1, "padding": ncc_kernel // 2, "count_include_pad": False}
        with torch.no_grad():
            mean = torch.nn.functional.avg_pool3d(scan, **pool)
            variance = torch.nn.functional.avg_pool3d(scan * scan, **pool) - mean * mean
            textured = variance > TEXTURE_STD**2
        self.textured = textured if bool(textured.any()) else torch.ones_like(textured)

    @torch.no_grad()
    def measure(self, ddf: torch.Tensor) -> FieldMeasure:
        """Local NCC of the atlas warped by ``ddf`` and the scan, the labelled region warped (voxels), folding."""
        return FieldMeasure(self.similarity(self.warp(self.atlas, ddf)), float(self.warp(self.mask, ddf).sum()),
                            folded_cell_fraction(ddf))

    @torch.no_grad()
    def similarity(self, warped: torch.Tensor) -> float:
        """Mean squared local NCC of ``warped`` ``(1, 1, D, H, W)`` and the scan, in [0, 1], over the scan's textured voxels.

        MONAI's local NCC divides by variances floored at 1e-5; in windows where the scan is nearly
        flat (air in a CT, a smooth background) that quotient is noise and can exceed 1 by far, which
        would let the flat background decide a step. Those voxels (window standard deviation below
        :data:`TEXTURE_STD`) are left out, and each voxel's value is clipped to [0, 1]; a scan with
        no textured voxel is measured over all of them.
        """
        return float((-self.ncc(warped, self.scan)).clamp(0.0, 1.0)[self.textured].mean())

    @staticmethod
    def compare(step: str, before: FieldMeasure, after: FieldMeasure) -> StepCheck:
        """Whether the step from the field measured ``before`` to the one measured ``after`` is kept, and why not."""
        ratio = after.volume / before.volume if before.volume > 0 else 1.0
        reasons = []
        if after.ncc < before.ncc:
            reasons.append(f"similarity fell from {before.ncc:.4f} to {after.ncc:.4f}")
        if not 1.0 / PLAUSIBLE_VOLUME_RATIO <= ratio <= PLAUSIBLE_VOLUME_RATIO:
            reasons.append(f"labelled volume changed by a factor {ratio:.2f}")
        if folds_too_much(after.folding, before.folding):
            reasons.append(f"{100 * after.folding:.2f} % of cells fold")
        return StepCheck(step, before.ncc, after.ncc, ratio, before.folding, after.folding, not reasons, "; ".join(reasons))

    def longest_kept_fraction(
        self, step: str, start: FieldMeasure, ddf: torch.Tensor, veto: Veto | None = None
    ) -> tuple[torch.Tensor, list[StepCheck]]:
        """The longest fraction of the step from the zero field (measured ``start``) to ``ddf`` that is kept.

        Tries :data:`STEP_FRACTIONS` in turn (a check's step name says the fraction when it is not
        the whole step). ``veto(candidate, check)``, when given, may reject a fraction the checks
        kept, by returning the check with ``kept=False`` and a reason. Returns the last
        displacement tried and the check of every fraction tried (the last one kept, unless none
        was).
        """
        tried = []
        for fraction in STEP_FRACTIONS:
            candidate = ddf if fraction == 1.0 else fraction * ddf
            check = self.compare(step if fraction == 1.0 else f"{step}, {round(100 * fraction)} % of the step", start,
                                 self.measure(candidate))
            if check.kept and veto is not None:
                check = veto(candidate, check)
            tried.append(check)
            if check.kept:
                break
        return candidate, tried

    def check(self, step: str, before: torch.Tensor, after: torch.Tensor) -> StepCheck:
        """Whether the step from the field ``before`` to ``after`` is kept, and the measurements that decided it."""
        return self.compare(step, self.measure(before), self.measure(after))


def folds_too_much(after: float, before: float) -> bool:
    """A step folds too much when it leaves more than :data:`FOLDING_LIMIT` folded, and more than before it."""
    return after > max(FOLDING_LIMIT, before)


def labelled_region(atlas_label: sitk.Image, grid: WorkingGrid) -> np.ndarray:
    """The atlas's labelled region on ``grid``, ``(D, H, W)`` float32, 1 inside (what the volume check warps)."""
    return (resample_to_grid(atlas_label, grid, is_label=True) > 0).astype(np.float32)
