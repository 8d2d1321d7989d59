"""Instance optimisation: refine the network's registration of one pair by gradient descent.

Starting from the network's flow (a velocity field when diffeomorphic, at the decoder's flow
level), a residual is optimised with Adam on the same objective the network was trained with
(local NCC + smoothness). This is the usual last step of learned registration pipelines: the
network gives a good start in one pass, a few dozen iterations on the pair itself sharpen it.
"""

from __future__ import annotations

import torch
from torch import nn

from RRLMedSAMLib.models.registration_decoder import RegistrationDecoder


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
    if steps <= 0:
        return decoder.to_full_resolution(flow, size).detach()
    residual = torch.zeros_like(flow, requires_grad=True)
    optimizer = torch.optim.Adam([residual], lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            loss, _ = objective(moving, fixed, decoder.to_full_resolution(flow + residual, size))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return decoder.to_full_resolution(flow + residual.detach(), size).detach()


def refine_displacement(
    objective: nn.Module,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    initial_ddf: torch.Tensor,
    steps: int,
    learning_rate: float = 0.1,
) -> torch.Tensor:
    """``initial_ddf`` ``(B, 3, D, H, W)`` (voxels) plus a residual optimised on this pair, same shape.

    The second, finer pass of instance optimisation (:mod:`RRLMedSAMLib.inference.fine_refinement`):
    the residual has one vector per voxel; ``objective(moving, fixed, ddf) -> (loss, parts)``
    scores the total displacement, so its smoothness term keeps the sum smooth.
    """
    initial_ddf = initial_ddf.detach()
    if steps <= 0:
        return initial_ddf
    residual = torch.zeros_like(initial_ddf, requires_grad=True)
    optimizer = torch.optim.Adam([residual], lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            loss, _ = objective(moving, fixed, initial_ddf + residual)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return (initial_ddf + residual).detach()
