"""A segmented scan's result folder, written atomically, and its ``qc.json``.

``OUT/<name>/``: ``segmentation.nii.gz`` (atlas ids), ``labels.csv``, ``warped_atlas_label.nii.gz``,
``warped_atlas_image.nii.gz``, ``deformation.nrrd`` (atlas<->scan displacement, LPS mm, resampling
direction), ``prompt_mask.nii.gz`` (RRL methods: the general branch's mask that prompted the AP
decoder) and ``qc.json`` (method, how the registration was made, folding fraction, per-label
volumes, the options used, what the fine registration stage ran, timings per step).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.geometry.deformation import folding_fraction, map_probabilities_to_scan, warp_atlas_to_scan, write_displacement_field
from RRLMedSAMLib.inference.segmenter import ScanWork, Segmenter
from RRLMedSAMLib.io.atomic import atomic_directory, write_json_atomic
from RRLMedSAMLib.io.label_table import classes_to_labels, write_label_table
from RRLMedSAMLib.io.volumes import volume_stem, write_image


def write_scan_results(segmenter: Segmenter, work: ScanWork, out_root: Path) -> Path:
    """Write ``work``'s results into ``out_root/<scan name>`` as one folder (temporary name, then renamed)."""
    model = segmenter.model
    tick = time.perf_counter()
    prompt_mask = None
    if work.prediction.prompt is not None:
        classes = map_probabilities_to_scan(work.prediction.prompt, model.grid, work.scan, work.atlas_to_scan)
        prompt_mask = sitk.GetImageFromArray(classes_to_labels(classes, model.label_ids))
        prompt_mask.CopyInformation(work.scan)
    warped_image = warp_atlas_to_scan(model.atlas_image, work.displacement, is_label=False)
    name = volume_stem(work.image_path)
    with atomic_directory(out_root / name) as folder:
        write_image(work.segmentation, folder / "segmentation.nii.gz")
        write_label_table(model.label_table, folder / "labels.csv")
        write_image(work.warped_label, folder / "warped_atlas_label.nii.gz")
        write_image(warped_image, folder / "warped_atlas_image.nii.gz")
        write_displacement_field(work.displacement, folder / "deformation.nrrd")
        if prompt_mask is not None:
            write_image(prompt_mask, folder / "prompt_mask.nii.gz")
        work.timings["writing_s"] = time.perf_counter() - tick
        write_json_atomic(folder / "qc.json", quality_report(segmenter, work, prompt_mask is not None))
    return out_root / name


def quality_report(segmenter: Segmenter, work: ScanWork, has_prompt_mask: bool) -> dict:
    """``qc.json``: what ran on this scan and what came out (volumes in ml, timings in s)."""
    model, options = segmenter.model, segmenter.options
    voxel_ml = float(np.prod(work.scan.GetSpacing())) / 1000.0
    labels = sitk.GetArrayViewFromImage(work.segmentation)
    counts = np.bincount(labels.ravel(), minlength=max(model.label_ids) + 1)
    names = {entry.id: entry.name for entry in model.label_table}
    changed = int((labels != sitk.GetArrayViewFromImage(work.warped_label)).sum())
    return {
        "image": str(work.image_path.resolve()),
        "model": str(model.run.root.resolve()),
        "method": model.method.name,
        "registration": work.registered_field.describe,
        "fine_registration": work.registered_field.details or None,
        "registration_checks": work.registered_field.checks,
        "prealignment": work.prealignment,
        "atlas_prior": model.preset.atlas_prior,
        "registration_ensemble": segmenter.ensemble_members,
        "label_smoothing_mm": options.label_smoothing_mm,
        "label_smoothing_sigmas_mm": {str(i): round(v, 3) for i, v in work.smoothing_sigmas.items()},
        "volume_calibration": _calibration_report(segmenter, work, voxel_ml * 1000.0),
        "folding_fraction": folding_fraction(work.displacement),
        "label_volumes_ml": {str(i): round(float(counts[i]) * voxel_ml, 4) for i in model.label_ids},
        "label_names": {str(i): names.get(i, f"Label {i}") for i in model.label_ids},
        "missing_labels": [i for i in model.label_ids if counts[i] == 0],
        "voxels_differing_from_registration": changed,
        "structures_restored_from_registration": work.restored,
        "prompt_mask": "prompt_mask.nii.gz" if has_prompt_mask else None,
        "timings_s": {k: round(v, 3) for k, v in work.timings.items()},
        "device": str(model.device),
    }


def _calibration_report(segmenter: Segmenter, work: ScanWork, voxel_mm3: float) -> dict | None:
    """The volume calibration's account: each label's recovery, its volume (ml) before and its target."""
    if segmenter.volume_calibration is None:
        return None
    return {"recovery": {str(i): round(s, 3) for i, s in segmenter.volume_calibration.recovery.items()},
            "volume_before_ml": {str(i): round(work.volumes_before_mm3.get(i, 0.0) / 1000.0, 4)
                                 for i in work.calibrated_voxels},
            "volume_target_ml": {str(i): round(n * voxel_mm3 / 1000.0, 4) for i, n in work.calibrated_voxels.items()}}
