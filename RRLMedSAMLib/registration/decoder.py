"""Registration decoder: features of the atlas and of a scan -> displacement field.

A U-Net decoder over the two images' multi-scale features (concatenated level by level, as
produced by one shared :class:`~RRLMedSAMLib.models.encoder3d.Encoder3D`), ending in a 3-channel
flow at level ``flow_level`` (1 = half resolution, as VoxelMorph's ``int_downsize``), upsampled to
full resolution. With ``diffeomorphic=True`` the flow is a stationary velocity integrated by
scaling and squaring (at the flow's resolution), so the inverse is the integral of its negative.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from RRLMedSAMLib.models.encoder3d import conv_block
from RRLMedSAMLib.registration.spatial_transformer import VelocityIntegrator


class RegistrationDecoder(nn.Module):
    """Pairwise U-Net decoder.

    Args:
        encoder_channels: channels of each encoder level (finest first).
        decoder_channels: channels of the decoder at each level except the deepest (finest first).
        diffeomorphic: integrate the output as a velocity field.
        flow_level: encoder level at which the flow is predicted (0 = full resolution).

    ``forward(moving_features, fixed_features)`` takes two lists as returned by the encoder and
    returns ``(ddf, flow)``: the full-resolution displacement ``(B, 3, D, H, W)`` in voxels and the
    raw network output at level ``flow_level`` (velocity when diffeomorphic, else displacement), in
    voxels of that level.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] | None = None,
        diffeomorphic: bool = False,
        flow_level: int = 1,
    ) -> None:
        super().__init__()
        levels = len(encoder_channels)
        self.flow_level = flow_level
        decoder_channels = list(decoder_channels or [max(16, c // 2) for c in encoder_channels[:-1]])
        self.bottom = conv_block(2 * encoder_channels[-1], decoder_channels[-1])
        blocks = []
        previous = decoder_channels[-1]
        for level in range(levels - 2, flow_level - 1, -1):
            blocks.append(conv_block(previous + 2 * encoder_channels[level], decoder_channels[level]))
            previous = decoder_channels[level]
        self.blocks = nn.ModuleList(blocks)
        self.flow = nn.Conv3d(previous, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.flow.weight, 0.0, 1e-5)
        nn.init.zeros_(self.flow.bias)
        self.integrator = VelocityIntegrator() if diffeomorphic else None

    def forward(
        self, moving_features: Sequence[torch.Tensor], fixed_features: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [torch.cat([m, f], dim=1) for m, f in zip(moving_features, fixed_features)]
        x = self.bottom(pairs[-1])
        for block, skip in zip(self.blocks, reversed(pairs[self.flow_level:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        flow = self.flow(x)
        return self.to_full_resolution(flow, pairs[0].shape[2:]), flow

    def to_full_resolution(self, flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """Displacement ``(B, 3, *size)`` in full-resolution voxels from a raw flow."""
        ddf = self.integrator(flow) if self.integrator is not None else flow
        if self.flow_level == 0:
            return ddf
        scale = 2**self.flow_level
        return F.interpolate(ddf, size=tuple(size), mode="trilinear", align_corners=False) * scale

    def inverse(self, flow: torch.Tensor, size: Sequence[int]) -> torch.Tensor | None:
        """Full-resolution inverse displacement from the raw flow (diffeomorphic variant only)."""
        return self.to_full_resolution(-flow, size) if self.integrator is not None else None
