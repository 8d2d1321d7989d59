"""A randomly initialised, full-size SAM checkpoint saved with the official key layout (for tests).

The official ``sam_vit_b_01ec64.pth`` cannot be downloaded here; this file has the same keys and
shapes (image encoder, prompt encoder, mask decoder), so loading, verification and import code is
tested on a real-size file. Its values are random: it says nothing about SAM's quality.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from RRLMedSAMLib.models.sam_teacher import build_image_encoder
from RRLMedSAMLib.sam.modeling import sam_modeling_module


def write_official_like_sam(path: str | Path, model_type: str = "vit_b", seed: int = 0) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """Save a random SAM ``model_type`` state dict at ``path``; returns it and the in-memory image encoder."""
    torch.manual_seed(seed)
    encoder = build_image_encoder(model_type, img_size=1024).eval()
    prompt_encoder = sam_modeling_module("prompt_encoder").PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    transformer = sam_modeling_module("transformer").TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    mask_decoder = sam_modeling_module("mask_decoder").MaskDecoder(
        transformer_dim=256, transformer=transformer, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256
    )
    state = {}
    for prefix, module in (("image_encoder", encoder), ("prompt_encoder", prompt_encoder), ("mask_decoder", mask_decoder)):
        state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    torch.save(state, path)
    return state, encoder
