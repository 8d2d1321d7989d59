"""MIND-SSC: shape, the 12 neighbour pairs, and invariance to intensity changes."""

from __future__ import annotations

import pytest
import torch

from RRLMedSAMLib.registration.mind_ssc import mind_ssc, neighbour_pairs


def _volume(seed: int = 0) -> torch.Tensor:
    """A smooth random volume ``(1, 1, 16, 18, 20)`` in [0, 1] with some structure (a bright ball)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 1, 8, 9, 10), generator=generator)
    volume = torch.nn.functional.interpolate(noise, size=(16, 18, 20), mode="trilinear", align_corners=False)
    z, y, x = torch.meshgrid(torch.arange(16.0), torch.arange(18.0), torch.arange(20.0), indexing="ij")
    ball = ((z - 8) ** 2 + (y - 9) ** 2 + (x - 10) ** 2 < 25).float()
    return (0.5 * volume + 0.5 * ball[None, None]).clamp(0, 1)


def test_twelve_pairs_of_face_neighbours_at_sqrt_two() -> None:
    pairs = neighbour_pairs()
    assert len(pairs) == 12 and len(set(pairs)) == 12
    for a, b in pairs:
        assert sum((p - q) ** 2 for p, q in zip(a, b)) == 2


def test_descriptor_shape_and_range() -> None:
    features = mind_ssc(_volume())
    assert features.shape == (1, 12, 16, 18, 20)
    assert float(features.min()) > 0.0 and float(features.max()) <= 1.0
    assert torch.equal(mind_ssc(torch.full((1, 1, 6, 6, 6), 3.0)), torch.ones((1, 12, 6, 6, 6)))
    with pytest.raises(ValueError):
        mind_ssc(torch.zeros((1, 2, 6, 6, 6)))


def test_invariant_to_a_linear_and_close_to_invariant_to_a_monotone_intensity_change() -> None:
    volume = _volume()
    features = mind_ssc(volume)
    assert torch.allclose(mind_ssc(3.0 * volume + 7.0), features, atol=1e-4)
    monotone = mind_ssc(torch.sqrt(volume + 0.1) ** 3)  # a non-linear, increasing remapping
    other_image = mind_ssc(_volume(seed=1))
    change = float((monotone - features).abs().mean())
    assert change < 0.05
    assert change < 0.25 * float((other_image - features).abs().mean())
