"""Plain segmentation decoder and auto-prompting decoder: shapes, prompt effect, stopped prompt gradient."""

from __future__ import annotations

import pytest
import torch

from RRLMedSAMLib.models.ap_decoder import APDecoder, DensePromptEncoder3D
from RRLMedSAMLib.models.encoder3d import Encoder3D, count_parameters
from RRLMedSAMLib.models.segmentation_decoder import SegmentationDecoder

SMALL = (4, 8, 12, 16)
SHAPE = (1, 1, 16, 24, 16)


@pytest.fixture(scope="module")
def features() -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [f.detach() for f in Encoder3D(channels=SMALL)(torch.rand(SHAPE))]


def _prompt(n_classes: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(1, n_classes, *SHAPE[2:], generator=generator), dim=1)


def test_segmentation_decoder_full_resolution_logits(features):
    decoder = SegmentationDecoder(3, encoder_channels=SMALL)
    logits = decoder(features)
    assert logits.shape == (1, 3, *SHAPE[2:])
    logits.sum().backward()
    assert all(p.grad is not None for p in decoder.parameters())


def test_default_decoder_matches_default_encoder_and_is_small():
    encoder = Encoder3D()
    decoder = SegmentationDecoder(5)
    logits = decoder(encoder(torch.rand(1, 1, 32, 32, 32)))
    assert logits.shape == (1, 5, 32, 32, 32)
    assert count_parameters(decoder) < 1_000_000
    with pytest.raises(ValueError):
        SegmentationDecoder(5, decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="feature levels"):
        decoder(encoder(torch.rand(1, 1, 32, 32, 32))[:3])


def test_ap_decoder_shapes_and_prompt_changes_output(features):
    torch.manual_seed(1)
    decoder = APDecoder(3, encoder_channels=SMALL)
    a = decoder(features, _prompt(3, 0))
    b = decoder(features, _prompt(3, 1))
    unprompted = decoder(features, None)
    assert a.shape == b.shape == unprompted.shape == (1, 3, *SHAPE[2:])
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, unprompted)


def test_prompt_gradient_is_stopped(features):
    decoder = APDecoder(3, encoder_channels=SMALL)
    general_logits = torch.randn(1, 3, *SHAPE[2:], requires_grad=True)
    prompt = torch.softmax(general_logits, dim=1)
    medical_features = [f.clone().requires_grad_(True) for f in features]
    decoder(medical_features, prompt).sum().backward()
    assert general_logits.grad is None
    assert all(f.grad is not None for f in medical_features)
    assert decoder.prompt_encoder.projections[0].weight.grad is not None


def test_prompt_is_resized_and_checked(features):
    decoder = APDecoder(3, encoder_channels=SMALL)
    half = torch.softmax(torch.randn(1, 3, 8, 12, 8), dim=1)
    assert decoder(features, half).shape == (1, 3, *SHAPE[2:])
    with pytest.raises(ValueError, match="channels"):
        decoder(features, torch.rand(1, 2, *SHAPE[2:]))


def test_prompt_encoder_pyramid_matches_feature_shapes(features):
    encoder = DensePromptEncoder3D(2, SMALL)
    embeddings = encoder(_prompt(2), [f.shape for f in features])
    assert [e.shape for e in embeddings] == [f.shape for f in features]
    empty = encoder(None, [f.shape for f in features])
    assert all(torch.count_nonzero(e) == 0 for e in empty)
