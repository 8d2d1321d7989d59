"""Plain 3-D UNet-style segmentation decoder over ``Encoder3D`` features.

It is the general branch's segmentation head, the head of the plain segmentation network, and
the decoder inside the auto-prompting decoder (:mod:`RRLMedSAMLib.models.ap_decoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .encoder3d import DEFAULT_CHANNELS, conv_block

#: Decoder widths per level (finest first), one fewer than the encoder's levels.
DEFAULT_DECODER_CHANNELS = (16, 32, 48, 64)


class SegmentationDecoder(nn.Module):
    """UNet decoder: from the deepest level up, upsample (trilinear) to the next finer level,
    concatenate that level's encoder features, apply two 3x3x3 conv blocks; a final 1x1x1
    convolution gives class logits at level 0 (stride 1, full resolution).

    Args:
        n_classes: output classes including background.
        encoder_channels: channels of the encoder levels, finest first (``Encoder3D.channels``).
        decoder_channels: widths of the decoder stages for levels ``0 .. L-2``, finest first.

    Input: list of ``L`` tensors, level ``i`` of shape ``(B, encoder_channels[i], D_i, H_i, W_i)``
    (any sizes; each is upsampled to the next finer level's exact size).
    Output: logits ``(B, n_classes, D_0, H_0, W_0)``.
    """

    def __init__(
        self,
        n_classes: int,
        encoder_channels: Sequence[int] = DEFAULT_CHANNELS,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        encoder_channels = tuple(int(c) for c in encoder_channels)
        if decoder_channels is None:
            decoder_channels = DEFAULT_DECODER_CHANNELS[: len(encoder_channels) - 1]
        decoder_channels = tuple(int(c) for c in decoder_channels)
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(f"need {len(encoder_channels) - 1} decoder widths, got {len(decoder_channels)}")
        if n_classes < 1:
            raise ValueError("n_classes must be at least 1")
        self.n_classes = int(n_classes)
        self.encoder_channels = encoder_channels
        self.decoder_channels = decoder_channels
        stages = []
        below = encoder_channels[-1]
        for level in range(len(encoder_channels) - 2, -1, -1):
            stages.append(conv_block(below + encoder_channels[level], decoder_channels[level]))
            below = decoder_channels[level]
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv3d(decoder_channels[0], self.n_classes, kernel_size=1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.encoder_channels):
            raise ValueError(f"expected {len(self.encoder_channels)} feature levels, got {len(features)}")
        x = features[-1]
        for stage, skip in zip(self.stages, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return self.head(x)
