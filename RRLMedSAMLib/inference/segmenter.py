"""A trained run together with the options ``segment`` applies it with, and one scan's work in progress.

:class:`Segmenter` is a :class:`~RRLMedSAMLib.inference.trained_model.TrainedModel` with its
:class:`~RRLMedSAMLib.inference.segment_options.SegmentOptions` and what those options need
prepared once (the registration with the options' fine-stage length, the atlas's roughness for
``auto`` smoothing, the run's volume calibration). :class:`ScanWork` carries one scan through the
steps of :mod:`RRLMedSAMLib.inference.segment_steps`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.inference.label_smoothing import AUTO, atlas_roughness
from RRLMedSAMLib.inference.predictors import Prediction
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.trained_model import TrainedModel, load_trained_model
from RRLMedSAMLib.registration.register import Field, Registration, make_registration
from RRLMedSAMLib.registration.volume_calibration import VolumeCalibration, read_volume_calibration


@dataclass
class Segmenter:
    """A trained run and the options it is applied with, with what those options need prepared once."""

    model: TrainedModel
    options: SegmentOptions
    registration: Registration | None
    """The run's deformable registration with the options' fine-stage length (``None``: the method has none)."""
    atlas_roughness: dict[int, float] | None
    """Each atlas structure's boundary roughness, which ``"auto"`` smoothing matches (``None`` otherwise)."""
    volume_calibration: VolumeCalibration | None
    """The run's volume calibration when the options ask for it and the run has one."""

    @property
    def ensemble_members(self) -> int:
        """Registrations each scan gets: the options' ensemble where it can change the result, else 1."""
        return self.options.registration_ensemble if self.model.ensemble_applies else 1


def prepare_segmenter(model: TrainedModel, options: SegmentOptions | None = None) -> Segmenter:
    """``model`` ready to segment with ``options`` (default: :class:`SegmentOptions`' defaults).

    Raises ``ValueError`` for invalid options.
    """
    options = options or SegmentOptions()
    options.check()
    registration = None
    if "registration" in model.networks:
        registration = make_registration(model.networks["registration"], model.atlas_image, model.atlas_label,
                                         model.grid, model.preset, model.device, options.refinement_steps)
    roughness = atlas_roughness(model.atlas_label) if options.label_smoothing_mm == AUTO else None
    calibration = read_volume_calibration(model.run.root) if options.volume_calibration else None
    return Segmenter(model, options, registration, roughness, calibration)


def open_segmenter(run_dir: str | os.PathLike, device: torch.device, options: SegmentOptions | None = None) -> Segmenter:
    """Load the run folder ``run_dir`` and prepare it to segment with ``options``."""
    return prepare_segmenter(load_trained_model(run_dir, device), options)


@dataclass
class ScanWork:
    """One scan on its way through :data:`STEPS`; each step fills in its part."""

    image_path: Path
    scan: sitk.Image
    on_registration: Callable[[int], None] | None = None
    atlas_to_scan: sitk.Transform | None = None
    prealignment: str = "computed"
    scan_working: np.ndarray | None = None
    prediction: Prediction | None = None
    registered_field: Field | None = None
    perturbed_labels: list[sitk.Image] = field(default_factory=list)
    displacement: sitk.Image | None = None
    warped_label: sitk.Image | None = None
    segmentation: sitk.Image | None = None
    restored: list[int] = field(default_factory=list)
    calibrated_voxels: dict[int, int] = field(default_factory=dict)
    volumes_before_mm3: dict[int, float] = field(default_factory=dict)
    smoothing_sigmas: dict[int, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
