"""Training orchestration: validate, prepare, register, make pseudo labels, segment, finalise.

Every stage checkpoints into the run folder; ``resume=True`` picks up after the last finished
step of the last unfinished stage, with identical results to an uninterrupted run.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from RRLMedSAMLib import MODEL_FORMAT_VERSION, __version__
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import atomic_path, write_json_atomic
from RRLMedSAMLib.io.label_table import build_label_table, write_label_table
from RRLMedSAMLib.io.volumes import ensure_writable_folder, read_scan, volume_stem, write_image
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.training.device import resolve_device
from RRLMedSAMLib.training.networks import build_networks, parameter_counts
from RRLMedSAMLib.training.prepare import (
    check_scan_paths, load_prepared, prepare_training_data, read_atlas, save_prepared,
)
from RRLMedSAMLib.training.presets import get_preset
from RRLMedSAMLib.training.registration_stage import make_pseudo_labels, make_registration_step
from RRLMedSAMLib.training.run_folder import RunFolder, config_hash, path_fingerprint, read_config
from RRLMedSAMLib.training.checkpoint import save_weights
from RRLMedSAMLib.training.segmentation_stage import make_segmentation_step
from RRLMedSAMLib.training.stage_runner import run_stage


@dataclass
class TrainRequest:
    """What ``rrlmedsam train`` was asked to do."""

    atlas_image: Path
    atlas_label: Path
    images: list[Path]
    out: Path
    preset: str = "fast"
    device: str = "auto"
    resume: bool = False
    seed: int = 0
    labels_table: Path | None = None
    overrides: dict = field(default_factory=dict)


def _inputs_config(request: TrainRequest) -> dict:
    return {
        "atlas_image": path_fingerprint(request.atlas_image),
        "atlas_label": path_fingerprint(request.atlas_label),
        "images": [path_fingerprint(p) for p in request.images],
    }


def _start_or_resume(request: TrainRequest, run: RunFolder) -> dict | None:
    """Check the run folder against the request; return the stored config when resuming."""
    if request.resume:
        if not run.config.exists():
            raise InputError(f"Nothing to resume in {run.root}: it holds no training (no config.json). Drop --resume.")
        config = read_config(run)
        if config["inputs"] != _inputs_config(request):
            raise InputError(f"--resume with different inputs than the training in {run.root}; pass the same atlas and images.")
        return config
    if run.config.exists():
        raise InputError(f"{run.root} already holds a training; pass --resume to continue it or choose an empty --out folder.")
    return None


def train(request: TrainRequest, progress: ProgressReporter | None = None) -> RunFolder:
    """Run (or resume) a training; returns the run folder."""
    run = RunFolder(Path(request.out))
    check_scan_paths(request.images)
    stored = _start_or_resume(request, run) if run.root.exists() else None
    if request.resume and stored is None:
        raise InputError(f"Nothing to resume: {run.root} does not exist.")
    atlas = read_atlas(request.atlas_image, request.atlas_label)
    scans = [read_scan(p, "Image") for p in request.images]
    names = [volume_stem(p) for p in request.images]
    preset = get_preset(request.preset, **request.overrides) if stored is None else None
    device = resolve_device(request.device)
    ensure_writable_folder(run.root)
    progress = progress or ProgressReporter(run.progress)

    if stored is None:
        label_table = build_label_table(atlas.label, request.atlas_label, request.labels_table)
        config = {
            "format_version": MODEL_FORMAT_VERSION,
            "engine_version": __version__,
            "method": "plain",
            "preset": preset.to_dict(),
            "seed": request.seed,
            "inputs": _inputs_config(request),
            "scan_names": names,
            "label_ids": atlas.label_ids,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_image(atlas.image, run.atlas_image)
        write_image(atlas.label, run.atlas_label)
        write_label_table(label_table, run.labels)
        write_json_atomic(run.config, config)
    else:
        config = stored
    from RRLMedSAMLib.training.presets import Preset

    preset = Preset.from_dict(config["preset"])
    seed = int(config["seed"])
    torch.manual_seed(seed)
    networks = build_networks(preset, len(atlas.label_ids) + 1)
    for module in networks.values():
        module.to(device)

    if run.prepared.exists():
        data = load_prepared(run.prepared)
    else:
        divisor = 2 ** (len(preset.channels) - 1)
        data = prepare_training_data(atlas, scans, names, preset.grid_size, divisor, preset.affine_iterations, seed, progress)
        save_prepared(data, run.prepared)

    registration = networks["registration"]
    reg_optimizer = torch.optim.Adam(registration.parameters(), lr=preset.learning_rate)
    run_stage(
        "registration", preset.registration_steps,
        make_registration_step(registration, reg_optimizer, data, preset, device),
        {"registration": registration}, {"adam": reg_optimizer}, run.checkpoint("registration"),
        progress, seed, preset.checkpoint_every,
    )

    if run.pseudo_labels.exists():
        pseudo_labels = load_file(str(run.pseudo_labels))["classes"]
    else:
        progress.start_stage("pseudo_labels", 1, "warping the atlas label onto every scan")
        pseudo_labels = make_pseudo_labels(registration, data, preset, device)
        with atomic_path(run.pseudo_labels) as temp:
            save_file({"classes": pseudo_labels}, str(temp))
        progress.update(1)
        progress.end_stage()

    segmentation = networks["segmentation"]
    if not run.checkpoint("segmentation").exists():
        segmentation.encoder.load_state_dict(registration.encoder.state_dict())
    seg_optimizer = torch.optim.Adam(segmentation.parameters(), lr=preset.learning_rate)
    run_stage(
        "segmentation", preset.segmentation_steps,
        make_segmentation_step(
            segmentation, seg_optimizer, data, pseudo_labels, device, patch_size=preset.segmentation_patch
        ),
        {"segmentation": segmentation}, {"adam": seg_optimizer}, run.checkpoint("segmentation"),
        progress, seed, preset.checkpoint_every,
    )

    save_weights(run.model, networks, {"config_hash": config_hash(config)})
    write_json_atomic(run.model_card, _model_card(config, networks, device))
    progress.done(f"model written to {run.model}")
    return run


def _model_card(config: dict, networks: dict, device: torch.device) -> dict:
    return {
        "engine": "RRLMedSAMLib",
        "engine_version": __version__,
        "format_version": MODEL_FORMAT_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": config["method"],
        "configuration_hash": config_hash(config),
        "data": {
            "atlas_image": config["inputs"]["atlas_image"]["path"],
            "atlas_label": config["inputs"]["atlas_label"]["path"],
            "unlabelled_scans": [entry["path"] for entry in config["inputs"]["images"]],
            "label_ids": config["label_ids"],
        },
        "settings": config["preset"] | {"seed": config["seed"]},
        "parameters": parameter_counts(networks),
        "trained_on": {"device": str(device), "torch": torch.__version__, "python": platform.python_version()},
    }
