"""Build the networks of a run from its configuration (training and segment use the same code)."""

from __future__ import annotations

from typing import Any

from torch import nn

from RRLMedSAMLib.models.encoder3d import count_parameters
from RRLMedSAMLib.models.registration_network import RegistrationNetwork
from RRLMedSAMLib.models.segmentation_network import SegmentationNetwork
from RRLMedSAMLib.training.presets import Preset


def build_networks(preset: Preset, num_classes: int) -> dict[str, nn.Module]:
    """``{"registration": RegistrationNetwork, "segmentation": SegmentationNetwork}`` for ``preset``."""
    return {
        "registration": RegistrationNetwork(channels=preset.channels, diffeomorphic=preset.diffeomorphic),
        "segmentation": SegmentationNetwork(channels=preset.channels, num_classes=num_classes),
    }


def parameter_counts(networks: dict[str, nn.Module]) -> dict[str, Any]:
    """Parameter count of every network (and their total)."""
    counts: dict[str, Any] = {name: count_parameters(module) for name, module in networks.items()}
    counts["total"] = sum(counts.values())
    return counts
