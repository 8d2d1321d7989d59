"""Plain 3-D segmentation network: :class:`Encoder3D` + :class:`SegmentationDecoder`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from RRLMedSAMLib.models.encoder3d import DEFAULT_CHANNELS, Encoder3D
from RRLMedSAMLib.models.segmentation_decoder import SegmentationDecoder


class SegmentationNetwork(nn.Module):
    """Image ``(B, 1, D, H, W)`` in [0, 1] -> class logits ``(B, num_classes, D, H, W)``.

    The decoder widths follow the encoder's (one per level but the deepest).
    """

    def __init__(self, channels: Sequence[int] = DEFAULT_CHANNELS, num_classes: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder3D(1, channels)
        self.decoder = SegmentationDecoder(num_classes, self.encoder.channels, self.encoder.channels[:-1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(image))
