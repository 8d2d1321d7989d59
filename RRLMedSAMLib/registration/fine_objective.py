"""What the fine stage measures and minimises on one level, and the folding check.

Features are MIND-SSC descriptors ``(1, 12, D, H, W)`` on the level's grid; intensities
``(1, 1, D, H, W)`` in [0, 1]; displacements ``(1, 3, D, H, W)`` in voxels of the level, channels
``(dz, dy, dx)``, resampling direction (``warped(p) = atlas(p + ddf(p))``).
"""

from __future__ import annotations

import torch
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.registration.losses import jacobian_determinant_voxels
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer


class FineObjective(torch.nn.Module):
    """``SSD(MIND(atlas) o ddf, MIND(scan)) + ncc_weight * LNCC + smoothness_weight * diffusion(ddf)``.

    The SSD is the mean over voxels and the 12 channels; the diffusion term is MONAI's mean
    squared displacement gradient (voxels per voxel). :meth:`similarity` is the dissimilarity
    alone (lower is better), what the stage's safety checks compare.
    """

    def __init__(self, smoothness_weight: float, ncc_weight: float = 0.0, ncc_kernel: int = 5) -> None:
        super().__init__()
        self.warp = SpatialTransformer()
        self.smoothness = DiffusionLoss()
        self.smoothness_weight = smoothness_weight
        self.ncc_weight = ncc_weight
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel) if ncc_weight else None

    def similarity(self, atlas: torch.Tensor, scan: torch.Tensor, ddf: torch.Tensor,
                   atlas_image: torch.Tensor | None = None, scan_image: torch.Tensor | None = None) -> torch.Tensor:
        """Dissimilarity of the warped atlas and the scan (a scalar; lower is better)."""
        value = ((self.warp(atlas, ddf) - scan) ** 2).mean()
        if self.ncc is not None and atlas_image is not None and scan_image is not None:
            value = value + self.ncc_weight * self.ncc(self.warp(atlas_image, ddf), scan_image)
        return value

    def forward(self, atlas: torch.Tensor, scan: torch.Tensor, ddf: torch.Tensor,
                atlas_image: torch.Tensor | None = None, scan_image: torch.Tensor | None = None) -> torch.Tensor:
        return self.similarity(atlas, scan, ddf, atlas_image, scan_image) + self.smoothness_weight * self.smoothness(ddf)


@torch.no_grad()
def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """Jacobian determinant ``(D-2, H-2, W-2)`` (float64) of ``x -> x + ddf(x)`` for one ``(1, 3, D, H, W)`` voxel field.

    :func:`RRLMedSAMLib.registration.losses.jacobian_determinant_voxels` in double precision, as
    :func:`RRLMedSAMLib.geometry.deformation.folding_fraction` counts it (outermost layer left out).
    """
    return jacobian_determinant_voxels(ddf.double())[0]


def folding_fraction_voxels(ddf: torch.Tensor) -> float:
    """Fraction of interior voxels where the voxel field ``(1, 3, D, H, W)`` folds (Jacobian determinant <= 0)."""
    if min(ddf.shape[2:]) < 3:
        return 0.0
    return float((jacobian_determinant(ddf) <= 0).double().mean())
