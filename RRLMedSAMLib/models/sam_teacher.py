"""SAM teacher: frozen SAM image encoder applied slice by slice to a 3-D volume (method box "SAM teacher").

The encoder is segment-anything's own ``ImageEncoderViT`` (loaded torchvision-free, see
:mod:`RRLMedSAMLib.sam.modeling`) with the ``build_sam`` hyper-parameters of vit_b/l/h. The
official weights are made for 1024x1024 inputs; RRL-MedSAM runs SAM at smaller slices (128), so the
encoder is built for the configured slice size ``S`` and the size-dependent weights are resized by
interpolation at load time:

* the absolute positional embedding ``pos_embed`` (1, 64, 64, C) -> (1, S/16, S/16, C), bilinear
  (antialiased when shrinking);
* the relative-position tables of the *global*-attention blocks (``rel_pos_h/w``, 2*64-1 rows) ->
  2*(S/16)-1 rows, linear, exactly the interpolation SAM's own ``get_rel_pos`` would do at run time.
  Windowed blocks keep their 27-row tables (window 14; at S/16 < 14 the grid is zero-padded to one
  window, as in SAM).

Slice preprocessing (SAM's convention): intensities in [0, 1] -> 0..255, grey replicated to 3
channels, minus pixel mean / over pixel std (ImageNet values used by SAM), each slice resized
(stretched, not padded) to S x S so that the teacher grid covers the slice exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..sam.checkpoints import VerifiedCheckpoint, image_encoder_state_dict, infer_model_type, load_state_dict
from ..sam.modeling import sam_modeling_module

#: SAM's pixel normalisation on the 0..255 scale (R, G, B).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
#: Input size the official checkpoints were trained at.
PRETRAINED_IMAGE_SIZE = 1024


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a SAM ``ImageEncoderViT`` (as in ``segment_anything.build_sam``)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    patch_size: int = 16
    out_chans: int = 256
    mlp_ratio: float = 4.0


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": EncoderConfig(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": EncoderConfig(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
#: A few-thousand-parameter ViT (plus the 256-channel neck) for fast functional tests.
TINY_ENCODER_CONFIG = EncoderConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), window_size=2)


def _config_name(config: EncoderConfig | str) -> str:
    if isinstance(config, str):
        return config
    for name, known in {**ENCODER_CONFIGS, "tiny": TINY_ENCODER_CONFIG}.items():
        if config == known:
            return name
    return f"custom-{config.embed_dim}x{config.depth}"


def build_image_encoder(config: EncoderConfig | str, img_size: int = PRETRAINED_IMAGE_SIZE) -> nn.Module:
    """A randomly initialised SAM ``ImageEncoderViT`` for ``img_size`` x ``img_size`` inputs.

    Input ``(N, 3, img_size, img_size)`` normalised as SAM expects; output
    ``(N, out_chans, img_size/16, img_size/16)``.
    """
    if isinstance(config, str):
        if config not in ENCODER_CONFIGS:
            raise InputError(f"unknown SAM encoder {config!r}; expected one of {sorted(ENCODER_CONFIGS)}")
        config = ENCODER_CONFIGS[config]
    if img_size % config.patch_size:
        raise InputError(f"SAM slice size must be a multiple of {config.patch_size}, got {img_size}")
    module = sam_modeling_module("image_encoder")
    return module.ImageEncoderViT(
        img_size=img_size,
        patch_size=config.patch_size,
        in_chans=3,
        embed_dim=config.embed_dim,
        depth=config.depth,
        num_heads=config.num_heads,
        mlp_ratio=config.mlp_ratio,
        out_chans=config.out_chans,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_abs_pos=True,
        use_rel_pos=True,
        window_size=config.window_size,
        global_attn_indexes=config.global_attn_indexes,
    )


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Absolute positional embedding ``(1, h, w, C)`` -> ``(1, grid[0], grid[1], C)`` (bilinear)."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    shrinking = grid[0] < pos_embed.shape[1] or grid[1] < pos_embed.shape[2]
    resized = F.interpolate(
        pos_embed.permute(0, 3, 1, 2).float(), size=grid, mode="bilinear", align_corners=False, antialias=shrinking
    )
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Relative-position table ``(L, C)`` -> ``(length, C)``; same interpolation as SAM's ``get_rel_pos``."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.float().T.unsqueeze(0), size=length, mode="linear")
    return resized[0].T.contiguous().to(table.dtype)


def resize_positional_weights(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Adapt an image-encoder state dict to the shapes of ``reference`` (a freshly built encoder's).

    Only ``pos_embed`` and ``*.rel_pos_h``/``*.rel_pos_w`` may differ; any other shape mismatch
    means the checkpoint is for another architecture and raises :class:`InputError`.
    """
    adapted = {}
    for key, value in state.items():
        target = reference.get(key)
        if target is not None and value.shape != target.shape:
            if key == "pos_embed":
                value = resize_pos_embed(value, (target.shape[1], target.shape[2]))
            elif key.endswith(("rel_pos_h", "rel_pos_w")):
                value = resize_rel_pos(value, target.shape[0])
            else:
                raise InputError(
                    f"checkpoint tensor {key} has shape {tuple(value.shape)}, the encoder expects {tuple(target.shape)}: "
                    "wrong model type for these weights"
                )
        adapted[key] = value
    return adapted


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes, dtypes and bytes); identifies random weights."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def slices_to_sam_input(slices: torch.Tensor, slice_size: int) -> torch.Tensor:
    """Grey slices ``(N, H, W)`` with values in [0, 1] -> SAM input ``(N, 3, S, S)``.

    Values are clipped to [0, 1], scaled to 0..255, resized (bilinear, antialiased when shrinking)
    to ``slice_size`` squared, replicated to 3 channels and normalised with SAM's pixel mean/std.
    """
    x = slices.float().clamp(0.0, 1.0).unsqueeze(1) * 255.0
    if tuple(x.shape[-2:]) != (slice_size, slice_size):
        shrinking = x.shape[-2] > slice_size or x.shape[-1] > slice_size
        x = F.interpolate(x, size=(slice_size, slice_size), mode="bilinear", align_corners=False, antialias=shrinking)
    mean = torch.tensor(SAM_PIXEL_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, device=x.device).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def as_volume(volume: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Accept ``(D, H, W)``, ``(1, D, H, W)`` or ``(1, 1, D, H, W)``; return float32 ``(D, H, W)``."""
    if isinstance(volume, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    else:
        tensor = torch.as_tensor(volume)
    while tensor.ndim > 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3:
        raise InputError(f"the SAM teacher needs a single 3-D volume, got shape {tuple(volume.shape)}")
    return tensor.float()


class SamTeacher(nn.Module):
    """Frozen SAM image encoder applied slice by slice.

    Args:
        encoder: an ``ImageEncoderViT`` built for ``slice_size`` (see :func:`build_image_encoder`).
        model_type: ``vit_b``/``vit_l``/``vit_h`` or ``tiny`` (tests); part of the cache key.
        weights_id: sha256 of the checkpoint file (or of the random weights); part of the cache key.
        slice_size: ``S``, the side of the square slice fed to SAM (128, 256 or 1024; 64 for tiny).
        axis: volume axis (0, 1 or 2 of ``(D, H, W)``) the slices are taken along.
        batch_size: slices per forward pass.
        autocast: on CUDA, run in bfloat16 (or float16 where bfloat16 is unsupported).

    :meth:`encode_volume` maps a volume ``(D, H, W)`` in [0, 1] to teacher features
    ``(256, n_slices, S/16, S/16)`` float32 on the CPU, ``n_slices`` being the size along ``axis``
    and the last two axes the remaining volume axes in their original order (resampled).
    """

    def __init__(
        self,
        encoder: nn.Module,
        *,
        model_type: str,
        weights_id: str | None = None,
        slice_size: int = 128,
        axis: int = 0,
        batch_size: int = 8,
        autocast: bool = True,
    ) -> None:
        super().__init__()
        if axis not in (0, 1, 2):
            raise InputError(f"slice axis must be 0, 1 or 2, got {axis}")
        self.encoder = encoder
        self.model_type = model_type
        self.slice_size = int(slice_size)
        self.axis = int(axis)
        self.batch_size = max(1, int(batch_size))
        self.autocast = autocast
        self.patch_size = int(encoder.patch_embed.proj.kernel_size[0])
        self.out_channels = int(encoder.neck[0].out_channels)
        self._weights_id = weights_id
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: VerifiedCheckpoint,
        *,
        slice_size: int = 128,
        axis: int = 0,
        config: EncoderConfig | None = None,
        **kwargs,
    ) -> SamTeacher:
        """Load verified official (or accepted custom) weights, resized for ``slice_size``.

        ``config`` overrides the encoder hyper-parameters (otherwise those of the manifest entry's
        model type, or inferred from the tensors for custom weights).
        """
        encoder_state = image_encoder_state_dict(load_state_dict(checkpoint.path))
        if config is not None:
            model_type = _config_name(config)
        else:
            model_type = checkpoint.model_type or infer_model_type(encoder_state)
        encoder = build_image_encoder(config or model_type, img_size=slice_size)
        adapted = resize_positional_weights(encoder_state, encoder.state_dict())
        try:
            encoder.load_state_dict(adapted, strict=True)
        except RuntimeError as error:
            raise InputError(f"{checkpoint.path} does not fit a SAM {model_type} image encoder: {error}") from error
        return cls(encoder, model_type=model_type, weights_id=checkpoint.sha256, slice_size=slice_size, axis=axis, **kwargs)

    @classmethod
    def random(
        cls, config: EncoderConfig | str = "vit_b", *, slice_size: int = 128, axis: int = 0, seed: int = 0, **kwargs
    ) -> SamTeacher:
        """Randomly initialised teacher (tests, benchmarks, or the tiny mode with ``TINY_ENCODER_CONFIG``)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_image_encoder(config, img_size=slice_size)
        return cls(encoder, model_type=_config_name(config), slice_size=slice_size, axis=axis, **kwargs)

    @classmethod
    def tiny(cls, *, slice_size: int = 64, axis: int = 0, seed: int = 0, **kwargs) -> SamTeacher:
        """Tiny random teacher (embed 32, depth 2) producing real 256-channel feature volumes fast."""
        return cls.random(TINY_ENCODER_CONFIG, slice_size=slice_size, axis=axis, seed=seed, **kwargs)

    def train(self, mode: bool = True) -> SamTeacher:
        """The teacher is frozen: it always stays in evaluation mode."""
        return super().train(False)

    @property
    def grid_size(self) -> int:
        """Side of the teacher feature map per slice: ``S / 16``."""
        return self.slice_size // self.patch_size

    @property
    def weights_id(self) -> str:
        """sha256 identifying the weights (checkpoint file hash, or hash of the random weights)."""
        if self._weights_id is None:
            self._weights_id = state_dict_sha256(self.encoder)
        return self._weights_id

    def identity(self) -> dict[str, str]:
        """Everything the teacher features depend on besides the volume (the cache key)."""
        return {
            "teacher": self.model_type,
            "weights_sha256": self.weights_id,
            "slice_size": str(self.slice_size),
            "axis": str(self.axis),
            "preprocessing": "sam-rgb-meanstd-stretch-v1",
        }

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast and device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def forward(self, sam_input: torch.Tensor) -> torch.Tensor:
        """SAM-normalised slices ``(N, 3, S, S)`` -> features ``(N, 256, S/16, S/16)`` float32."""
        with torch.no_grad(), self._autocast(sam_input.device):
            return self.encoder(sam_input).float()

    def encode_slices(self, slices: torch.Tensor) -> torch.Tensor:
        """Grey slices ``(N, H, W)`` in [0, 1] -> features ``(N, 256, S/16, S/16)`` float32 on the CPU."""
        device = next(self.encoder.parameters()).device
        outputs = []
        for start in range(0, slices.shape[0], self.batch_size):
            batch = slices_to_sam_input(slices[start : start + self.batch_size].to(device), self.slice_size)
            outputs.append(self(batch).cpu())
        return torch.cat(outputs)

    def encode_volume(self, volume: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Volume ``(D, H, W)`` in [0, 1] -> teacher features ``(256, n_slices, S/16, S/16)`` float32 (CPU)."""
        slices = as_volume(volume).movedim(self.axis, 0)
        return self.encode_slices(slices).permute(1, 0, 2, 3).contiguous()
