"""Unsupervised registration training between the atlas and the scans, in both directions.

Loss per pair (:class:`~RRLMedSAMLib.registration.losses.RegistrationObjective`): local normalised
cross-correlation between the warped moving and the fixed volume, plus a diffusion
(displacement-gradient) penalty. Steps alternate direction: even steps register
the atlas to a random scan, odd steps a random scan to the atlas.
"""

from __future__ import annotations

import numpy as np
import torch

from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.registration.network import RegistrationNetwork
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.stage_runner import StepResult


def registration_pair(
    data: PreparedData, index: int, atlas_is_moving: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(moving, fixed)`` volumes ``(1, 1, D, H, W)``: the atlas and scan ``index``, in either role."""
    atlas = torch.from_numpy(data.atlas_image)[None, None].to(device)
    scan = torch.from_numpy(data.scans[index])[None, None].to(device)
    return (atlas, scan) if atlas_is_moving else (scan, atlas)


def make_registration_step(
    network: RegistrationNetwork,
    optimizer: torch.optim.Optimizer,
    data: PreparedData,
    preset: Preset,
    device: torch.device,
):
    """The per-step function for :func:`~RRLMedSAMLib.training.stage_runner.run_stage`."""
    objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight).to(device)

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        moving, fixed = registration_pair(data, int(rng.integers(len(data.scans))), step_index % 2 == 0, device)
        ddf, _ = network(moving, fixed)
        loss, parts = objective(moving, fixed, ddf)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"registration": float(loss.detach()), **parts}, None

    return step
