"""Projection of student (``Encoder3D``) features onto the SAM teacher's feature grid, for distillation.

The teacher feature volume of one scan is ``(256, n_slices, g, g)``: SAM's 256-channel embedding
of each slice taken along the teacher's slice axis, ``g = S/16``. The student's feature level is
``(B, C, D', H', W')`` on the working grid (downsampled by its stride). To compare them we

1. map ``C`` to 256 channels with a learned 1x1x1 convolution (:class:`FeatureProjection`),
2. move the teacher's slice axis first (``axis`` 0/1/2 of ``(D, H, W)``; the two other axes keep
   their order, as in ``SamTeacher.encode_volume``), and
3. resize trilinearly (``align_corners=False``) to ``(n_slices, g, g)``.

Both grids span the same field of view (the teacher stretches each slice to S x S), so this is a
pure resampling; it assumes the student saw the *same* volume the teacher encoded (no random crop
or spatial augmentation in between).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

TEACHER_CHANNELS = 256


def to_slice_axis_first(features: torch.Tensor, axis: int) -> torch.Tensor:
    """``(B, C, D, H, W)`` -> spatial axes reordered so that volume axis ``axis`` comes first."""
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis}")
    order = [axis] + [a for a in (0, 1, 2) if a != axis]
    return features.permute(0, 1, *(2 + a for a in order))


def align_to_teacher_grid(features: torch.Tensor, teacher_grid: Sequence[int], axis: int) -> torch.Tensor:
    """Student features ``(B, C, D', H', W')`` -> ``(B, C, n_slices, g, g)`` on the teacher's grid."""
    permuted = to_slice_axis_first(features, axis)
    size = tuple(int(s) for s in teacher_grid)
    if tuple(permuted.shape[2:]) == size:
        return permuted
    return F.interpolate(permuted, size=size, mode="trilinear", align_corners=False)


class FeatureProjection(nn.Module):
    """1x1x1 convolution ``(B, in_channels, D, H, W)`` -> ``(B, 256, D, H, W)`` (the distillation adapter).

    It belongs to the distillation loss, not to the encoder: the encoder stays the shared
    ``Encoder3D`` architecture that mutual-EMA averages.
    """

    def __init__(self, in_channels: int, out_channels: int = TEACHER_CHANNELS) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)
