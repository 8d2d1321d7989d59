"""The registration objective: what the network is trained on and what instance optimisation minimises.

Volumes are ``(B, 1, D, H, W)`` with intensities in [0, 1]; displacements ``(B, 3, D, H, W)`` in
voxels of the same grid (:mod:`RRLMedSAMLib.registration.spatial_transformer`), channels
``(dz, dy, dx)``.
"""

from __future__ import annotations

import itertools

import torch
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer

#: The folding penalty pushes the Jacobian determinant above this margin, not merely above 0.
FOLDING_MARGIN = 0.1


def jacobian_determinant_voxels(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant ``(B, D-2, H-2, W-2)`` of ``x -> x + ddf(x)``, differentiable.

    ``ddf`` is ``(B, 3, D, H, W)`` in voxels (channels ``(dz, dy, dx)``, each spatial side >= 3).
    Central differences; the outermost layer (one-sided there) is left out. Dimensionless.
    """
    rows = []
    for component in range(3):
        grads = torch.gradient(ddf[:, component], dim=(1, 2, 3))
        rows.append([g[:, 1:-1, 1:-1, 1:-1] + (1.0 if axis == component else 0.0) for axis, g in enumerate(grads)])
    (a, b, c), (d, e, f), (g, h, i) = rows
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


#: The 8 corners of a grid cell, as offsets ``(oz, oy, ox)`` from its first corner.
CELL_CORNERS = tuple(itertools.product((0, 1), repeat=3))


def cell_corner_jacobians(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian determinants ``(B, 8, D-1, H-1, W-1)`` of ``x -> x + ddf(x)`` at the 8 corners of every grid cell.

    ``ddf`` is ``(B, 3, D, H, W)`` in voxels. At each corner the derivative along an axis is the
    difference along the cell's edge through that corner (one-sided), so a field that alternates
    from one voxel to the next, which central differences cannot see, shows here; a cell whose
    8 determinants are positive is not folded by trilinear interpolation at its corners.
    Dimensionless.
    """
    sides = ddf.shape[2:]
    corners = {offset: ddf[(slice(None), slice(None), *(slice(o, side - 1 + o) for o, side in zip(offset, sides)))]
               for offset in CELL_CORNERS}
    return _corner_determinants(corners)


def _corner_determinants(corners: dict[tuple[int, int, int], torch.Tensor]) -> torch.Tensor:
    """Determinants ``(N, 8, ...)`` at the corners of cells given their 8 corner displacements ``(N, 3, ...)``.

    At corner ``o`` the column along an axis is the displacement at the cell's other end of the
    edge through ``o`` minus the one at ``o`` (signed so that it points along the axis), plus the identity.
    """
    determinants = []
    for offset in CELL_CORNERS:
        columns = []
        for axis in range(3):
            start, end = list(offset), list(offset)
            start[axis], end[axis] = 0, 1
            columns.append(corners[tuple(end)] - corners[tuple(start)])
        (a, b, c), (d, e, f), (g, h, i) = [
            [columns[axis][:, component] + (1.0 if axis == component else 0.0) for axis in range(3)] for component in range(3)
        ]
        determinants.append(a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g))
    return torch.stack(determinants, dim=1)


def folding_penalty(ddf: torch.Tensor, margin: float = FOLDING_MARGIN) -> torch.Tensor:
    """Mean over cells and corners of ``relu(margin - det J)`` (:func:`cell_corner_jacobians`): zero where no cell folds or nearly folds.

    ``ddf`` ``(B, 3, D, H, W)`` in voxels. Only the cells with a determinant below ``margin`` have
    a value or a gradient, so the differentiable part is computed on those cells alone (found
    first without autograd); value and gradient are those of the dense formula.
    """
    with torch.no_grad():
        near_folding = (cell_corner_jacobians(ddf) < margin).any(dim=1)
    count = near_folding.numel() * len(CELL_CORNERS)
    batch, z, y, x = near_folding.nonzero(as_tuple=True)
    corners = {(oz, oy, ox): ddf[batch, :, z + oz, y + oy, x + ox] for oz, oy, ox in CELL_CORNERS}
    return torch.relu(margin - _corner_determinants(corners)).sum() / count


@torch.no_grad()
def folded_cell_fraction(ddf: torch.Tensor) -> float:
    """Fraction of grid cells with a non-positive Jacobian determinant at one of their corners (``ddf`` ``(1, 3, D, H, W)``)."""
    if min(ddf.shape[2:]) < 2:
        return 0.0
    return float((cell_corner_jacobians(ddf) <= 0).any(dim=1).double().mean())


class RegistrationObjective(torch.nn.Module):
    """``loss = LNCC(warp(moving, ddf), fixed) + w * diffusion(ddf) [+ f * folding_penalty(ddf)]``; returns ``(loss, parts)``.

    ``folding_weight`` (default 0, off) adds :func:`folding_penalty`; ``parts`` then has ``"folding"``.
    """

    def __init__(self, ncc_kernel: int, smoothness_weight: float, folding_weight: float = 0.0) -> None:
        super().__init__()
        self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
        self.smoothness = DiffusionLoss()
        self.warp = SpatialTransformer()
        self.smoothness_weight = smoothness_weight
        self.folding_weight = folding_weight

    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = self.similarity(self.warp(moving, ddf), fixed)
        smoothness = self.smoothness(ddf)
        loss = similarity + self.smoothness_weight * smoothness
        parts = {"ncc": float(-similarity.detach()), "smooth": float(smoothness.detach())}
        if self.folding_weight > 0 and min(ddf.shape[2:]) >= 2:
            folding = folding_penalty(ddf)
            loss = loss + self.folding_weight * folding
            parts["folding"] = float(folding.detach())
        return loss, parts
