"""Everything a method's training stages share: run folder, settings, prepared data, device, progress, ranks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.distributed import SINGLE, ProcessGroup
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings
from RRLMedSAMLib.sam.feature_cache import FeatureTeacher
from RRLMedSAMLib.training import data_parallel
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.pseudo_labels import PseudoLabeller, load_pseudo_labels, progress_message, save_pseudo_labels
from RRLMedSAMLib.training.stage_runner import run_stage
from RRLMedSAMLib.training.teacher_features import compute_teacher_features


@dataclass
class TrainingContext:
    """One training run after validation and data preparation.

    Attributes:
        teacher: the run's teacher record (``config["teacher"]``, see ``run/teacher.py``).
        group: the data-parallel job under ``torchrun`` (:mod:`RRLMedSAMLib.run.distributed`), else
            the single process.
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
    group: ProcessGroup = field(default_factory=lambda: SINGLE)

    def stage(
        self,
        name: str,
        steps: int,
        step_fn,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> None:
        """:func:`run_stage` with this run's checkpoint path, progress, seed, checkpoint interval and ranks.

        Under ``torchrun`` the ``optimizers`` average their gradients over the ranks before each step.
        """
        for optimizer in optimizers.values():
            self.group.synchronize(optimizer)
        run_stage(name, steps, step_fn, modules, optimizers, self.run.checkpoint(name), self.progress,
                  self.seed, self.preset.checkpoint_every, self.group)

    def teacher_features(self, teacher: FeatureTeacher, volumes: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Stage ``teacher_features`` on the run's cache (``cache/teacher/``); split across the ranks under ``torchrun``."""
        folder = self.run.root / "cache" / "teacher"
        if self.group.active:
            return data_parallel.shared_teacher_features(self.group, self.progress, teacher, volumes, folder)
        return compute_teacher_features(teacher, volumes, folder, self.progress)

    def pseudo_labels(self, registration: nn.Module) -> np.ndarray:
        """Stage ``pseudo_labels``: the atlas label warped onto every scan ``(N, D, H, W)``, cached in the run folder.

        One progress step per scan; under ``torchrun`` each rank registers its share of the scans.
        """
        if self.run.pseudo_labels.exists():
            return np.stack([label.classes for label in load_pseudo_labels(self.run.pseudo_labels)])
        labeller = PseudoLabeller(self.run, self.config, self.data, self.preset, self.device, registration)
        if self.group.active:
            return data_parallel.shared_pseudo_labels(self.group, self.progress, self.run, self.data, labeller)
        data = self.data
        self.progress.start_stage("pseudo_labels", len(data.scans),
                                  f"warping the atlas label onto every scan {labeller.describe()}")
        labels = []
        for index in range(len(data.scans)):
            labels.append(labeller(index))
            self.progress.update(index + 1, message=progress_message(data.scan_names[index], labels[-1]))
        with atomic_path(self.run.pseudo_labels) as temp:
            save_pseudo_labels(temp, labels)
        self.progress.end_stage()
        return np.stack([label.classes for label in labels])
