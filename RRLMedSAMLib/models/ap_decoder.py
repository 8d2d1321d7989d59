"""Auto-prompting (AP) decoder: the medical branch's segmentation decoder, prompted by the general branch.

The paper says the general branch's mask, with its gradient stopped, prompts the medical branch's
decoder; how the prompt enters is not specified. Our design is a 3-D analogue of SAM's dense
(mask) prompt: SAM embeds a mask prompt with a small strided conv stack and *adds* the result to
the image embedding. Here :class:`DensePromptEncoder3D` embeds the soft mask
``(B, K, D, H, W)`` into a pyramid - one conv (instance norm, LeakyReLU) at full resolution, then
one stride-2 conv per coarser level - and a 1x1x1 projection per level maps each pyramid level to
that encoder level's width. The embeddings are added to the medical encoder's features at every
scale, and the sum goes through a plain :class:`SegmentationDecoder`. When no prompt is given, a
learned per-level "no mask" embedding is added instead (SAM's ``no_mask_embed``), so the decoder
can also run unprompted. Addition (rather than concatenation) keeps the decoder identical to the
plain one; the prompt encoder adds about 44 k parameters with the default widths.

The prompt is ``.detach()``-ed inside :meth:`APDecoder.forward`: no gradient reaches the general
branch through it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

from .encoder3d import DEFAULT_CHANNELS
from .segmentation_decoder import SegmentationDecoder


class DensePromptEncoder3D(nn.Module):
    """Soft mask ``(B, K, D, H, W)`` -> per-level embeddings ``(B, feature_channels[i], D/2**i, H/2**i, W/2**i)``.

    Args:
        prompt_channels: ``K``, channels of the prompt mask (class probabilities).
        feature_channels: widths of the encoder levels to add to, finest first.
        hidden_channels: widths of the prompt pyramid; default a quarter of ``feature_channels`` (min 4).
    """

    def __init__(
        self,
        prompt_channels: int,
        feature_channels: Sequence[int] = DEFAULT_CHANNELS,
        hidden_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        feature_channels = tuple(int(c) for c in feature_channels)
        if hidden_channels is None:
            hidden_channels = tuple(max(4, c // 4) for c in feature_channels)
        hidden_channels = tuple(int(c) for c in hidden_channels)
        if len(hidden_channels) != len(feature_channels):
            raise ValueError("hidden_channels needs one width per feature level")
        act = ("leakyrelu", {"negative_slope": 0.2})
        downs = []
        previous = int(prompt_channels)
        for level, width in enumerate(hidden_channels):
            downs.append(Convolution(3, previous, width, strides=1 if level == 0 else 2, act=act, norm="instance"))
            previous = width
        self.prompt_channels = int(prompt_channels)
        self.feature_channels = feature_channels
        self.downs = nn.ModuleList(downs)
        self.projections = nn.ModuleList(nn.Conv3d(h, c, kernel_size=1) for h, c in zip(hidden_channels, feature_channels))
        self.no_mask = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1, 1)) for c in feature_channels)

    def forward(self, prompt: torch.Tensor | None, feature_shapes: Sequence[torch.Size]) -> list[torch.Tensor]:
        """Embeddings resized to ``feature_shapes`` (the encoder features' full shapes ``(B, C, D, H, W)``)."""
        if prompt is None:
            return [embed.expand(shape[0], -1, *shape[2:]) for embed, shape in zip(self.no_mask, feature_shapes)]
        if prompt.shape[1] != self.prompt_channels:
            raise ValueError(f"prompt has {prompt.shape[1]} channels, the AP decoder expects {self.prompt_channels}")
        x = prompt
        if tuple(x.shape[2:]) != tuple(feature_shapes[0][2:]):
            x = F.interpolate(x, size=feature_shapes[0][2:], mode="trilinear", align_corners=False)
        embeddings = []
        for down, project, shape in zip(self.downs, self.projections, feature_shapes):
            x = down(x)
            embedding = project(x)
            if tuple(embedding.shape[2:]) != tuple(shape[2:]):
                embedding = F.interpolate(embedding, size=shape[2:], mode="trilinear", align_corners=False)
            embeddings.append(embedding)
        return embeddings


class APDecoder(nn.Module):
    """Segmentation decoder over the medical encoder's features, prompted by the general branch's mask.

    Args:
        n_classes: output classes including background.
        prompt_channels: channels of the prompt (default ``n_classes``: the general branch's softmax).
        encoder_channels: the medical encoder's level widths, finest first.
        decoder_channels: see :class:`SegmentationDecoder`.

    ``forward(features, prompt)``: ``features`` is the list ``Encoder3D`` returns; ``prompt`` the
    general branch's soft probabilities ``(B, K, D, H, W)`` (resized to level 0 if needed) or
    ``None``. Returns logits ``(B, n_classes, D, H, W)`` at level-0 resolution.
    """

    def __init__(
        self,
        n_classes: int,
        prompt_channels: int | None = None,
        encoder_channels: Sequence[int] = DEFAULT_CHANNELS,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.prompt_encoder = DensePromptEncoder3D(prompt_channels or n_classes, encoder_channels)
        self.decoder = SegmentationDecoder(n_classes, encoder_channels, decoder_channels)

    @property
    def n_classes(self) -> int:
        return self.decoder.n_classes

    def forward(self, features: Sequence[torch.Tensor], prompt: torch.Tensor | None) -> torch.Tensor:
        prompt = prompt.detach() if prompt is not None else None
        embeddings = self.prompt_encoder(prompt, [f.shape for f in features])
        return self.decoder([f + e for f, e in zip(features, embeddings)])
