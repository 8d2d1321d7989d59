"""The stage runner checkpoints on cancel, even when the cancel is raised deep inside a MONAI transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, Lambdad

from RRLMedSAMLib.errors import CancelledError
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.checkpoint import read_checkpoint
from RRLMedSAMLib.training.stage_runner import run_stage


def _raise_cancel(data: np.ndarray) -> np.ndarray:
    raise CancelledError("stopped by signal 15")


def test_cancel_inside_a_monai_transform_checkpoints_the_last_completed_step(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    transform = Compose([Lambdad(keys="image", func=_raise_cancel)])

    def step(index: int, rng: np.random.Generator) -> tuple[dict[str, float], None]:
        if index == 3:
            transform({"image": np.zeros((1, 2, 2, 2), np.float32)})
        optimizer.zero_grad()
        loss = model(torch.ones(1, 2)).pow(2).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}, None

    checkpoint = tmp_path / "stage.safetensors"
    reporter = ProgressReporter(None, show_bar=False)
    with pytest.raises(CancelledError):
        run_stage("stage", 10, step, {"model": model}, {"model": optimizer}, checkpoint, reporter, seed=0,
                  checkpoint_every=100)
    _, meta, _ = read_checkpoint(checkpoint)
    assert meta["step"] == 3
