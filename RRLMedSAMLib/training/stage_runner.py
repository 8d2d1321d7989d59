"""Run one training stage step by step with progress, periodic checkpoints and exact resume.

Each step draws its randomness from ``(seed, stage, step)`` alone (plus the rank under
``torchrun``), so a stage resumed from a checkpoint at step ``k`` continues exactly as an
uninterrupted run would. An interrupt (Ctrl-C, SIGTERM, cancel) writes a checkpoint of the last
completed step before it propagates.

Data-parallel (:mod:`RRLMedSAMLib.run.distributed`): every rank runs every step on its own draw,
the optimisers average the gradients over the ranks, only rank 0 writes checkpoints, a stop
request on any rank stops all of them after the same step, and the ranks' weights are compared at
the end of the stage.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from RRLMedSAMLib.errors import CancelledError
from RRLMedSAMLib.progress import ProgressReporter, stop_requested
from RRLMedSAMLib.run.checkpoint import load_checkpoint, save_checkpoint
from RRLMedSAMLib.run.distributed import SINGLE, ProcessGroup

StepResult = tuple[dict[str, float], float | None]


def step_generator(seed: int, stage: str, step: int, rank: int = 0) -> np.random.Generator:
    """The random generator of one step of one rank; also reseeds torch for that step.

    Rank 0 draws what a single process draws; every other rank draws from its own stream.
    """
    stage_key = zlib.crc32(stage.encode())
    torch.manual_seed((seed * 1_000_003 + stage_key * 7_919 + step + rank * 1_000_000_007) % (2**63))
    return np.random.default_rng([seed, stage_key, step, rank] if rank else [seed, stage_key, step])


def run_stage(
    name: str,
    total_steps: int,
    step_fn: Callable[[int, np.random.Generator], StepResult],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    checkpoint_path: str | os.PathLike,
    progress: ProgressReporter,
    seed: int,
    checkpoint_every: int,
    group: ProcessGroup = SINGLE,
) -> None:
    """Run steps ``[start, total_steps)`` of stage ``name``, starting after its last checkpoint.

    ``step_fn(step, rng)`` performs one optimiser step and returns ``(losses, dice)``. ``group``:
    the data-parallel job this process belongs to (its optimisers must be synchronised, see
    :meth:`ProcessGroup.synchronize`); the single process by default.
    """
    checkpoint_path = Path(checkpoint_path)
    start = 0
    if checkpoint_path.exists():
        start = int(load_checkpoint(checkpoint_path, modules, optimizers)["step"])
    if group.any_rank(group.broadcast_from_main(start) != start):
        raise RuntimeError(f"the ranks found stage {name} at different steps (rank {group.rank}: {start}): "
                           "every rank must see the same run folder (a shared file system)")
    progress.start_stage(name, total_steps, done=start)
    completed = start

    def save(step: int) -> None:
        if group.is_main:
            save_checkpoint(checkpoint_path, modules, optimizers, {"stage": name, "step": step})

    try:
        for module in modules.values():
            module.train()
        for step in range(start, total_steps):
            losses, dice = step_fn(step, step_generator(seed, name, step, group.rank))
            completed = step + 1
            if group.active and group.any_rank(stop_requested()):
                raise CancelledError("stop requested on one of the ranks")
            progress.update(completed, losses, dice)
            if completed % checkpoint_every == 0 or completed == total_steps:
                save(completed)
    except (KeyboardInterrupt, CancelledError):
        if completed > start:
            save(completed)
        raise
    group.check_replicas(modules, name)
    progress.end_stage()
