"""``segment``'s ordered list of steps over one scan, then its result folder.

:func:`segment_scan` runs :data:`STEPS` in order on a :class:`ScanWork`:

1. ``prealign`` - the atlas->scan affine (reused from training for a training scan);
2. ``networks`` - the method's networks on the working grid (:mod:`RRLMedSAMLib.inference.predictors`);
3. ``registration`` - the deformable registration (:func:`RRLMedSAMLib.registration.register.register`);
4. ``registration_ensemble`` - more registrations from perturbed starts, voted (option);
5. ``labels`` - the final labelmap on the scan's grid: atlas-prior runs fuse the network's
   correction with the registration-only label (a silent network gives exactly ``warped_atlas_label``);
6. ``volume_calibration`` - target volumes from the run's calibration (option);
7. ``label_smoothing`` - volume-keeping smoothing of each structure (option; never ``warped_atlas_label``).

The result folder (written atomically by :mod:`RRLMedSAMLib.inference.scan_results`) holds
``segmentation.nii.gz``, ``labels.csv``, ``warped_atlas_label.nii.gz``, ``warped_atlas_image.nii.gz``,
``deformation.nrrd``, ``qc.json`` and, for the RRL methods, ``prompt_mask.nii.gz``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.geometry.affine import PrealignmentError, affine_from_dict, prealign_to_atlas
from RRLMedSAMLib.geometry.deformation import (
    compose_scan_displacement,
    fuse_correction_on_scan,
    map_probabilities_to_scan,
    warp_atlas_to_scan,
)
from RRLMedSAMLib.geometry.working_grid import normalize_intensity, resample_to_grid
from RRLMedSAMLib.inference.label_smoothing import apply_label_smoothing
from RRLMedSAMLib.inference.predictors import PREDICTORS, REGISTRATION_AFFINE_ONLY
from RRLMedSAMLib.inference.scan_results import write_scan_results
from RRLMedSAMLib.inference.segmenter import ScanWork, Segmenter
from RRLMedSAMLib.inference.trained_model import TrainedModel
from RRLMedSAMLib.io.file_hash import sha256_file
from RRLMedSAMLib.io.label_table import classes_to_labels, labels_to_classes
from RRLMedSAMLib.io.volumes import read_scan
from RRLMedSAMLib.models.atlas_prior import PRIOR_FLOOR, restore_vanished_structures
from RRLMedSAMLib.registration.ensemble import perturbed_prealignments, vote
from RRLMedSAMLib.registration.register import Field, register
from RRLMedSAMLib.registration.volume_calibration import calibrated_voxel_counts, label_volumes_mm3


def prealign(segmenter: Segmenter, work: ScanWork) -> None:
    """The atlas->scan affine: the one training computed for this very file, else a fresh pre-alignment."""
    model = segmenter.model
    known = model.training_affines.get(sha256_file(work.image_path)) if model.training_affines else None
    if known is not None:
        work.atlas_to_scan, work.prealignment = affine_from_dict(known["affine"]), "reused from training"
    else:
        try:
            work.atlas_to_scan = prealign_to_atlas(model.atlas_image, work.scan, model.grid,
                                                   iterations=model.preset.affine_iterations, seed=model.seed)
        except PrealignmentError as error:
            raise InputError(f"Cannot pre-align {work.image_path} to the atlas: {error}.") from None


def predict(segmenter: Segmenter, work: ScanWork) -> None:
    """The method's networks on the scan resampled onto the working grid."""
    model = segmenter.model
    work.scan_working = normalize_intensity(resample_to_grid(work.scan, model.grid, work.atlas_to_scan))
    work.prediction = PREDICTORS[model.method.family](model.predictor_inputs, work.scan_working)


def register_scan(segmenter: Segmenter, work: ScanWork) -> None:
    """The deformable registration (or the affine alone for methods without one); the warped atlas label."""
    model = segmenter.model
    if work.prediction.deformable:
        assert segmenter.registration is not None
        work.registered_field = register(segmenter.registration, work.scan, work.atlas_to_scan, work.scan_working)
    else:
        work.registered_field = Field(model.grid, np.zeros((3, *work.scan_working.shape), dtype=np.float32), REGISTRATION_AFFINE_ONLY)
    if work.registered_field.refinement_s is not None:
        work.timings["fine_registration_s"] = work.registered_field.refinement_s
    work.displacement = displacement_on_scan(work.registered_field, work.scan, work.atlas_to_scan)
    work.warped_label = warp_atlas_to_scan(model.atlas_label, work.displacement, is_label=True)
    if work.on_registration is not None:
        work.on_registration(1)


def register_ensemble(segmenter: Segmenter, work: ScanWork) -> None:
    """The atlas label warped by the ensemble's other members, from perturbed starts (option)."""
    work.perturbed_labels = perturbed_registration_labels(segmenter, work.scan, work.atlas_to_scan, work.on_registration)


def perturbed_registration_labels(
    segmenter: Segmenter, scan: sitk.Image, atlas_to_scan: sitk.Transform,
    on_registration: Callable[[int], None] | None = None,
) -> list[sitk.Image]:
    """The atlas label warped onto ``scan`` by the ensemble's registrations from perturbed starts (all but the first).

    Each member registers as the first did (:func:`register_atlas_label`). ``on_registration(k)``
    is called after each, ``k`` counting the first member too (2 after the first perturbed one).
    """
    model = segmenter.model
    labels = []
    for start in perturbed_prealignments(atlas_to_scan, model.ensemble_centre, segmenter.ensemble_members, model.seed)[1:]:
        labels.append(register_atlas_label(segmenter, scan, start))
        if on_registration is not None:
            on_registration(len(labels) + 1)
    return labels


def label_scan(segmenter: Segmenter, work: ScanWork) -> None:
    """The final labelmap (atlas ids) on the scan's grid."""
    model, prediction = segmenter.model, work.prediction
    if prediction.correction is None:
        work.segmentation = _labelmap(model, prediction.probabilities, work.scan, work.atlas_to_scan)
        return
    registration_label = vote([work.warped_label, *work.perturbed_labels])
    registration_classes = labels_to_classes(sitk.GetArrayViewFromImage(registration_label), model.label_ids)
    classes = fuse_correction_on_scan(prediction.correction, registration_classes, model.grid, work.scan,
                                      work.atlas_to_scan, PRIOR_FLOOR)
    classes, restored = restore_vanished_structures(classes, registration_classes)
    work.segmentation = _as_labelmap(classes, model.label_ids, work.scan)
    work.restored = [model.label_ids[index - 1] for index in restored]


def calibrate_volumes(segmenter: Segmenter, work: ScanWork) -> None:
    """Each structure's target voxel count from the run's volume calibration (option)."""
    work.calibrated_voxels = calibrated_voxel_counts(work.segmentation, segmenter.model.atlas_volumes_mm3,
                                                     segmenter.volume_calibration.recovery)
    work.volumes_before_mm3 = label_volumes_mm3(work.segmentation)


def smooth_labels(segmenter: Segmenter, work: ScanWork) -> None:
    """Volume-keeping smoothing of each structure (to the calibrated counts when there are any)."""
    work.segmentation, work.smoothing_sigmas = apply_label_smoothing(
        work.segmentation, segmenter.options.label_smoothing_mm, segmenter.atlas_roughness, work.calibrated_voxels)


def _always(segmenter: Segmenter) -> bool:
    return True


#: The steps of one scan, in order: the ``qc.json`` timing each is counted under, the step, and
#: whether it runs for a given segmenter (an option that is off is neither run nor timed).
STEPS: tuple[tuple[str, Callable[[Segmenter, ScanWork], None], Callable[[Segmenter], bool]], ...] = (
    ("prealign_s", prealign, _always),
    ("networks_s", predict, _always),
    ("registration_s", register_scan, _always),
    ("registration_ensemble_s", register_ensemble, lambda segmenter: segmenter.ensemble_members > 1),
    ("labels_s", label_scan, _always),
    ("volume_calibration_s", calibrate_volumes, lambda segmenter: segmenter.volume_calibration is not None),
    ("label_smoothing_s", smooth_labels,
     lambda segmenter: segmenter.options.label_smoothing_mm != 0 or segmenter.volume_calibration is not None),
)


def run_steps(segmenter: Segmenter, work: ScanWork, steps: tuple = STEPS) -> None:
    """Run ``steps`` (those that apply to ``segmenter``) on ``work`` in order, timing each into ``work.timings``."""
    for timing, step, applies in steps:
        if applies(segmenter):
            tick = time.perf_counter()
            step(segmenter, work)
            work.timings[timing] = time.perf_counter() - tick


#: Every step after the pre-alignment (a cohort pre-aligns the next scan while the current one runs these).
AFTER_PREALIGNMENT = tuple(entry for entry in STEPS if entry[1] is not prealign)


@torch.no_grad()
def segment_scan(
    segmenter: Segmenter, image_path: str | os.PathLike, out_root: str | os.PathLike,
    on_registration: Callable[[int], None] | None = None, prealigned: ScanWork | None = None,
) -> Path:
    """Segment one scan through :data:`STEPS`; returns its result folder ``out_root/<name>``.

    ``on_registration(k)`` is called after each of the scan's ``segmenter.ensemble_members``
    registrations, with ``k`` the number done so far (1 after the pre-alignment's own).
    ``prealigned``: the scan already read and pre-aligned (:data:`STEPS`' first step done), whose
    remaining steps run here.
    """
    if prealigned is not None:
        work, steps = prealigned, AFTER_PREALIGNMENT
        work.on_registration = on_registration
    else:
        tick = time.perf_counter()
        work, steps = ScanWork(Path(image_path), read_scan(image_path, "Image"), on_registration), STEPS
        work.timings["reading_s"] = time.perf_counter() - tick
    run_steps(segmenter, work, steps)
    return write_scan_results(segmenter, work, Path(out_root))


def register_atlas_label(segmenter: Segmenter, scan: sitk.Image, atlas_to_scan: sitk.Transform) -> sitk.Image:
    """The atlas label warped onto ``scan`` by the run's deformable registration from the affine ``atlas_to_scan``."""
    assert segmenter.registration is not None
    displacement = displacement_on_scan(register(segmenter.registration, scan, atlas_to_scan), scan, atlas_to_scan)
    return warp_atlas_to_scan(segmenter.model.atlas_label, displacement, is_label=True)


def displacement_on_scan(field_: Field, scan: sitk.Image, atlas_to_scan: sitk.Transform) -> sitk.Image:
    """``field_`` composed with the affine ``atlas_to_scan`` on the scan's grid; the composition a check already made when there is one."""
    if field_.scan_displacement is not None:
        return field_.scan_displacement
    return compose_scan_displacement(scan, atlas_to_scan, field_.grid, field_.ddf)


def _as_labelmap(classes: np.ndarray, label_ids: list[int], scan: sitk.Image) -> sitk.Image:
    labelmap = sitk.GetImageFromArray(classes_to_labels(classes, label_ids))
    labelmap.CopyInformation(scan)
    return labelmap


def _labelmap(model: TrainedModel, probabilities: np.ndarray, scan: sitk.Image, atlas_to_scan: sitk.Transform) -> sitk.Image:
    """Working-grid probabilities ``(K, D, H, W)`` -> labelmap with the atlas ids on the scan's grid."""
    return _as_labelmap(map_probabilities_to_scan(probabilities, model.grid, scan, atlas_to_scan), model.label_ids, scan)
