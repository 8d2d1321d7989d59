"""AutoSAM baseline heads: output shapes, slice helpers, training signal, checkpoint-free construction."""

from __future__ import annotations

import pytest
import torch

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.autosam_heads import (
    HEAD_KINDS,
    SamMaskDecoderHead,
    build_autosam_head,
    features_to_slices,
    labels_to_slices,
    slice_logits_to_volume,
)
from RRLMedSAMLib.models.sam_teacher import SamTeacher


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_heads_map_teacher_features_to_slice_logits(kind):
    head = build_autosam_head(kind, 4, slice_size=64)
    logits = head(torch.randn(3, 256, 4, 4))
    assert logits.shape == (3, 4, 64, 64)
    logits.mean().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_vit_head_has_one_token_per_class_and_no_prompt_tokens():
    head = SamMaskDecoderHead(3, slice_size=128)
    assert head.decoder.num_mask_tokens == 3
    assert len(head.decoder.output_hypernetworks_mlps) == 3
    assert head(torch.randn(2, 256, 8, 8)).shape == (2, 3, 128, 128)
    single = head(torch.randn(1, 256, 8, 8))
    assert single.shape == (1, 3, 128, 128)


def test_vit_head_batch_items_are_independent():
    head = SamMaskDecoderHead(2, slice_size=64).eval()
    x = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(head(x)[1:], head(x[1:]), rtol=1e-4, atol=1e-5)


def test_unknown_head_kind():
    with pytest.raises(InputError):
        build_autosam_head("mlp", 2)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_helpers_round_trip(axis):
    labels = torch.zeros(6, 8, 10, dtype=torch.long)
    labels[2:4, 3:6, 4:8] = 1
    slices = labels_to_slices(labels, axis, 32)
    assert slices.shape == (labels.shape[axis], 32, 32) and slices.dtype == torch.long
    assert set(slices.unique().tolist()) == {0, 1}
    one_hot = torch.nn.functional.one_hot(slices, 2).permute(0, 3, 1, 2).float() * 10
    volume_logits = slice_logits_to_volume(one_hot, tuple(labels.shape), axis)
    assert volume_logits.shape == (2, 6, 8, 10)
    assert torch.equal(volume_logits.argmax(0), labels)


def test_linear_head_learns_one_volume_slice_by_slice():
    torch.manual_seed(0)
    volume = torch.zeros(4, 32, 32)
    volume[:, 8:24, 8:24] = 1.0
    labels = (volume > 0.5).long()
    teacher = SamTeacher.tiny(slice_size=64, axis=0)
    x = features_to_slices(teacher.encode_volume(volume))
    y = labels_to_slices(labels, 0, 64)
    head = build_autosam_head("linear", 2, slice_size=64)
    optimizer = torch.optim.Adam(head.parameters(), lr=5e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    prediction = slice_logits_to_volume(head(x).detach(), (4, 32, 32), 0).argmax(0)
    assert prediction.shape == labels.shape
