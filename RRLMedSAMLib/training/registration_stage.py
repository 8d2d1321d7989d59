"""Unsupervised registration training between the atlas and the scans, in both directions.

Loss per pair: local normalised cross-correlation between the warped moving and the fixed volume,
plus a diffusion (displacement-gradient) penalty. Steps alternate direction: even steps register
the atlas to a random scan, odd steps a random scan to the atlas.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss

from RRLMedSAMLib.models.instance_optimization import refine_registration
from RRLMedSAMLib.models.registration_network import RegistrationNetwork
from RRLMedSAMLib.models.spatial_transformer import SpatialTransformer
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.stage_runner import StepResult


class RegistrationObjective(torch.nn.Module):
    """``loss = LNCC(warp(moving, ddf), fixed) + w * diffusion(ddf)``; returns ``(loss, parts)``."""

    def __init__(self, ncc_kernel: int, smoothness_weight: float) -> None:
        super().__init__()
        self.similarity = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
        self.smoothness = DiffusionLoss()
        self.warp = SpatialTransformer()
        self.smoothness_weight = smoothness_weight

    def forward(
        self, moving: torch.Tensor, fixed: torch.Tensor, ddf: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        similarity = self.similarity(self.warp(moving, ddf), fixed)
        smoothness = self.smoothness(ddf)
        loss = similarity + self.smoothness_weight * smoothness
        return loss, {"ncc": float(-similarity.detach()), "smooth": float(smoothness.detach())}


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


def register_atlas_to_scan(
    network: RegistrationNetwork, atlas: np.ndarray, scan: np.ndarray, preset: Preset, device: torch.device
) -> torch.Tensor:
    """Displacement ``(1, 3, D, H, W)`` (voxels) warping ``atlas`` onto ``scan`` (working-grid arrays).

    The network's prediction refined by ``preset.instance_optimization_steps`` of instance optimisation.
    """
    network.eval()
    moving = torch.from_numpy(atlas)[None, None].to(device)
    fixed = torch.from_numpy(scan)[None, None].to(device)
    with torch.no_grad():
        _, flow = network(moving, fixed)
    objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight).to(device)
    return refine_registration(network.decoder, objective, moving, fixed, flow, preset.instance_optimization_steps)


@torch.no_grad()
def warp_classes(classes: np.ndarray, num_classes: int, ddf: torch.Tensor) -> np.ndarray:
    """Warp a class map ``(D, H, W)`` by ``ddf`` via its one-hot encoding (smooth boundaries) -> argmax."""
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(classes).long(), num_classes)
    one_hot = one_hot.permute(3, 0, 1, 2)[None].float().to(ddf.device)
    warped = SpatialTransformer()(one_hot, ddf)
    return warped.argmax(dim=1)[0].cpu().numpy().astype(np.int64)


def make_pseudo_labels(
    network: RegistrationNetwork, data: PreparedData, preset: Preset, device: torch.device
) -> np.ndarray:
    """The atlas label warped onto every scan: class maps ``(N, D, H, W)``."""
    return np.stack(
        [
            warp_classes(
                data.atlas_classes, data.num_classes, register_atlas_to_scan(network, data.atlas_image, scan, preset, device)
            )
            for scan in data.scans
        ]
    )
