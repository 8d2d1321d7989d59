"""Spatial transformer: warp a volume by a displacement field, integrate a velocity field.

Displacements are in working-grid voxels with channels ``(dz, dy, dx)`` matching the tensor
axes ``(D, H, W)``: ``warped(p) = moving(p + ddf(p))``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.networks.blocks import DVF2DDF, Warp
from torch import nn

warnings.filterwarnings("ignore", message=".*Using PyTorch native grid_sample.*")
warnings.filterwarnings("ignore", message=".*non-tuple sequence for multidimensional indexing.*")


class SpatialTransformer(nn.Module):
    """``(B, C, D, H, W)`` volume and ``(B, 3, D, H, W)`` voxel displacement -> warped volume.

    Args:
        mode: ``"bilinear"`` (trilinear in 3-D) for images and soft labels, ``"nearest"`` for labels.
    """

    def __init__(self, mode: str = "bilinear") -> None:
        super().__init__()
        self.warp = Warp(mode=mode, padding_mode="border")

    def forward(self, moving: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        return self.warp(moving, ddf)


class VelocityIntegrator(nn.Module):
    """Scaling and squaring: stationary velocity ``(B, 3, D, H, W)`` -> diffeomorphic displacement."""

    def __init__(self, num_steps: int = 7) -> None:
        super().__init__()
        self.integrate = DVF2DDF(num_steps=num_steps, mode="bilinear", padding_mode="border")

    def forward(self, velocity: torch.Tensor) -> torch.Tensor:
        return self.integrate(velocity)


@torch.no_grad()
def warp_classes(classes: np.ndarray, num_classes: int, ddf: torch.Tensor) -> np.ndarray:
    """Warp a class map ``(D, H, W)`` by ``ddf`` ``(1, 3, D, H, W)`` (voxels) via its one-hot encoding (smooth boundaries) -> argmax."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(classes).long(), num_classes)
    one_hot = one_hot.permute(3, 0, 1, 2)[None].float().to(ddf.device)
    warped = SpatialTransformer()(one_hot, ddf)
    return warped.argmax(dim=1)[0].cpu().numpy().astype(np.int64)
