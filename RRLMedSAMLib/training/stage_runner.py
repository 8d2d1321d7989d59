"""Run one training stage step by step with progress, periodic checkpoints and exact resume.

Each step draws its randomness from ``(seed, stage, step)`` alone, so a stage resumed from a
checkpoint at step ``k`` continues exactly as an uninterrupted run would. An interrupt (Ctrl-C,
SIGTERM, cancel) writes a checkpoint of the last completed step before it propagates.
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
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.checkpoint import load_checkpoint, save_checkpoint

StepResult = tuple[dict[str, float], float | None]


def step_generator(seed: int, stage: str, step: int) -> np.random.Generator:
    """The random generator of one step; also reseeds torch for that step."""
    stage_key = zlib.crc32(stage.encode())
    torch.manual_seed((seed * 1_000_003 + stage_key * 7_919 + step) % (2**63))
    return np.random.default_rng([seed, stage_key, step])


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
) -> None:
    """Run steps ``[start, total_steps)`` of stage ``name``, starting after its last checkpoint.

    ``step_fn(step, rng)`` performs one optimiser step and returns ``(losses, dice)``.
    """
    checkpoint_path = Path(checkpoint_path)
    start = 0
    if checkpoint_path.exists():
        start = int(load_checkpoint(checkpoint_path, modules, optimizers)["step"])
    progress.start_stage(name, total_steps, done=start)
    completed = start

    def save(step: int) -> None:
        save_checkpoint(checkpoint_path, modules, optimizers, {"stage": name, "step": step})

    try:
        for module in modules.values():
            module.train()
        for step in range(start, total_steps):
            losses, dice = step_fn(step, step_generator(seed, name, step))
            completed = step + 1
            progress.update(completed, losses, dice)
            if completed % checkpoint_every == 0 or completed == total_steps:
                save(completed)
    except (KeyboardInterrupt, CancelledError):
        if completed > start:
            save(completed)
        raise
    progress.end_stage()
