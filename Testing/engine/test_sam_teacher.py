"""SAM teacher on a tiny randomly initialised ImageEncoderViT: preprocessing, slicing, shapes, frozen state."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.sam_teacher import (
    SAM_PIXEL_MEAN,
    SAM_PIXEL_STD,
    SamTeacher,
    build_image_encoder,
    resize_pos_embed,
    resize_rel_pos,
    slices_to_sam_input,
)


@pytest.fixture(scope="module")
def tiny() -> SamTeacher:
    return SamTeacher.tiny(slice_size=64, batch_size=3)


def test_segment_anything_package_is_not_imported(tiny):
    assert "segment_anything" not in sys.modules
    assert "torchvision" not in sys.modules
    assert type(tiny.encoder).__name__ == "ImageEncoderViT"


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_encode_volume_shape_per_axis(axis):
    teacher = SamTeacher.tiny(slice_size=64, axis=axis)
    volume = torch.rand(5, 7, 9)
    features = teacher.encode_volume(volume)
    assert features.shape == (256, volume.shape[axis], 4, 4)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_slices_are_encoded_independently_and_in_order(tiny):
    volume = torch.rand(4, 20, 24)
    features = tiny.encode_volume(volume)
    single = tiny.encode_slices(volume[2:3])
    torch.testing.assert_close(features[:, 2], single[0], rtol=1e-4, atol=1e-4)


def test_batching_does_not_change_results(tiny):
    volume = np.random.default_rng(0).random((7, 16, 16), dtype=np.float32)
    reference = tiny.encode_volume(volume)
    other = SamTeacher(tiny.encoder, model_type="tiny", slice_size=64, batch_size=7)
    torch.testing.assert_close(other.encode_volume(volume[None, None]), reference, rtol=1e-4, atol=1e-4)


def test_preprocessing_matches_sam_convention():
    slices = torch.stack([torch.zeros(10, 12), torch.ones(10, 12)])
    x = slices_to_sam_input(slices, 32)
    assert x.shape == (2, 3, 32, 32)
    mean, std = torch.tensor(SAM_PIXEL_MEAN), torch.tensor(SAM_PIXEL_STD)
    torch.testing.assert_close(x[0, :, 5, 5], -mean / std)
    torch.testing.assert_close(x[1, :, 5, 5], (255 - mean) / std)


def test_teacher_is_frozen(tiny):
    assert not any(p.requires_grad for p in tiny.parameters())
    tiny.train()
    assert not tiny.training and not tiny.encoder.training


def test_bad_settings_and_inputs():
    with pytest.raises(InputError):
        build_image_encoder("vit_x")
    with pytest.raises(InputError, match="multiple of 16"):
        SamTeacher.tiny(slice_size=100)
    with pytest.raises(InputError, match="axis"):
        SamTeacher.tiny(axis=3)
    with pytest.raises(InputError, match="3-D"):
        SamTeacher.tiny().encode_volume(torch.rand(2, 3, 8, 8))


def test_random_weights_have_a_stable_identity():
    a, b, c = SamTeacher.tiny(seed=1), SamTeacher.tiny(seed=1), SamTeacher.tiny(seed=2)
    assert a.weights_id == b.weights_id != c.weights_id
    assert a.identity()["slice_size"] == "64" and a.identity()["teacher"] == "tiny"


def test_positional_resizing_helpers():
    pos = torch.randn(1, 64, 64, 8)
    assert resize_pos_embed(pos, (8, 8)).shape == (1, 8, 8, 8)
    assert resize_pos_embed(pos, (64, 64)) is pos
    table = torch.randn(127, 4)
    assert resize_rel_pos(table, 15).shape == (15, 4)
    constant = torch.ones(127, 4)
    torch.testing.assert_close(resize_rel_pos(constant, 31), torch.ones(31, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_cpu(tiny):
    volume = torch.rand(3, 32, 32)
    reference = tiny.encode_volume(volume)
    gpu = SamTeacher(build_image_encoder("vit_b", 64).cuda(), model_type="vit_b", slice_size=64)
    gpu_tiny = SamTeacher(SamTeacher.tiny(slice_size=64).encoder.cuda(), model_type="tiny", slice_size=64)
    assert gpu.encode_volume(volume).shape == (256, 3, 4, 4)
    torch.testing.assert_close(gpu_tiny.encode_volume(volume), reference, rtol=0.05, atol=0.05)
