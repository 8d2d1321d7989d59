"""Instance optimisation: refine the network's registration of one pair by gradient descent.

Starting from the network's flow (a velocity field when diffeomorphic, at the decoder's flow
level), a residual is optimised with Adam on the same objective the network was trained with
(local NCC + smoothness). This is the usual last step of learned registration pipelines: the
network gives a good start in one pass, a few dozen iterations on the pair itself sharpen it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from RRLMedSAMLib.registration.decoder import RegistrationDecoder


def _optimise_residual(
    start: torch.Tensor,
    to_ddf: Callable[[torch.Tensor], torch.Tensor],
    objective: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    steps: int,
    learning_rate: float,
) -> torch.Tensor:
    """``to_ddf(start + r)`` for the residual ``r`` (shaped as ``start``) found by ``steps`` Adam iterations on ``objective``."""
    start = start.detach()
    residual = torch.zeros_like(start, requires_grad=True)
    optimizer = torch.optim.Adam([residual], lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            loss, _ = objective(moving, fixed, to_ddf(start + residual))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return to_ddf(start + residual)


def refine_registration(
    decoder: RegistrationDecoder,
    objective: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    flow: torch.Tensor,
    steps: int,
    learning_rate: float = 0.1,
) -> torch.Tensor:
    """Refined full-resolution displacement ``(B, 3, D, H, W)`` (voxels) for one ``(moving, fixed)`` pair.

    Args:
        decoder: the registration decoder (turns a flow into a full-resolution displacement).
        objective: callable ``(moving, fixed, ddf) -> (loss, parts)``.
        moving, fixed: ``(B, 1, D, H, W)`` volumes.
        flow: the network's raw flow for this pair (voxels of the flow level).
        steps: Adam iterations; 0 returns the network's displacement unchanged.
        learning_rate: Adam step size, in voxels of the flow level.
    """
    size = moving.shape[2:]
    return _optimise_residual(
        flow, lambda total: decoder.to_full_resolution(total, size), objective, moving, fixed, steps, learning_rate
    )


def refine_displacement(
    objective: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    initial_ddf: torch.Tensor,
    steps: int,
    learning_rate: float = 0.1,
) -> torch.Tensor:
    """``initial_ddf`` ``(B, 3, D, H, W)`` (voxels) plus a residual optimised on this pair, same shape.

    The fine-grid pass of instance optimisation (:mod:`RRLMedSAMLib.registration.fine_refinement`):
    the residual has one vector per voxel; ``objective(moving, fixed, ddf) -> (loss, parts)``
    scores the total displacement, so its smoothness term keeps the sum smooth. 0 steps return
    ``initial_ddf``.
    """
    return _optimise_residual(initial_ddf, lambda total: total, objective, moving, fixed, steps, learning_rate)
