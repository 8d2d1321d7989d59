"""Segmentation training on the atlas (true label) and the scans (pseudo labels).

Each step draws two volumes (the atlas with probability ``atlas_probability``, else a scan with
its pseudo label), augments them, and minimises Dice + cross-entropy. With the atlas prior
(:mod:`RRLMedSAMLib.models.atlas_prior`) the loss is taken on the network's logits fused with a
randomly perturbed copy of the target, so the network learns corrections of a registration prior.
The reported Dice is the mean foreground Dice of the (fused) batch against its (pseudo) labels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.losses import DiceCELoss

from RRLMedSAMLib.models.atlas_prior import fuse_with_prior, perturbed_prior, torch_generator
from RRLMedSAMLib.training.augmentation import augment, make_augmentation
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.stage_runner import StepResult


def batch_dice(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over the foreground classes present in ``target`` ``(B, 1, D, H, W)``."""
    prediction = logits.argmax(dim=1)
    truth = target[:, 0]
    scores = []
    for cls in range(1, num_classes):
        t = truth == cls
        if t.any():
            p = prediction == cls
            scores.append(2.0 * float((p & t).sum()) / float(p.sum() + t.sum()))
    return float(np.mean(scores)) if scores else 0.0


def sample_training_volumes(
    data: PreparedData, pseudo_labels: np.ndarray, rng: np.random.Generator, batch_size: int, atlas_probability: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``batch_size`` (image, class map) pairs: the atlas or a scan with its pseudo label."""
    chosen = []
    for _ in range(batch_size):
        if rng.random() < atlas_probability or len(data.scans) == 0:
            chosen.append((data.atlas_image, data.atlas_classes))
        else:
            index = int(rng.integers(len(data.scans)))
            chosen.append((data.scans[index], pseudo_labels[index]))
    return chosen


def make_segmentation_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    data: PreparedData,
    pseudo_labels: np.ndarray,
    device: torch.device,
    batch_size: int = 2,
    atlas_probability: float = 0.25,
    patch_size: int = 0,
    atlas_prior: bool = False,
):
    """Per-step function: ``forward`` maps images ``(B, 1, D, H, W)`` to logits ``(B, K, D, H, W)``.

    ``patch_size`` > 0 trains on random cubic patches (the network is fully convolutional and
    segments whole working-grid volumes at inference). ``atlas_prior`` fuses the logits with a
    perturbed prior before the loss.
    """
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    transform = make_augmentation(patch_size)

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        pairs = [augment(transform, image, classes, rng) for image, classes in
                 sample_training_volumes(data, pseudo_labels, rng, batch_size, atlas_probability)]
        images = torch.stack([p[0] for p in pairs]).to(device)
        targets = torch.stack([p[1] for p in pairs]).to(device)
        logits = forward(images)
        if atlas_prior:
            generator = torch_generator(int(rng.integers(2**62)))
            logits = fuse_with_prior(logits, perturbed_prior(targets, data.num_classes, generator))
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"segmentation": float(loss.detach())}, batch_dice(logits.detach(), targets, data.num_classes)

    return step
