"""Segment scans with a trained run and write every result on the scan's own grid.

Per scan, ``OUT/<name>/`` receives (atomically, as one folder):
``segmentation.nii.gz`` (atlas ids), ``labels.csv``, ``warped_atlas_label.nii.gz``,
``warped_atlas_image.nii.gz``, ``deformation.nrrd`` (atlas<->scan displacement, LPS mm,
resampling direction), ``qc.json`` (method, how the registration was made, folding fraction,
per-label volumes, timings) and, for the RRL methods, ``prompt_mask.nii.gz`` (the general branch's
mask that prompted the AP decoder, atlas ids). What the networks do per method is in
:mod:`RRLMedSAMLib.inference.predictors`.

Atlas-prior runs fuse the network's correction with the registration-only label at the scan's
full resolution (:func:`RRLMedSAMLib.geometry.deformation.fuse_correction_on_scan`): with a
silent network the segmentation is exactly ``warped_atlas_label``.

With ``registration_ensemble`` > 1 the label fused with the correction is the majority vote of
that many registrations from perturbed starts (:mod:`RRLMedSAMLib.registration.ensemble`).
With ``label_smoothing_mm`` > 0 the final segmentation (never ``warped_atlas_label``) is then
smoothed structure by structure, keeping volumes (:mod:`RRLMedSAMLib.inference.label_smoothing`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.affine import affine_from_dict, prealign_to_atlas
from RRLMedSAMLib.geometry.deformation import (
    compose_scan_displacement,
    folding_fraction,
    fuse_correction_on_scan,
    map_probabilities_to_scan,
    warp_atlas_to_scan,
    write_displacement_field,
)
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.inference.label_smoothing import AUTO, LabelSmoothing, apply_label_smoothing, atlas_roughness
from RRLMedSAMLib.inference.predictors import PREDICTORS, REGISTRATION_AFFINE_ONLY, PredictorInputs
from RRLMedSAMLib.io.atomic import atomic_directory, write_json_atomic
from RRLMedSAMLib.io.file_hash import sha256_file
from RRLMedSAMLib.io.label_table import LabelEntry, classes_to_labels, labels_to_classes, read_label_table, write_label_table
from RRLMedSAMLib.io.volumes import read_label, read_scan, volume_stem, write_image
from RRLMedSAMLib.models.atlas_prior import PRIOR_FLOOR, restore_vanished_structures
from RRLMedSAMLib.registration.ensemble import anatomy_centre, perturbed_prealignments, vote
from RRLMedSAMLib.registration.register import Field, Registration, make_registration, register
from RRLMedSAMLib.registration.volume_calibration import (
    VolumeCalibration,
    calibrated_voxel_counts,
    label_volumes_mm3,
    read_volume_calibration,
)
from RRLMedSAMLib.run.config import run_settings, run_working_grid
from RRLMedSAMLib.run.folder import RunFolder, require_trained_model
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.networks import load_run_networks
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.teacher import build_teacher
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache


@dataclass
class TrainedModel:
    """A finished run loaded for inference."""

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
    """The training scans' pre-alignments keyed by file sha256 (empty for runs made before they were kept)."""
    registration: Registration | None = None
    """The run's deformable registration, fine-grid pass included (``None``: the method has none, AutoSAM)."""
    label_smoothing_mm: LabelSmoothing = 0.0
    """Gaussian sigma (mm) of the volume-keeping smoothing of the final segmentation (0 = off), or ``"auto"``."""
    atlas_roughness: dict[int, float] | None = None
    """Each atlas structure's boundary roughness, which ``"auto"`` smoothing matches (``None`` otherwise)."""
    registration_ensemble: int = 1
    """Registrations voted for the label the correction is fused with (1 = the pre-alignment's alone)."""
    volume_calibration: VolumeCalibration | None = None
    """The run's volume calibration, applied to each final segmentation (``None``: off, or the run has none)."""

    @property
    def label_ids(self) -> list[int]:
        return [int(v) for v in self.config["label_ids"]]

    @property
    def ensemble_applies(self) -> bool:
        """Whether a registration ensemble can change this run's segmentation (atlas prior, deformable registration)."""
        return self.preset.atlas_prior and self.method.family != "autosam"

    @property
    def ensemble_members(self) -> int:
        """Registrations each scan gets: ``registration_ensemble`` where the ensemble applies, else 1."""
        return self.registration_ensemble if self.ensemble_applies else 1

    @cached_property
    def atlas_volumes_mm3(self) -> dict[int, float]:
        """Physical volume of each atlas structure (what volume calibration extrapolates from)."""
        return label_volumes_mm3(self.atlas_label)

    @cached_property
    def ensemble_centre(self) -> tuple[float, float, float]:
        """The point (LPS mm) the registration ensemble's perturbations rotate the atlas about."""
        return anatomy_centre(self.atlas_label)


def load_trained_model(
    run_dir: str | os.PathLike, device: torch.device, refinement_steps: int | None = None,
    label_smoothing_mm: LabelSmoothing = 0.0, registration_ensemble: int = 1, volume_calibration: bool = False,
) -> TrainedModel:
    """Load a finished run folder (configuration, atlas, label table and weights).

    ``refinement_steps`` overrides the preset's fine-grid refinement iterations (0 = off);
    ``label_smoothing_mm`` smooths each final segmentation (:mod:`RRLMedSAMLib.inference.label_smoothing`);
    ``registration_ensemble`` > 1 votes that many registrations (:mod:`RRLMedSAMLib.registration.ensemble`);
    ``volume_calibration`` applies the run's calibration if it has one (:mod:`RRLMedSAMLib.registration.volume_calibration`).
    """
    if registration_ensemble < 1:
        raise ValueError(f"a registration ensemble needs at least one member, not {registration_ensemble}")
    run = RunFolder(Path(run_dir))
    config = require_trained_model(run)
    method, preset, settings, teacher_record = run_settings(config)
    atlas_image = read_scan(run.atlas_image, "Run folder atlas image")
    atlas_label = read_label(run.atlas_label, "Run folder atlas label")
    grid = run_working_grid(config, atlas_label)
    networks = load_run_networks(run, config, device)
    registration = None
    if "registration" in networks:
        registration = make_registration(networks["registration"], atlas_image, atlas_label, grid, preset, device,
                                         refinement_steps)
    inputs = PredictorInputs(method, preset, networks, device)
    if method.family == "autosam":
        inputs.teacher = build_teacher(teacher_record, settings, device)
        cache_folder = run.root / "cache" / "teacher"
        inputs.cache = TeacherFeatureCache(cache_folder) if os.access(cache_folder, os.W_OK) else None
    training_affines = json.loads(run.prealignment.read_text()) if run.prealignment.is_file() else {}
    return TrainedModel(
        run, config, preset, grid, read_label_table(run.labels), atlas_image, atlas_label,
        networks, device, method, inputs, training_affines, registration, label_smoothing_mm,
        atlas_roughness(atlas_label) if label_smoothing_mm == AUTO else None, registration_ensemble,
        read_volume_calibration(run.root) if volume_calibration else None,
    )


@torch.no_grad()
def segment_scan(
    model: TrainedModel, image_path: str | os.PathLike, out_root: str | os.PathLike,
    on_registration: Callable[[int], None] | None = None,
) -> Path:
    """Segment one scan; returns its result folder ``out_root/<name>``.

    ``on_registration(k)`` is called after each of the scan's ``model.ensemble_members``
    registrations, with ``k`` the number done so far (1 after the pre-alignment's own).
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    scan = read_scan(image_path, "Image")
    known = model.training_affines.get(sha256_file(image_path)) if model.training_affines else None
    if known is not None:
        atlas_to_scan = affine_from_dict(known["affine"])
    else:
        atlas_to_scan = prealign_to_atlas(
            model.atlas_image, scan, model.grid, iterations=model.preset.affine_iterations, seed=int(model.config["seed"])
        )
    timings["prealign_s"] = time.perf_counter() - start

    tick = time.perf_counter()
    scan_working = normalize_intensity(resample_to_grid(scan, model.grid, atlas_to_scan))
    prediction = PREDICTORS[model.method.family](model.predictor_inputs, scan_working)
    if prediction.deformable:
        assert model.registration is not None
        field = register(model.registration, scan, atlas_to_scan, scan_working)
    else:
        field = Field(model.grid, np.zeros((3, *scan_working.shape), dtype=np.float32), REGISTRATION_AFFINE_ONLY)
    timings["networks_s"] = time.perf_counter() - tick - (field.refinement_s or 0.0)
    if field.refinement_s is not None:
        timings["fine_refinement_s"] = field.refinement_s
    if on_registration is not None:
        on_registration(1)

    perturbed_labels: list[sitk.Image] = []
    if model.ensemble_members > 1:
        tick = time.perf_counter()
        perturbed_labels = perturbed_registration_labels(model, scan, atlas_to_scan, on_registration)
        timings["registration_ensemble_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    displacement = compose_scan_displacement(scan, atlas_to_scan, field.grid, field.ddf)
    warped_label = warp_atlas_to_scan(model.atlas_label, displacement, is_label=True)
    restored: list[int] = []
    if prediction.correction is None:
        segmentation = _labelmap(model, prediction.probabilities, scan, atlas_to_scan)
    else:
        registration_label = vote([warped_label, *perturbed_labels])
        segmentation, restored = _fused_labelmap(model, registration_label, prediction.correction, scan, atlas_to_scan)
    calibrated: dict[int, int] = {}
    volumes_before: dict[int, float] = {}
    if model.volume_calibration is not None:
        calibrated = calibrated_voxel_counts(segmentation, model.atlas_volumes_mm3, model.volume_calibration.recovery)
        volumes_before = label_volumes_mm3(segmentation)
    segmentation, smoothing_sigmas = apply_label_smoothing(
        segmentation, model.label_smoothing_mm, model.atlas_roughness, calibrated
    )
    changed = int((sitk.GetArrayViewFromImage(segmentation) != sitk.GetArrayViewFromImage(warped_label)).sum())
    prompt_mask = None if prediction.prompt is None else _labelmap(model, prediction.prompt, scan, atlas_to_scan)
    warped_image = warp_atlas_to_scan(model.atlas_image, displacement, is_label=False)
    timings["resampling_s"] = time.perf_counter() - tick

    name = volume_stem(image_path)
    with atomic_directory(Path(out_root) / name) as folder:
        tick = time.perf_counter()
        write_image(segmentation, folder / "segmentation.nii.gz")
        write_label_table(model.label_table, folder / "labels.csv")
        write_image(warped_label, folder / "warped_atlas_label.nii.gz")
        write_image(warped_image, folder / "warped_atlas_image.nii.gz")
        write_displacement_field(displacement, folder / "deformation.nrrd")
        if prompt_mask is not None:
            write_image(prompt_mask, folder / "prompt_mask.nii.gz")
        timings["writing_s"] = time.perf_counter() - tick
        report = _quality_report(model, image_path, scan, segmentation, displacement, timings)
        report |= {"method": model.method.name, "registration": field.describe,
                   "prealignment": "reused from training" if known is not None else "computed",
                   "atlas_prior": model.preset.atlas_prior, "registration_ensemble": model.ensemble_members,
                   "label_smoothing_mm": model.label_smoothing_mm,
                   "label_smoothing_sigmas_mm": {str(i): round(v, 3) for i, v in smoothing_sigmas.items()},
                   "volume_calibration": _calibration_report(model, calibrated, volumes_before,
                                                             float(np.prod(scan.GetSpacing()))),
                   "voxels_differing_from_registration": changed,
                   "structures_restored_from_registration": restored,
                   "prompt_mask": "prompt_mask.nii.gz" if prompt_mask is not None else None}
        write_json_atomic(folder / "qc.json", report)
    return Path(out_root) / name


def perturbed_registration_labels(
    model: TrainedModel, scan: sitk.Image, atlas_to_scan: sitk.Transform,
    on_registration: Callable[[int], None] | None = None,
) -> list[sitk.Image]:
    """The atlas label warped onto ``scan`` by the ensemble's registrations from perturbed starts (all but the first).

    Each member runs as the first did: the registration network with instance optimisation on the
    working grid, then the fine-grid refinement when the run has one. ``on_registration(k)`` is
    called after each, ``k`` counting the first member too (2 after the first perturbed one).
    """
    labels = []
    for start in perturbed_prealignments(atlas_to_scan, model.ensemble_centre, model.registration_ensemble,
                                         int(model.config["seed"]))[1:]:
        labels.append(register_atlas_label(model, scan, start))
        if on_registration is not None:
            on_registration(len(labels) + 1)
    return labels


def register_atlas_label(model: TrainedModel, scan: sitk.Image, atlas_to_scan: sitk.Transform) -> sitk.Image:
    """The atlas label warped onto ``scan`` by the run's deformable registration from the affine ``atlas_to_scan``.

    :func:`~RRLMedSAMLib.registration.register.register`, as for every scan ``segment`` registers.
    """
    assert model.registration is not None
    field = register(model.registration, scan, atlas_to_scan)
    return warp_atlas_to_scan(model.atlas_label, compose_scan_displacement(scan, atlas_to_scan, field.grid, field.ddf),
                              is_label=True)


def _calibration_report(model: TrainedModel, calibrated: dict[int, int], volumes_before_mm3: dict[int, float],
                        voxel_mm3: float) -> dict | None:
    """``qc.json``'s account of the volume calibration: each label's recovery, its volume (ml) before and its target."""
    if model.volume_calibration is None:
        return None
    return {"recovery": {str(i): round(s, 3) for i, s in model.volume_calibration.recovery.items()},
            "volume_before_ml": {str(i): round(volumes_before_mm3.get(i, 0.0) / 1000.0, 4) for i in calibrated},
            "volume_target_ml": {str(i): round(n * voxel_mm3 / 1000.0, 4) for i, n in calibrated.items()}}


def _labelmap(
    model: TrainedModel, probabilities: np.ndarray, scan: sitk.Image, atlas_to_scan: sitk.Transform
) -> sitk.Image:
    """Working-grid probabilities ``(K, D, H, W)`` -> labelmap with the atlas ids on the scan's grid."""
    classes = map_probabilities_to_scan(probabilities, model.grid, scan, atlas_to_scan)
    labelmap = sitk.GetImageFromArray(classes_to_labels(classes, model.label_ids))
    labelmap.CopyInformation(scan)
    return labelmap


def _fused_labelmap(
    model: TrainedModel, registration: sitk.Image, correction: np.ndarray, scan: sitk.Image, atlas_to_scan: sitk.Transform
) -> tuple[sitk.Image, list[int]]:
    """The registration-only label corrected by the network's logits, fused at the scan's resolution.

    Returns the labelmap (atlas ids) and the ids of the structures the fusion had (nearly) deleted
    and that were restored from the registration (:func:`restore_vanished_structures`).
    """
    registration_classes = labels_to_classes(sitk.GetArrayViewFromImage(registration), model.label_ids)
    classes = fuse_correction_on_scan(correction, registration_classes, model.grid, scan, atlas_to_scan, PRIOR_FLOOR)
    classes, restored = restore_vanished_structures(classes, registration_classes)
    labelmap = sitk.GetImageFromArray(classes_to_labels(classes, model.label_ids))
    labelmap.CopyInformation(scan)
    return labelmap, [model.label_ids[index - 1] for index in restored]


def _quality_report(
    model: TrainedModel, image_path: str | os.PathLike, scan: sitk.Image, segmentation: sitk.Image,
    displacement: sitk.Image, timings: dict[str, float],
) -> dict:
    voxel_ml = float(np.prod(scan.GetSpacing())) / 1000.0
    labels = sitk.GetArrayViewFromImage(segmentation)
    counts = np.bincount(labels.ravel(), minlength=max(model.label_ids) + 1)
    names = {entry.id: entry.name for entry in model.label_table}
    return {
        "image": str(Path(image_path).resolve()),
        "model": str(model.run.root.resolve()),
        "folding_fraction": folding_fraction(displacement),
        "label_volumes_ml": {str(i): round(float(counts[i]) * voxel_ml, 4) for i in model.label_ids},
        "label_names": {str(i): names.get(i, f"Label {i}") for i in model.label_ids},
        "missing_labels": [i for i in model.label_ids if counts[i] == 0],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "device": str(model.device),
    }
