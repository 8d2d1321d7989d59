"""Mutual exponential moving average between the general and the medical-specific encoder (box "mutual-EMA").

After each optimiser step the two encoders (same architecture, e.g. two ``Encoder3D``) exchange
knowledge element by element::

    theta_g <- alpha * theta_g + (1 - alpha) * theta_m
    theta_m <- alpha * theta_m + (1 - alpha) * theta_g

Both right-hand sides use the values from *before* this update (a simultaneous, symmetric
update). The paper writes the two lines without saying whether the second uses the new
``theta_g``; the sequential reading would let the general encoder's update leak into the medical
one twice and make the rule order-dependent, so we take the symmetric one. Note that
``theta_g + theta_m`` is preserved by it, and the difference shrinks by ``(2 * alpha - 1)`` per call.

Buffers: floating-point buffers (e.g. batch-norm running statistics) are averaged by the same
rule, so each encoder's statistics stay consistent with its averaged weights; integer buffers
(``num_batches_tracked``) are counters, not estimates, and are left alone. ``Encoder3D`` uses
instance norm without running statistics and has no buffers. Optimiser state (Adam moments) is
not touched.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_ALPHA = 0.99


def _paired_tensors(general: nn.Module, medical: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for kind, g_items, m_items in (
        ("parameter", general.named_parameters(), medical.named_parameters()),
        ("buffer", general.named_buffers(), medical.named_buffers()),
    ):
        g_named, m_named = dict(g_items), dict(m_items)
        if g_named.keys() != m_named.keys():
            missing = sorted(set(g_named) ^ set(m_named))
            raise ValueError(f"mutual-EMA needs identical architectures; {kind} names differ: {missing[:5]}")
        for name, g_tensor in g_named.items():
            m_tensor = m_named[name]
            if g_tensor.shape != m_tensor.shape:
                raise ValueError(f"mutual-EMA: {kind} {name} has shapes {tuple(g_tensor.shape)} and {tuple(m_tensor.shape)}")
            if kind == "buffer" and not g_tensor.is_floating_point():
                continue
            pairs.append((g_tensor, m_tensor))
    return pairs


@torch.no_grad()
def mutual_ema_(general: nn.Module, medical: nn.Module, alpha: float = DEFAULT_ALPHA) -> None:
    """Apply one symmetric mutual-EMA update in place (see the module docstring).

    Args:
        general: the general lightweight encoder (``theta_g``).
        medical: the medical-specific encoder (``theta_m``), same architecture.
        alpha: weight kept by each encoder, in [0, 1]; 0.99 is the published value.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mutual-EMA alpha must lie in [0, 1], got {alpha}")
    for g_tensor, m_tensor in _paired_tensors(general, medical):
        g_before = g_tensor.detach().clone()
        m_src = m_tensor.detach().to(g_tensor.device, g_tensor.dtype)
        g_tensor.mul_(alpha).add_(m_src, alpha=1.0 - alpha)
        m_tensor.mul_(alpha).add_(g_before.to(m_tensor.device, m_tensor.dtype), alpha=1.0 - alpha)


class MutualEMA:
    """Call :meth:`step` right after each ``optimizer.step()``.

    Args:
        general, medical: the two encoders (same architecture).
        alpha: see :func:`mutual_ema_`.
        every: apply the update every ``every`` calls (1 = after every optimiser step).
    """

    def __init__(self, general: nn.Module, medical: nn.Module, alpha: float = DEFAULT_ALPHA, every: int = 1) -> None:
        _paired_tensors(general, medical)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"mutual-EMA alpha must lie in [0, 1], got {alpha}")
        self.general = general
        self.medical = medical
        self.alpha = float(alpha)
        self.every = max(1, int(every))
        self.calls = 0

    def step(self) -> bool:
        """Count one optimiser step; return whether the averaging was applied."""
        self.calls += 1
        if self.calls % self.every:
            return False
        mutual_ema_(self.general, self.medical, self.alpha)
        return True

    def state_dict(self) -> dict[str, float | int]:
        return {"alpha": self.alpha, "every": self.every, "calls": self.calls}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.alpha = float(state["alpha"])
        self.every = int(state["every"])
        self.calls = int(state["calls"])
