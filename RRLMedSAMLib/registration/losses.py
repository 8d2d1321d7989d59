"""The registration objective: what the network is trained on and what instance optimisation minimises.

Volumes are ``(B, 1, D, H, W)`` with intensities in [0, 1]; displacements ``(B, 3, D, H, W)`` in
voxels of the same grid (:mod:`RRLMedSAMLib.registration.spatial_transformer`).
"""

from __future__ import annotations

import torch
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer


class RegistrationObjective(torch.nn.Module):
    """``loss = LNCC(warp(moving, ddf), fixed) + w * diffusion(ddf)``; returns ``(loss, parts)``."""

    def __init__(self, ncc_kernel: int, smoothness_weight: float) -> None:
        super().__init__()
        self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
        self.smoothness = DiffusionLoss()
        self.warp = SpatialTransformer()
        self.smoothness_weight = smoothness_weight

    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = self.similarity(self.warp(moving, ddf), fixed)
        smoothness = self.smoothness(ddf)
        loss = similarity + self.smoothness_weight * smoothness
        return loss, {"ncc": float(-similarity.detach()), "smooth": float(smoothness.detach())}
