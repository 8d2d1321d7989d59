"""Lightweight 3-D convolutional encoder shared by every branch.

The same class is the general encoder (distilled from SAM), the medical-specific encoder (shared
by the registration and segmentation decoders) and the encoder of the plain segmentation network;
mutual-EMA averages two instances weight by weight, so they must have identical architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

DEFAULT_CHANNELS = (16, 32, 64, 96, 128)


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """Two 3x3x3 convolutions with instance norm and LeakyReLU; the first may downsample."""
    return nn.Sequential(
        Convolution(3, in_channels, out_channels, strides=stride, act=("leakyrelu", {"negative_slope": 0.2}), norm="instance"),
        Convolution(3, out_channels, out_channels, act=("leakyrelu", {"negative_slope": 0.2}), norm="instance"),
    )


class Encoder3D(nn.Module):
    """Multi-scale 3-D feature extractor.

    Args:
        in_channels: image channels (1 for a grey-level scan).
        channels: feature channels per level; level ``i`` has stride ``2**i``.

    Input ``(B, in_channels, D, H, W)`` with ``D, H, W`` divisible by ``2**(len(channels)-1)``.
    Output: list of ``len(channels)`` tensors, level ``i`` of shape ``(B, channels[i], D/2**i, H/2**i, W/2**i)``.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        levels = []
        previous = in_channels
        for level, width in enumerate(self.channels):
            levels.append(conv_block(previous, width, stride=1 if level == 0 else 2))
            previous = width
        self.levels = nn.ModuleList(levels)

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = image
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``module``."""
    return sum(p.numel() for p in module.parameters())
