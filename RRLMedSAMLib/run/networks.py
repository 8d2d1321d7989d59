"""Build the networks of a run from its configuration (training and segment use the same code).

Module names are the keys of ``model.safetensors`` (``<name>.<parameter>``):

* ``plain``: ``registration`` (RegistrationNetwork), ``segmentation`` (SegmentationNetwork).
* ``rrl*``: ``registration`` (RegistrationNetwork whose ``encoder`` *is* the medical-specific
  encoder), ``general_encoder`` + ``general_decoder`` (general branch), ``ap_decoder`` (on the
  medical encoder's features) and, when distilling, ``distillation`` (the 1x1x1 projection onto
  the teacher's 256 channels; used in training only).
* ``autosam-*``: ``head`` (the AutoSAM head; the frozen SAM encoder is not saved).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from RRLMedSAMLib.models.ap_decoder import APDecoder
from RRLMedSAMLib.models.autosam_heads import build_autosam_head
from RRLMedSAMLib.models.distillation_losses import DistillationCriterion
from RRLMedSAMLib.models.encoder3d import Encoder3D, count_parameters
from RRLMedSAMLib.models.segmentation_decoder import SegmentationDecoder
from RRLMedSAMLib.models.segmentation_network import SegmentationNetwork
from RRLMedSAMLib.registration.network import RegistrationNetwork
from RRLMedSAMLib.run.checkpoint import load_weights
from RRLMedSAMLib.run.config import run_settings
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings
from RRLMedSAMLib.sam.checkpoints import VerifiedCheckpoint

#: Parameters of SAM ViT-B's image encoder at 1024 x 1024 (the general encoder's 3 % budget).
SAM_VIT_B_ENCODER_PARAMETERS = 89_670_912


def build_networks(preset: Preset, num_classes: int) -> dict[str, nn.Module]:
    """``{"registration": RegistrationNetwork, "segmentation": SegmentationNetwork}`` for ``preset``."""
    return {
        "registration": RegistrationNetwork(channels=preset.channels, diffeomorphic=preset.diffeomorphic),
        "segmentation": SegmentationNetwork(channels=preset.channels, num_classes=num_classes),
    }


def build_rrl_networks(
    preset: Preset, num_classes: int, settings: RRLSettings, distill: bool
) -> dict[str, nn.Module]:
    """Networks of the RRL-MedSAM family (see the module docstring); the two encoders are identical in shape."""
    channels = preset.channels
    medical = Encoder3D(1, channels)
    networks: dict[str, nn.Module] = {
        "registration": RegistrationNetwork(encoder=medical, diffeomorphic=preset.diffeomorphic),
        "general_encoder": Encoder3D(1, channels),
        "general_decoder": SegmentationDecoder(num_classes, channels, channels[:-1]),
        "ap_decoder": APDecoder(num_classes, encoder_channels=channels, decoder_channels=channels[:-1]),
    }
    if distill:
        networks["distillation"] = DistillationCriterion(
            channels[-1], axis=settings.slice_axis, kind=settings.distill_loss
        )
    return networks


def build_method_networks(
    method: Method,
    preset: Preset,
    num_classes: int,
    settings: RRLSettings,
    teacher: dict,
    checkpoint: VerifiedCheckpoint | None = None,
) -> dict[str, nn.Module]:
    """The trainable networks of ``method`` (``teacher`` is the run's teacher record).

    ``checkpoint`` (official SAM weights) initialises the AutoSAM ViT head's mask decoder.
    """
    if method.family == "plain":
        return build_networks(preset, num_classes)
    if method.family == "rrl":
        return build_rrl_networks(preset, num_classes, settings, distill=method.distill and teacher["name"] != "none")
    head = build_autosam_head(method.head or "", num_classes, slice_size=settings.slice_size, checkpoint=checkpoint)
    return {"head": head}


def parameter_counts(networks: dict[str, nn.Module]) -> dict[str, Any]:
    """Parameter count of every network and their total (plain and generic runs)."""
    counts: dict[str, Any] = {name: count_parameters(module) for name, module in networks.items()}
    counts["total"] = sum(counts.values())
    return counts


def rrl_parameter_counts(networks: dict[str, nn.Module]) -> dict[str, Any]:
    """Model-card counts of an RRL run.

    ``registration`` = medical encoder + registration decoder; ``segmentation`` = what only
    segmentation uses (general encoder and decoder, AP decoder); ``total`` = their sum, every
    parameter ``segment`` needs, the shared medical encoder counted once. The distillation
    projection is training-only and outside ``total``.
    """
    registration = networks["registration"]
    general = count_parameters(networks["general_encoder"])
    counts: dict[str, Any] = {
        "registration": count_parameters(registration),
        "segmentation": general + count_parameters(networks["general_decoder"]) + count_parameters(networks["ap_decoder"]),
        "general_encoder": general,
        "medical_encoder": count_parameters(registration.encoder),
        "registration_decoder": count_parameters(registration.decoder),
        "general_decoder": count_parameters(networks["general_decoder"]),
        "ap_decoder": count_parameters(networks["ap_decoder"]),
        "general_encoder_fraction_of_sam_vit_b": round(general / SAM_VIT_B_ENCODER_PARAMETERS, 5),
    }
    if "distillation" in networks:
        counts["distillation_projection"] = count_parameters(networks["distillation"])
    counts["total"] = counts["registration"] + counts["segmentation"]
    return counts


def load_run_networks(run: RunFolder, config: dict, device: torch.device) -> dict[str, nn.Module]:
    """A finished run's networks (``config`` its stored configuration) with their trained weights, in eval mode on ``device``."""
    method, preset, settings, teacher_record = run_settings(config)
    networks = build_method_networks(method, preset, len(config["label_ids"]) + 1, settings, teacher_record)
    load_weights(run.model, networks)
    for module in networks.values():
        module.to(device).eval()
    return networks
