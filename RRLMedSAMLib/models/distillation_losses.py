"""Feature distillation from the SAM teacher to the general encoder, and DSKD (box "DSKD").

Dual-stage knowledge distillation (DSKD):

* stage 1 - the general encoder regresses the teacher's features on a large, general unlabelled
  set: :func:`distillation_step` with only the distillation loss;
* stage 2 - the same regression on the target domain (atlas + unlabelled scans) while the
  segmentation losses train: :func:`stage2_loss` adds ``weight * distillation`` to the
  segmentation loss, from one encoder forward pass.

Loss kinds (per element of the aligned feature volumes ``(B, 256, n, g, g)``):

* ``"mse"`` (default, what the authors describe): mean squared error;
* ``"l1"``: mean absolute error;
* ``"kl"``: ``T**2 * KL(softmax(t / T) || softmax(s / T))`` over the 256 channels at each voxel,
  averaged over voxels (Hinton-style softened distributions; ``T`` = ``temperature``).

The teacher side is always detached, so gradients reach only the student (and its projection).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .feature_projection import TEACHER_CHANNELS, FeatureProjection, align_to_teacher_grid

LOSS_KINDS = ("mse", "l1", "kl")


def feature_distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse", temperature: float = 1.0
) -> torch.Tensor:
    """Scalar loss between aligned student and teacher features of identical shape ``(B, C, ...)``."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features differ in shape")
    teacher = teacher.detach().to(student.dtype)
    if kind == "mse":
        return F.mse_loss(student, teacher)
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "kl":
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        log_p_student = F.log_softmax(student / temperature, dim=1)
        log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
        per_voxel = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
        return per_voxel.mean() * temperature**2
    raise ValueError(f"unknown distillation loss {kind!r}; expected one of {LOSS_KINDS}")


class DistillationCriterion(nn.Module):
    """Projection + alignment + loss: student encoder features vs a teacher feature volume.

    Args:
        student_channels: width of the chosen student level (``Encoder3D.channels[level]``).
        level: which element of the ``Encoder3D`` output list to distil (default ``-1``, the deepest,
            stride 16 like SAM's 1/16 embedding).
        axis: the teacher's slice axis (``SamTeacher.axis``).
        kind: ``"mse"``, ``"l1"`` or ``"kl"``.
        temperature: softening temperature for ``"kl"``.

    ``forward(features, teacher_features)``: ``features`` is the encoder's list (or the chosen
    level's tensor ``(B, C, D', H', W')``); ``teacher_features`` is ``(256, n, g, g)`` for a batch of
    one or ``(B, 256, n, g, g)``. Returns the scalar loss. Its parameters (the projection) must be
    given to the optimiser together with the student's.
    """

    def __init__(
        self,
        student_channels: int,
        *,
        level: int = -1,
        axis: int = 0,
        kind: str = "mse",
        temperature: float = 1.0,
        teacher_channels: int = TEACHER_CHANNELS,
    ) -> None:
        super().__init__()
        if kind not in LOSS_KINDS:
            raise ValueError(f"unknown distillation loss {kind!r}; expected one of {LOSS_KINDS}")
        self.projection = FeatureProjection(student_channels, teacher_channels)
        self.level = int(level)
        self.axis = int(axis)
        self.kind = kind
        self.temperature = float(temperature)

    def project(self, features: Sequence[torch.Tensor] | torch.Tensor, teacher_grid: Sequence[int]) -> torch.Tensor:
        """Student features -> ``(B, 256, n, g, g)`` on the teacher grid (before the loss)."""
        chosen = features if isinstance(features, torch.Tensor) else features[self.level]
        return align_to_teacher_grid(self.projection(chosen), teacher_grid, self.axis)

    def forward(self, features: Sequence[torch.Tensor] | torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        if teacher_features.ndim == 4:
            teacher_features = teacher_features.unsqueeze(0)
        student = self.project(features, teacher_features.shape[2:])
        if teacher_features.shape[0] != student.shape[0]:
            raise ValueError(f"batch of {student.shape[0]} student volumes but {teacher_features.shape[0]} teacher volumes")
        teacher = teacher_features.to(device=student.device, dtype=student.dtype)
        return feature_distillation_loss(student, teacher, self.kind, self.temperature)


def distillation_step(
    encoder: nn.Module,
    criterion: DistillationCriterion,
    images: torch.Tensor,
    teacher_features: torch.Tensor,
    optimizer: torch.optim.Optimizer,
) -> float:
    """One DSKD stage-1 step: feature regression only. Returns the loss value.

    Args:
        encoder: the general encoder (``Encoder3D``), in training mode.
        criterion: the distillation criterion (its projection must be in ``optimizer``).
        images: ``(B, 1, D, H, W)`` in [0, 1], the volumes the teacher features were computed from.
        teacher_features: ``(B, 256, n, g, g)`` (or ``(256, n, g, g)`` for ``B == 1``).
        optimizer: optimiser over the encoder's and the projection's parameters.
    """
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(encoder(images), teacher_features)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def stage2_loss(
    segmentation_loss: torch.Tensor,
    features: Sequence[torch.Tensor],
    criterion: DistillationCriterion,
    teacher_features: torch.Tensor,
    weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DSKD stage 2: ``segmentation_loss + weight * distillation`` on the same encoder features.

    Returns ``(total, distillation)`` so that both can be logged; call ``total.backward()``.
    """
    distillation = criterion(features, teacher_features)
    return segmentation_loss + weight * distillation, distillation
