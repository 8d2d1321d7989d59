"""AutoSAM baseline: a prompt-free head on the frozen SAM encoder, trained on the atlas alone.

Stages: ``teacher_features`` (the atlas's SAM features, cached) and ``autosam_head``: each step
draws ``autosam_slices`` slices along the teacher's slice axis (four in five from slices that hold
a label, so small structures are seen), runs the head on their features ``(B, 256, S/16, S/16)``
and minimises Dice + cross-entropy against the atlas label resized to ``S x S`` (nearest).
The unlabelled scans are not used for training (only pre-aligned, like every method's).
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.autosam_heads import features_to_slices, labels_to_slices
from RRLMedSAMLib.run.networks import build_method_networks
from RRLMedSAMLib.run.teacher import build_teacher
from RRLMedSAMLib.sam.checkpoints import VerifiedCheckpoint, verify_checkpoint
from RRLMedSAMLib.training.context import TrainingContext
from RRLMedSAMLib.training.segmentation_stage import batch_dice
from RRLMedSAMLib.training.stage_runner import StepResult


def head_checkpoint(teacher: dict) -> VerifiedCheckpoint | None:
    """The SAM file that initialises the ViT head's mask decoder (official/custom weights only)."""
    if teacher.get("checkpoint"):
        return verify_checkpoint(teacher["checkpoint"], allow_custom=bool(teacher.get("custom")))
    return None


def make_autosam_step(
    head: nn.Module, optimizer: torch.optim.Optimizer, features: torch.Tensor, labels: torch.Tensor,
    num_classes: int, batch: int, device: torch.device,
):
    """Per-step function: ``features`` ``(n, 256, g, g)`` float16 and ``labels`` ``(n, S, S)`` of the atlas slices."""
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    labelled = np.flatnonzero(labels.flatten(1).amax(dim=1).numpy() > 0)

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        chosen = [int(rng.choice(labelled)) if len(labelled) and rng.random() < 0.8 else int(rng.integers(len(labels)))
                  for _ in range(batch)]
        inputs = features[chosen].to(device).float()
        targets = labels[chosen][:, None].to(device)
        logits = head(inputs)
        loss = loss_fn(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"segmentation": float(loss.detach())}, batch_dice(logits.detach(), targets, num_classes)

    return step


def train_autosam(ctx: TrainingContext) -> dict[str, nn.Module]:
    """Train the AutoSAM head of ``ctx.method`` on the atlas; returns ``{"head": head}``."""
    if ctx.teacher["name"] == "none":
        raise InputError(f"{ctx.method.name} needs the SAM encoder, but the run has no teacher ({ctx.teacher['reason']}).")
    settings, data = ctx.settings, ctx.data
    torch.manual_seed(ctx.seed)
    networks = build_method_networks(ctx.method, ctx.preset, data.num_classes, settings, ctx.teacher,
                                     checkpoint=head_checkpoint(ctx.teacher) if ctx.method.head == "vit" else None)
    head = networks["head"].to(ctx.device)
    teacher = build_teacher(ctx.teacher, settings, ctx.device)
    assert teacher is not None
    features = ctx.teacher_features(teacher, {"atlas": data.atlas_image})
    del teacher
    slices = features_to_slices(features["atlas"]).contiguous()
    labels = labels_to_slices(torch.from_numpy(data.atlas_classes), settings.slice_axis, settings.slice_size)
    adam = torch.optim.Adam(head.parameters(), lr=settings.autosam_learning_rate)
    ctx.stage("autosam_head", settings.autosam_steps,
              make_autosam_step(head, adam, slices, labels, data.num_classes, settings.autosam_slices, ctx.device),
              {"head": head}, {"adam": adam})
    return networks

