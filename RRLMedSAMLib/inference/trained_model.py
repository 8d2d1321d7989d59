"""A finished run folder loaded for inference: the atlas, the label table and the networks.

What a run *is* lives here; how ``segment`` applies it (smoothing, ensemble, calibration, the
fine registration's length) lives in :class:`RRLMedSAMLib.inference.segment_options.SegmentOptions`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.inference.predictors import PredictorInputs
from RRLMedSAMLib.io.label_table import LabelEntry, read_label_table
from RRLMedSAMLib.io.volumes import read_label, read_scan
from RRLMedSAMLib.registration.ensemble import anatomy_centre
from RRLMedSAMLib.registration.volume_calibration import label_volumes_mm3
from RRLMedSAMLib.run.config import run_settings, run_working_grid
from RRLMedSAMLib.run.folder import RunFolder, require_trained_model
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.networks import load_run_networks
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.teacher import build_teacher
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache


@dataclass
class TrainedModel:
    """A finished run loaded for inference.

    ``training_affines`` holds the training scans' pre-alignments keyed by file sha256, so a scan
    the run was trained on is pre-aligned exactly as in training.
    """

    run: RunFolder
    config: dict
    preset: Preset
    grid: WorkingGrid
    label_table: list[LabelEntry]
    atlas_image: sitk.Image
    atlas_label: sitk.Image
    networks: dict[str, torch.nn.Module]
    device: torch.device
    method: Method
    predictor_inputs: PredictorInputs
    training_affines: dict[str, dict]

    @property
    def label_ids(self) -> list[int]:
        return [int(v) for v in self.config["label_ids"]]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def ensemble_applies(self) -> bool:
        """Whether a registration ensemble can change this run's segmentation (atlas prior, deformable registration)."""
        return self.preset.atlas_prior and self.method.family != "autosam"

    @cached_property
    def atlas_volumes_mm3(self) -> dict[int, float]:
        """Physical volume of each atlas structure (what volume calibration extrapolates from)."""
        return label_volumes_mm3(self.atlas_label)

    @cached_property
    def ensemble_centre(self) -> tuple[float, float, float]:
        """The point (LPS mm) the registration ensemble's perturbations rotate the atlas about."""
        return anatomy_centre(self.atlas_label)


def load_trained_model(run_dir: str | os.PathLike, device: torch.device) -> TrainedModel:
    """Load a finished run folder (configuration, atlas, label table and weights) onto ``device``."""
    run = RunFolder(Path(run_dir))
    config = require_trained_model(run)
    method, preset, settings, teacher_record = run_settings(config)
    atlas_label = read_label(run.atlas_label, "Run folder atlas label")
    networks = load_run_networks(run, config, device)
    inputs = PredictorInputs(method, preset, networks, device)
    if method.family == "autosam":
        inputs.teacher = build_teacher(teacher_record, settings, device)
        cache_folder = run.root / "cache" / "teacher"
        inputs.cache = TeacherFeatureCache(cache_folder) if os.access(cache_folder, os.W_OK) else None
    training_affines = json.loads(run.prealignment.read_text())
    return TrainedModel(
        run, config, preset, run_working_grid(config), read_label_table(run.labels),
        read_scan(run.atlas_image, "Run folder atlas image"), atlas_label, networks, device, method, inputs,
        training_affines,
    )
