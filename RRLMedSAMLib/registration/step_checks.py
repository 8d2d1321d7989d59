"""Safety checks between registration steps: a step is kept only when it makes the match better.

Every deformable step of :func:`RRLMedSAMLib.registration.register.register` (the working-grid
registration, the fine-grid pass) is judged against what came before it, on the step's own grid:

* similarity: local NCC of the warped atlas and the scan (higher is better, at most 1); a step
  that lowers it is undone;
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

from dataclasses import asdict, dataclass

import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.registration.losses import folded_cell_fraction
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer

#: A step may change the atlas's warped labelled volume by at most this factor, either way.
PLAUSIBLE_VOLUME_RATIO = 3.0
#: Largest fraction of folded cells a step may leave (when the field before it folded less).
FOLDING_LIMIT = 0.005


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


class StepJudge(torch.nn.Module):
    """Judges one step on one grid: :meth:`check` compares the field before and after it."""

    def __init__(self, ncc_kernel: int) -> None:
        super().__init__()
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
        self.warp = SpatialTransformer()

    @torch.no_grad()
    def similarity(self, atlas: torch.Tensor, scan: torch.Tensor, ddf: torch.Tensor) -> float:
        """Local NCC of ``atlas`` warped by ``ddf`` and ``scan`` (higher is better)."""
        return float(-self.ncc(self.warp(atlas, ddf), scan))

    @torch.no_grad()
    def volume(self, mask: torch.Tensor, ddf: torch.Tensor) -> float:
        """The atlas's labelled region ``mask`` (1 inside) warped by ``ddf``, in voxels of the grid."""
        return float(self.warp(mask, ddf).sum())

    def check(self, step: str, atlas: torch.Tensor, scan: torch.Tensor, mask: torch.Tensor,
              before: torch.Tensor, after: torch.Tensor) -> StepCheck:
        """Whether the step from ``before`` to ``after`` is kept, and the measurements that decided it."""
        ncc_before, ncc_after = self.similarity(atlas, scan, before), self.similarity(atlas, scan, after)
        volume_before = self.volume(mask, before)
        ratio = self.volume(mask, after) / volume_before if volume_before > 0 else 1.0
        folding_before, folding_after = folded_cell_fraction(before), folded_cell_fraction(after)
        reasons = []
        if ncc_after < ncc_before:
            reasons.append(f"similarity fell from {ncc_before:.4f} to {ncc_after:.4f}")
        if not 1.0 / PLAUSIBLE_VOLUME_RATIO <= ratio <= PLAUSIBLE_VOLUME_RATIO:
            reasons.append(f"labelled volume changed by a factor {ratio:.2f}")
        if folding_after > max(FOLDING_LIMIT, folding_before):
            reasons.append(f"{100 * folding_after:.2f} % of cells fold")
        return StepCheck(step, ncc_before, ncc_after, ratio, folding_before, folding_after, not reasons, "; ".join(reasons))
