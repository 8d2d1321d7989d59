"""Choose the torch device: ``auto`` prefers CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from RRLMedSAMLib.errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str) -> torch.device:
    """The device for ``name``; an unavailable explicit choice is an input error."""
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise InputError("--device cuda was requested but this PyTorch build sees no CUDA GPU; use --device cpu or auto.")
    if name == "mps" and not mps:
        raise InputError("--device mps was requested but Apple MPS is not available here; use --device cpu or auto.")
    if name not in DEVICE_CHOICES:
        raise InputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
    return torch.device(name)
