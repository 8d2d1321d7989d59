"""Feature distillation: alignment to the teacher grid, loss kinds, gradient flow, DSKD steps."""

from __future__ import annotations

import pytest
import torch

from RRLMedSAMLib.models.distillation_losses import (
    LOSS_KINDS,
    DistillationCriterion,
    distillation_step,
    feature_distillation_loss,
    stage2_loss,
)
from RRLMedSAMLib.models.encoder3d import Encoder3D
from RRLMedSAMLib.models.feature_projection import align_to_teacher_grid, to_slice_axis_first
from RRLMedSAMLib.models.sam_teacher import SamTeacher, slices_to_sam_input

SMALL = (4, 8, 8, 8)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_zero_for_identical_features(kind):
    features = torch.randn(2, 256, 3, 4, 4)
    assert feature_distillation_loss(features, features.clone(), kind).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_distillation_loss(features, torch.randn_like(features), kind).item() > 0.0


def test_kl_uses_softened_channel_distributions():
    student, teacher = torch.randn(1, 8, 2, 2, 2), torch.randn(1, 8, 2, 2, 2)
    loss = feature_distillation_loss(student, teacher, "kl", temperature=2.0)
    p = torch.softmax(teacher / 2, dim=1)
    expected = (p * (torch.log_softmax(teacher / 2, 1) - torch.log_softmax(student / 2, 1))).sum(1).mean() * 4
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError):
        feature_distillation_loss(student, teacher, "cosine")


def test_slice_axis_permutation():
    x = torch.zeros(1, 1, 2, 3, 4)
    assert to_slice_axis_first(x, 0).shape == (1, 1, 2, 3, 4)
    assert to_slice_axis_first(x, 1).shape == (1, 1, 3, 2, 4)
    assert to_slice_axis_first(x, 2).shape == (1, 1, 4, 2, 3)
    ramp = torch.arange(4.0).view(1, 1, 1, 1, 4).expand(1, 1, 2, 3, 4)
    aligned = align_to_teacher_grid(ramp, (4, 2, 2), axis=2)
    assert aligned.shape == (1, 1, 4, 2, 2)
    torch.testing.assert_close(aligned[0, 0, :, 0, 0], torch.arange(4.0))


def test_gradients_reach_student_and_projection_only():
    encoder = Encoder3D(channels=SMALL)
    criterion = DistillationCriterion(SMALL[-1], axis=1, kind="mse")
    teacher = torch.randn(256, 16, 4, 4, requires_grad=True)
    loss = criterion(encoder(torch.rand(1, 1, 16, 16, 16)), teacher)
    loss.backward()
    assert teacher.grad is None
    assert all(p.grad is not None for p in encoder.parameters())
    assert criterion.projection.conv.weight.grad is not None


def test_with_real_teacher_features_and_batch():
    volume = torch.rand(16, 16, 16)
    teacher = SamTeacher.tiny(slice_size=64, axis=2)
    features = teacher.encode_volume(volume)
    assert features.shape == (256, 16, 4, 4)
    encoder = Encoder3D(channels=SMALL)
    criterion = DistillationCriterion(SMALL[2], level=2, axis=2)
    batch = torch.stack([features, features])
    loss = criterion(encoder(volume.expand(2, 1, -1, -1, -1)), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="batch"):
        criterion(encoder(volume.expand(3, 1, -1, -1, -1)), batch)


def test_stage1_steps_reduce_the_loss():
    torch.manual_seed(0)
    encoder = Encoder3D(channels=SMALL)
    criterion = DistillationCriterion(SMALL[-1], kind="mse")
    optimizer = torch.optim.Adam([*encoder.parameters(), *criterion.parameters()], lr=1e-2)
    images = torch.rand(1, 1, 16, 16, 16)
    target = torch.randn(256, 16, 4, 4)
    losses = [distillation_step(encoder, criterion, images, target, optimizer) for _ in range(8)]
    assert losses[-1] < losses[0]


def test_stage2_adds_weighted_distillation():
    encoder = Encoder3D(channels=SMALL)
    criterion = DistillationCriterion(SMALL[-1], kind="l1")
    features = encoder(torch.rand(1, 1, 16, 16, 16))
    teacher = torch.randn(256, 16, 4, 4)
    segmentation = torch.tensor(0.7, requires_grad=True)
    total, distill = stage2_loss(segmentation, features, criterion, teacher, weight=0.5)
    torch.testing.assert_close(total, segmentation + 0.5 * distill)
    total.backward()
    assert segmentation.grad is not None


def test_teacher_outputs_are_usable_as_targets():
    teacher = SamTeacher.tiny(slice_size=64)
    volume = torch.rand(16, 16, 16)
    direct = teacher(slices_to_sam_input(volume, 64)).permute(1, 0, 2, 3)
    encoder = Encoder3D(channels=SMALL)
    criterion = DistillationCriterion(SMALL[-1])
    for target in (direct, teacher.encode_volume(volume)):
        criterion(encoder(volume[None, None]), target).backward()
    assert criterion.projection.conv.weight.grad is not None
