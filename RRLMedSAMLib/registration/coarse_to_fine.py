"""Coarse-to-fine instance optimisation from the affine start: a second candidate beside the network's registration.

The registration network and the instance optimisation that refines it see the working grid
through a local NCC window of a few voxels, so a large residual misalignment after the affine
start (a gland shifted by more than its own radius) is outside their reach. Classical
registration reaches further by starting on coarse copies of the images, where the same window
covers more of the anatomy, and refining the field level by level (ANTs SyN's shrink factors).
:func:`coarse_to_fine_displacement` does that with the registration objective: the working grid
blurred and sampled every ``2 ** level`` voxels, Adam on a per-voxel displacement at each level, the field
upsampled to the next level as its start. The safety checks then keep whichever of this
candidate and the network's registration matches the scan better
(:func:`RRLMedSAMLib.registration.register.checked_registration_on_grid`).

Displacements ``(1, 3, D, H, W)`` in voxels of their level's grid, ``(dz, dy, dx)``, resampling
direction (atlas point = grid point + displacement), as the working grid's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from RRLMedSAMLib.registration.instance_optimization import refine_displacement


def level_shape(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    """The grid shape ``shape`` average-pooled by ``factor`` (rounded up, at least 4 voxels a side)."""
    return tuple(max(4, -(-size // factor)) for size in shape)


def resize_displacement(ddf: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``ddf`` ``(B, 3, D, H, W)`` resampled linearly onto a grid of ``shape`` spanning the same extent, in its voxels.

    Corner voxels coincide (``align_corners``), so a displacement of ``v`` voxels along an axis of
    ``n`` voxels becomes ``v (m - 1) / (n - 1)`` on an axis of ``m``.
    """
    resized = F.interpolate(ddf, size=shape, mode="trilinear", align_corners=True)
    scale = [(new - 1) / max(old - 1, 1) for new, old in zip(shape, ddf.shape[2:])]
    return resized * torch.tensor(scale, dtype=ddf.dtype, device=ddf.device).view(1, 3, 1, 1, 1)


def downsample_image(image: torch.Tensor, factor: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``image`` ``(B, C, D, H, W)`` box-blurred over ``factor + 1`` voxels, then sampled on ``shape`` with corner voxels aligned.

    The corners align as :func:`resize_displacement`'s and the warp's (``align_corners``) do.
    """
    width = factor + 1 if factor % 2 == 0 else factor
    blurred = F.avg_pool3d(image, kernel_size=width, stride=1, padding=width // 2, count_include_pad=False)
    return F.interpolate(blurred, size=shape, mode="trilinear", align_corners=True)


def coarse_to_fine_displacement(
    objective: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, levels: int, steps: int
) -> torch.Tensor:
    """A displacement ``(1, 3, D, H, W)`` (voxels of the grid of ``moving``) from the affine start, coarse to fine.

    ``moving``, ``fixed`` ``(1, 1, D, H, W)`` in [0, 1] on the working grid; ``objective(moving,
    fixed, ddf) -> (loss, parts)`` the registration objective; ``levels`` coarser levels (factors
    ``2 ** levels`` down to 2) before the working grid itself, ``steps`` Adam iterations on each.
    """
    full_shape = tuple(moving.shape[2:])
    ddf: torch.Tensor | None = None
    for level in range(levels, -1, -1):
        shape = level_shape(full_shape, 2**level) if level else full_shape
        moving_level = downsample_image(moving, 2**level, shape) if level else moving
        fixed_level = downsample_image(fixed, 2**level, shape) if level else fixed
        start = (torch.zeros((1, 3, *shape), dtype=moving.dtype, device=moving.device) if ddf is None
                 else resize_displacement(ddf, shape))
        ddf = refine_displacement(objective, moving_level, fixed_level, start, steps)
    assert ddf is not None
    return ddf
