"""Everything a method's training stages share: run folder, settings, prepared data, device, progress."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.registration.register import register_on_grid
from RRLMedSAMLib.registration.spatial_transformer import warp_classes
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.stage_runner import run_stage


@dataclass
class TrainingContext:
    """One training run after validation and data preparation.

    Attributes:
        teacher: the run's teacher record (``config["teacher"]``, see ``run/teacher.py``).
    """

    run: RunFolder
    config: dict
    method: Method
    preset: Preset
    settings: RRLSettings
    data: PreparedData
    device: torch.device
    progress: ProgressReporter
    seed: int
    teacher: dict

    def stage(
        self,
        name: str,
        steps: int,
        step_fn,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> None:
        """:func:`run_stage` with this run's checkpoint path, progress, seed and checkpoint interval."""
        run_stage(name, steps, step_fn, modules, optimizers, self.run.checkpoint(name), self.progress,
                  self.seed, self.preset.checkpoint_every)

    def pseudo_labels(self, registration: nn.Module) -> np.ndarray:
        """Stage ``pseudo_labels``: the atlas label warped onto every scan ``(N, D, H, W)``, cached in the run folder.

        One progress step per scan.
        """
        if self.run.pseudo_labels.exists():
            return load_file(str(self.run.pseudo_labels))["classes"]
        data = self.data
        self.progress.start_stage("pseudo_labels", len(data.scans), "warping the atlas label onto every scan")
        labels = []
        for index, scan in enumerate(data.scans):
            ddf = register_on_grid(registration, data.atlas_image, scan, self.preset, self.device)
            labels.append(warp_classes(data.atlas_classes, data.num_classes, ddf))
            self.progress.update(index + 1, message=f"pseudo label of {data.scan_names[index]}")
        classes = np.stack(labels)
        with atomic_path(self.run.pseudo_labels) as temp:
            save_file({"classes": classes}, str(temp))
        self.progress.end_stage()
        return classes
