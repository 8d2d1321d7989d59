"""Atlas prior: the segmentation networks correct the registration result instead of replacing it.

The final segmentation is ``argmax_c [log(prior_c + floor) + logits_c]``: ``prior`` is the atlas
label warped onto the scan (one-hot, linearly interpolated: soft only at boundaries) and
``logits`` is what the segmentation network outputs. With zero logits the result is exactly the
registration-only label; to move a boundary the network must outweigh ``log(1 / floor)``, which
it learns to do where the image disagrees with the warped atlas.

A correction may move a structure's boundaries but not delete the structure: the atlas says it
is there. Where the fused result keeps less than :data:`MIN_KEPT_FRACTION` of a structure's
registration-only volume (the networks learn tiny classes such as vessels worst and can push
their logits below the prior everywhere), :func:`restore_vanished_structures` puts that
structure's registration voxels back.

Training sees the prior *perturbed*: the (pseudo) label warped by a random smooth displacement of
up to a few voxels, as registration errors are, so the network learns to pull misplaced
boundaries back onto the image's edges. Without the perturbation the prior would already equal
the target and nothing would be learned.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer

#: Probability floor of the prior: a correction must exceed ``log(1 / PRIOR_FLOOR)`` (4.6) to flip a voxel.
PRIOR_FLOOR = 0.01
#: A structure the fusion shrinks below this fraction of its registration-only volume is restored.
MIN_KEPT_FRACTION = 0.5
#: Largest random displacement (working-grid voxels) applied to the training prior.
MAX_PERTURBATION_VOXELS = 2.0
#: Control points per axis of the random smooth displacement.
PERTURBATION_CONTROL_POINTS = 4


def prior_log(prior: torch.Tensor, floor: float = PRIOR_FLOOR) -> torch.Tensor:
    """Log prior ``(B, K, ...)`` from class probabilities ``(B, K, ...)`` in [0, 1]."""
    return torch.log(prior.clamp(min=0.0) + floor)


def fuse_with_prior(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Fused logits ``(B, K, D, H, W)``: network logits plus the log prior (same shape)."""
    return logits + prior_log(prior)


def restore_vanished_structures(
    fused: np.ndarray, registration: np.ndarray, min_kept_fraction: float = MIN_KEPT_FRACTION
) -> tuple[np.ndarray, list[int]]:
    """Put back the structures a correction (nearly) deleted.

    Args:
        fused: class index per voxel after fusion (any shape, integer).
        registration: class index per voxel of the registration-only label (same shape).
        min_kept_fraction: a foreground class whose fused voxel count is below this fraction of
            its registration count gets its registration voxels back.

    Returns:
        The repaired class map (a copy when anything changed) and the restored class indices.
    """
    size = int(max(fused.max(initial=0), registration.max(initial=0))) + 1
    fused_counts = np.bincount(fused.ravel(), minlength=size)
    registration_counts = np.bincount(registration.ravel(), minlength=size)
    vanished = [
        index for index in range(1, size)
        if registration_counts[index] and fused_counts[index] < min_kept_fraction * registration_counts[index]
    ]
    if not vanished:
        return fused, []
    repaired = fused.copy()
    restore = np.isin(registration, vanished)
    repaired[restore] = registration[restore]
    return repaired, vanished


def one_hot(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class map ``(B, 1, D, H, W)`` (long) -> float one-hot ``(B, K, D, H, W)``."""
    return F.one_hot(classes[:, 0].long(), num_classes).permute(0, 4, 1, 2, 3).float()


def random_smooth_displacement(
    batch: int, size: tuple[int, int, int], max_voxels: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random smooth displacement ``(B, 3, D, H, W)`` in voxels.

    Each sample draws a strength uniformly in ``[0, max_voxels]`` (so some priors stay almost
    exact) and Gaussian control-point displacements of that standard deviation on a
    :data:`PERTURBATION_CONTROL_POINTS`-per-axis lattice, upsampled trilinearly.
    """
    points = (PERTURBATION_CONTROL_POINTS,) * 3
    strength = torch.rand((batch, 1, 1, 1, 1), generator=generator) * max_voxels
    coarse = torch.randn((batch, 3, *points), generator=generator) * strength
    return F.interpolate(coarse.to(device), size=size, mode="trilinear", align_corners=True)


def perturbed_prior(
    classes: torch.Tensor, num_classes: int, generator: torch.Generator, max_voxels: float = MAX_PERTURBATION_VOXELS
) -> torch.Tensor:
    """Training prior ``(B, K, D, H, W)``: the one-hot of ``classes`` ``(B, 1, D, H, W)`` warped randomly."""
    target = one_hot(classes, num_classes)
    if max_voxels <= 0:
        return target
    ddf = random_smooth_displacement(classes.shape[0], tuple(classes.shape[2:]), max_voxels, generator, classes.device)
    return SpatialTransformer()(target, ddf)


def torch_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded from a step's random draw (keeps resumed runs identical)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed) % (2**63 - 1))
    return generator
