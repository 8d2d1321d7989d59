"""The last stage of ``train``: measure a finished run's volume calibration on its training scans.

Runs the registration exactly as ``segment`` does (fresh affine pre-alignment, then
:func:`RRLMedSAMLib.registration.register.register`: network, instance optimisation, fine registration
stage), on the run's first :data:`MAX_CALIBRATION_SCANS` scans and on their synthetically
resized copies (:mod:`RRLMedSAMLib.registration.volume_calibration`).
The result is written atomically to ``volume_calibration.json``; a resumed training that finds it
does not measure again.
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.affine import prealign_to_atlas
from RRLMedSAMLib.geometry.deformation import compose_scan_displacement, warp_atlas_to_scan
from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.volumes import read_label, read_scan, volume_stem
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.registration.register import make_registration, register
from RRLMedSAMLib.registration.volume_calibration import (
    CALIBRATION_FILE,
    CALIBRATION_SCALES,
    MAX_CALIBRATED_STRUCTURES,
    MAX_CALIBRATION_SCANS,
    VolumeCalibration,
    measure_volume_recovery,
    read_volume_calibration,
)
from RRLMedSAMLib.run.config import run_settings, run_working_grid
from RRLMedSAMLib.run.folder import RunFolder, require_trained_model
from RRLMedSAMLib.run.networks import load_run_networks

STAGE = "volume_calibration"


def calibration_skip_reason(method_family: str, structures: int) -> str | None:
    """Why a run of ``method_family`` with ``structures`` labels gets no volume calibration, or ``None`` when it does."""
    if method_family == "autosam":
        return "no deformable registration (AutoSAM)"
    if structures > MAX_CALIBRATED_STRUCTURES:
        return f"{structures} structures, more than {MAX_CALIBRATED_STRUCTURES} (cost)"
    return None


def calibrate_run(run_root: Path, device: torch.device, progress: ProgressReporter) -> dict:
    """Measure (or read back) the run's volume calibration; returns the model card's summary of it."""
    stored = read_volume_calibration(run_root)
    if stored is not None:
        return _summary(stored)
    config = require_trained_model(RunFolder(Path(run_root)))
    reason = calibration_skip_reason(run_settings(config)[0].family, len(config["label_ids"]))
    if reason is not None:
        return {"applied": False, "reason": reason}
    run = RunFolder(Path(run_root))
    preset, seed, label_ids = run_settings(config)[1], int(config["seed"]), [int(v) for v in config["label_ids"]]
    atlas_image = read_scan(run.atlas_image, "Run folder atlas image")
    atlas_label = read_label(run.atlas_label, "Run folder atlas label")
    grid = run_working_grid(config)
    registration = make_registration(load_run_networks(run, config, device)["registration"], atlas_image, atlas_label,
                                     grid, preset, device)
    paths = [Path(entry["path"]) for entry in config["inputs"]["images"]][:MAX_CALIBRATION_SCANS]
    registrations = len(paths) * (1 + len(label_ids) * len(CALIBRATION_SCALES))
    progress.start_stage(STAGE, registrations, f"measuring how far the registration follows size changes "
                                               f"({len(paths)} scan(s), {registrations} registrations)")
    done = 0

    def registered() -> None:
        nonlocal done
        done += 1
        progress.update(done, message=f"registration {done} of {registrations}")

    def register_label(scan: sitk.Image) -> sitk.Image:
        start = prealign_to_atlas(atlas_image, scan, grid, iterations=preset.affine_iterations, seed=seed)
        field = register(registration, scan, start)
        displacement = compose_scan_displacement(scan, start, field.grid, field.ddf)
        return warp_atlas_to_scan(atlas_label, displacement, is_label=True)

    with torch.no_grad():
        scans = [(volume_stem(path), read_scan(path, "Image")) for path in paths]
        calibration = measure_volume_recovery(register_label, scans, label_ids, registered)
    write_json_atomic(Path(run_root) / CALIBRATION_FILE, calibration.to_dict())
    progress.end_stage(", ".join(f"label {k}: recovery {v:.2f}" for k, v in calibration.recovery.items()))
    return _summary(calibration)


def _summary(calibration: VolumeCalibration) -> dict:
    return {"applied": True, "recovery": {str(k): round(v, 3) for k, v in calibration.recovery.items()},
            "file": CALIBRATION_FILE}
