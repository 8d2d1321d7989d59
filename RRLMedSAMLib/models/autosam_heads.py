"""AutoSAM baseline heads: frozen SAM encoder + a prompt-free head trained slice by slice (box "baseline head").

Each head maps teacher features ``(B, 256, g, g)`` (``g = S/16``; ``B`` slices) to class logits
``(B, n_classes, S, S)``:

* :class:`SamMaskDecoderHead` ("ViT" head) - SAM's own ``MaskDecoder`` without prompt tokens: no
  sparse prompt embeddings at all, the dense prompt is SAM's learned "no mask" embedding. It keeps
  SAM's IoU token as an input token (the pretrained transformer saw it) but drops the unused IoU
  prediction MLP, and uses one mask token (with its hypernetwork MLP) per class, predicting all
  classes in one pass; SAM's decoder predicts at ``4 g`` and the logits are upsampled bilinearly
  to ``S``. Initialised from a checkpoint's ``mask_decoder.*`` weights when available: token ``i``
  (and MLP ``i``) starts from SAM's token ``i mod 4``.
* :class:`CNNHead` - 3x3 conv, then four (upsample x2, 3x3 conv) stages, then a 1x1 conv.
* :class:`LinearHead` - 1x1 conv to the classes, bilinear upsampling x16.

Helpers turn one volume's teacher features and label map into a batch of slices and put the slice
predictions back on the volume grid (:func:`labels_to_slices`, :func:`slice_logits_to_volume`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..sam.checkpoints import VerifiedCheckpoint, load_state_dict, submodule_state_dict
from ..sam.modeling import sam_modeling_module
from .sam_teacher import SamTeacher

HEAD_KINDS = ("vit", "cnn", "linear")
SAM_EMBED_DIM = 256


def _adapt_mask_decoder_state(
    official: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Map SAM's 4-token mask decoder weights onto a decoder with ``n`` mask tokens (token i <- i mod 4)."""
    if "mask_tokens.weight" not in official:
        raise InputError("the checkpoint's mask_decoder weights are incomplete (no mask_tokens)")
    n_official = official["mask_tokens.weight"].shape[0]
    adapted = {}
    for key, value in target.items():
        source_key = key
        parts = key.split(".")
        if parts[0] == "output_hypernetworks_mlps":
            parts[1] = str(int(parts[1]) % n_official)
            source_key = ".".join(parts)
        source = official.get(source_key)
        if source is None:
            raise InputError(f"the checkpoint's mask_decoder weights lack {source_key}")
        if source.shape != value.shape:
            if key == "mask_tokens.weight":
                source = source[[i % source.shape[0] for i in range(value.shape[0])]]
            if source.shape != value.shape:
                raise InputError(f"mask_decoder tensor {key}: checkpoint {tuple(source.shape)} vs head {tuple(value.shape)}")
        adapted[key] = source.clone()
    return adapted


class SamMaskDecoderHead(nn.Module):
    """SAM's mask decoder as a prompt-free multi-class head (see the module docstring).

    Args:
        n_classes: classes including background (one mask token each).
        slice_size: ``S``; the output is ``(B, n_classes, S, S)``.
        patch_size: SAM's patch size (16): input grid ``g = S / patch_size``.
        sam_state: optional whole-SAM state dict (``mask_decoder.*``, ``prompt_encoder.*`` keys) to
            initialise from; random initialisation otherwise.
    """

    def __init__(
        self, n_classes: int, *, slice_size: int = 128, patch_size: int = 16, sam_state: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        if n_classes < 1:
            raise ValueError("n_classes must be at least 1")
        decoder_module = sam_modeling_module("mask_decoder")
        transformer_module = sam_modeling_module("transformer")
        prompt_module = sam_modeling_module("prompt_encoder")
        self.n_classes = int(n_classes)
        self.slice_size = int(slice_size)
        self.grid = self.slice_size // patch_size
        self.decoder = decoder_module.MaskDecoder(
            transformer_dim=SAM_EMBED_DIM,
            transformer=transformer_module.TwoWayTransformer(depth=2, embedding_dim=SAM_EMBED_DIM, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=self.n_classes - 1,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.decoder.iou_prediction_head = nn.Identity()
        self.pe_layer = prompt_module.PositionEmbeddingRandom(SAM_EMBED_DIM // 2)
        self.no_mask_embed = nn.Parameter(torch.zeros(1, SAM_EMBED_DIM, 1, 1))
        if sam_state is not None:
            self.load_sam_weights(sam_state)

    @classmethod
    def from_checkpoint(cls, n_classes: int, checkpoint: VerifiedCheckpoint, *, slice_size: int = 128) -> SamMaskDecoderHead:
        """Head initialised from a verified whole-SAM checkpoint."""
        return cls(n_classes, slice_size=slice_size, sam_state=load_state_dict(checkpoint.path))

    def load_sam_weights(self, sam_state: Mapping[str, torch.Tensor]) -> None:
        """Copy SAM's mask decoder, positional-encoding matrix and no-mask embedding."""
        official = submodule_state_dict(sam_state, "mask_decoder.")
        if not official:
            raise InputError("the checkpoint holds no SAM mask decoder (no 'mask_decoder.*' keys)")
        self.decoder.load_state_dict(_adapt_mask_decoder_state(official, self.decoder.state_dict()))
        gaussian = sam_state.get("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
        if gaussian is not None:
            self.pe_layer.positional_encoding_gaussian_matrix.copy_(gaussian)
        no_mask = sam_state.get("prompt_encoder.no_mask_embed.weight")
        if no_mask is not None:
            with torch.no_grad():
                self.no_mask_embed.copy_(no_mask.reshape(1, -1, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, 256, g, g)`` -> logits ``(B, n_classes, S, S)``."""
        batch, _, height, width = features.shape
        decoder = self.decoder
        src = features + self.no_mask_embed
        pos = self.pe_layer((height, width)).unsqueeze(0).expand(batch, -1, -1, -1)
        tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(batch, -1, -1)
        hidden, src = decoder.transformer(src, pos, tokens)
        mask_tokens = hidden[:, 1 : 1 + decoder.num_mask_tokens, :]
        upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(batch, SAM_EMBED_DIM, height, width))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1)
        masks = (hyper @ upscaled.flatten(2)).view(batch, decoder.num_mask_tokens, *upscaled.shape[2:])
        return F.interpolate(masks, size=(self.slice_size, self.slice_size), mode="bilinear", align_corners=False)


def _conv_norm_act(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.GroupNorm(math.gcd(8, out_channels), out_channels),
        nn.GELU(),
    )


class CNNHead(nn.Module):
    """Small CNN head: ``(B, 256, g, g)`` -> logits ``(B, n_classes, 16 g, 16 g)``.

    Args:
        n_classes: classes including background.
        in_channels: teacher feature channels (256).
        widths: one width per x2 upsampling stage (four stages = x16).
    """

    def __init__(self, n_classes: int, in_channels: int = SAM_EMBED_DIM, widths: tuple[int, ...] = (128, 64, 32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_norm_act(in_channels, widths[0])]
        previous = widths[0]
        for width in widths:
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _conv_norm_act(previous, width)]
            previous = width
        layers.append(nn.Conv2d(previous, n_classes, kernel_size=1))
        self.layers = nn.Sequential(*layers)
        self.n_classes = int(n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class LinearHead(nn.Module):
    """Linear probe: 1x1 conv ``(B, 256, g, g)`` -> ``(B, n_classes, g, g)``, bilinear upsampling by ``scale``."""

    def __init__(self, n_classes: int, in_channels: int = SAM_EMBED_DIM, scale: int = 16) -> None:
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, n_classes, kernel_size=1)
        self.scale = int(scale)
        self.n_classes = int(n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(features)
        return F.interpolate(logits, scale_factor=self.scale, mode="bilinear", align_corners=False)


def build_autosam_head(
    kind: str, n_classes: int, *, slice_size: int = 128, checkpoint: VerifiedCheckpoint | None = None
) -> nn.Module:
    """``kind`` in ``("vit", "cnn", "linear")``; ``checkpoint`` initialises the ViT head's decoder."""
    if kind == "vit":
        if checkpoint is not None:
            return SamMaskDecoderHead.from_checkpoint(n_classes, checkpoint, slice_size=slice_size)
        return SamMaskDecoderHead(n_classes, slice_size=slice_size)
    if kind == "cnn":
        return CNNHead(n_classes)
    if kind == "linear":
        return LinearHead(n_classes)
    raise InputError(f"unknown AutoSAM head {kind!r}; expected one of {HEAD_KINDS}")


def features_to_slices(teacher_features: torch.Tensor) -> torch.Tensor:
    """One volume's teacher features ``(256, n, g, g)`` -> a batch of slices ``(n, 256, g, g)``."""
    return teacher_features.permute(1, 0, 2, 3)


def labels_to_slices(labels: torch.Tensor, axis: int, slice_size: int) -> torch.Tensor:
    """Label map ``(D, H, W)`` -> per-slice targets ``(n, S, S)`` (int64, nearest neighbour), matching the teacher."""
    slices = labels.movedim(axis, 0).unsqueeze(1).float()
    resized = F.interpolate(slices, size=(slice_size, slice_size), mode="nearest-exact")
    return resized[:, 0].round().long()


def slice_logits_to_volume(logits: torch.Tensor, volume_shape: tuple[int, int, int], axis: int) -> torch.Tensor:
    """Slice logits ``(n, K, S, S)`` -> volume logits ``(K, D, H, W)`` (bilinear in-plane, axis restored)."""
    in_plane = [size for a, size in enumerate(volume_shape) if a != axis]
    if logits.shape[0] != volume_shape[axis]:
        raise ValueError(f"{logits.shape[0]} slices for a volume with {volume_shape[axis]} slices along axis {axis}")
    resized = F.interpolate(logits, size=tuple(in_plane), mode="bilinear", align_corners=False)
    return resized.permute(1, 0, 2, 3).movedim(1, 1 + axis)


@torch.no_grad()
def predict_autosam_volume(
    head: nn.Module, teacher: SamTeacher, volume_features: torch.Tensor, shape_zyx: tuple[int, int, int], batch: int = 16
) -> np.ndarray:
    """Class probabilities ``(K, D, H, W)`` on the working grid from a volume's teacher features ``(256, n, g, g)``."""
    device = next(head.parameters()).device
    slices = features_to_slices(volume_features)
    logits = torch.cat([head(slices[i:i + batch].to(device).float()).cpu() for i in range(0, len(slices), batch)])
    volume = slice_logits_to_volume(logits, shape_zyx, teacher.axis)
    return torch.softmax(volume, dim=0).numpy()
