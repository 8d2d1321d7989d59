"""Mutual-EMA between the general and medical encoders, against hand-computed weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from RRLMedSAMLib.models.encoder3d import Encoder3D
from RRLMedSAMLib.models.mutual_ema import MutualEMA, mutual_ema_


def _linear(weight: list[float], bias: float) -> nn.Linear:
    layer = nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([weight]))
        layer.bias.fill_(bias)
    return layer


def test_hand_computed_update_uses_pre_update_values():
    general, medical = _linear([1.0, 2.0], 3.0), _linear([5.0, 6.0], 7.0)
    mutual_ema_(general, medical, alpha=0.9)
    # g' = 0.9 g + 0.1 m ; m' = 0.9 m + 0.1 g (old g, not g')
    torch.testing.assert_close(general.weight, torch.tensor([[1.4, 2.4]]))
    torch.testing.assert_close(general.bias, torch.tensor([3.4]))
    torch.testing.assert_close(medical.weight, torch.tensor([[4.6, 5.6]]))
    torch.testing.assert_close(medical.bias, torch.tensor([6.6]))
    assert general.weight.requires_grad and medical.weight.requires_grad


def test_default_alpha_and_two_steps():
    general, medical = _linear([0.0, 0.0], 0.0), _linear([1.0, 1.0], 1.0)
    ema = MutualEMA(general, medical)
    assert ema.alpha == 0.99
    ema.step()
    ema.step()
    # difference shrinks by (2 alpha - 1) per step, sum is preserved
    g = 0.5 - 0.5 * 0.98**2
    torch.testing.assert_close(general.bias, torch.tensor([g]))
    torch.testing.assert_close(medical.bias, torch.tensor([1.0 - g]))


def test_extreme_alphas():
    general, medical = _linear([1.0, 2.0], 3.0), _linear([5.0, 6.0], 7.0)
    mutual_ema_(general, medical, alpha=1.0)
    torch.testing.assert_close(general.bias, torch.tensor([3.0]))
    mutual_ema_(general, medical, alpha=0.0)
    torch.testing.assert_close(general.bias, torch.tensor([7.0]))
    torch.testing.assert_close(medical.bias, torch.tensor([3.0]))
    with pytest.raises(ValueError):
        mutual_ema_(general, medical, alpha=1.5)


def test_float_buffers_averaged_integer_buffers_kept():
    general, medical = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    general.running_mean.fill_(1.0)
    medical.running_mean.fill_(3.0)
    general.num_batches_tracked.fill_(10)
    medical.num_batches_tracked.fill_(20)
    mutual_ema_(general, medical, alpha=0.75)
    torch.testing.assert_close(general.running_mean, torch.full((2,), 1.5))
    torch.testing.assert_close(medical.running_mean, torch.full((2,), 2.5))
    assert int(general.num_batches_tracked) == 10 and int(medical.num_batches_tracked) == 20


def test_encoder3d_pair_preserves_sum_elementwise():
    torch.manual_seed(0)
    general, medical = Encoder3D(), Encoder3D()
    before = [(g.detach().clone(), m.detach().clone()) for g, m in zip(general.parameters(), medical.parameters())]
    mutual_ema_(general, medical, alpha=0.99)
    for (g0, m0), g1, m1 in zip(before, general.parameters(), medical.parameters()):
        torch.testing.assert_close(g1, 0.99 * g0 + 0.01 * m0)
        torch.testing.assert_close(m1, 0.99 * m0 + 0.01 * g0)


def test_every_n_steps_and_state():
    general, medical = _linear([0.0, 0.0], 0.0), _linear([1.0, 1.0], 1.0)
    ema = MutualEMA(general, medical, alpha=0.5, every=2)
    assert ema.step() is False
    torch.testing.assert_close(general.bias, torch.tensor([0.0]))
    assert ema.step() is True
    torch.testing.assert_close(general.bias, torch.tensor([0.5]))
    restored = MutualEMA(general, medical)
    restored.load_state_dict(ema.state_dict())
    assert restored.calls == 2 and restored.every == 2 and restored.alpha == 0.5


def test_architecture_mismatch_is_rejected():
    with pytest.raises(ValueError, match="identical architectures|shapes"):
        MutualEMA(Encoder3D(), Encoder3D(channels=(8, 16, 32, 64, 96)))
    with pytest.raises(ValueError):
        mutual_ema_(nn.Linear(2, 1), nn.Sequential(nn.Linear(2, 1)))
