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
    residual_shape: torch.Size,
    to_ddf: Callable[[torch.Tensor], torch.Tensor],
    objective: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    steps: int,
    learning_rate: float,
) -> torch.Tensor:
    """``to_ddf(r)`` for the residual ``r`` (shaped ``residual_shape``, starting at 0) found by ``steps`` Adam iterations on ``objective``."""
    residual = torch.zeros(residual_shape, dtype=moving.dtype, device=moving.device, requires_grad=True)
    optimizer = torch.optim.Adam([residual], lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            loss, _ = objective(moving, fixed, to_ddf(residual))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return to_ddf(residual)


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
    flow = flow.detach()
    return _optimise_residual(
        flow.shape, lambda residual: decoder.to_full_resolution(flow + residual, size), objective, moving, fixed,
        steps, learning_rate,
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
    scores the total displacement, so its smoothness term keeps the sum smooth (and its folding
    term, when weighted, keeps Adam's per-voxel steps from folding cells). 0 steps return
    ``initial_ddf``.
    """
    initial_ddf = initial_ddf.detach()
    return _optimise_residual(initial_ddf.shape, lambda residual: initial_ddf + residual, objective, moving, fixed,
                              steps, learning_rate)
