"""Training orchestration: validate, resolve the method and its teacher, prepare, run the method's stages, finalise.

Every stage checkpoints into the run folder; ``resume=True`` picks up after the last finished
step of the last unfinished stage, with identical results to an uninterrupted run. The stages
themselves depend on the method (``run/methods.py``): ``plain`` runs here, the RRL family in
``training/rrl_stages.py``, the AutoSAM baselines in ``training/autosam_stage.py``.
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import SimpleITK as sitk
import torch
from torch import nn

from RRLMedSAMLib import MODEL_FORMAT_VERSION, __version__
from RRLMedSAMLib.errors import CancelledError, InputError
from RRLMedSAMLib.geometry.working_grid import make_working_grid
from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.file_hash import sha256_file
from RRLMedSAMLib.io.label_table import LabelEntry, build_label_table, write_label_table
from RRLMedSAMLib.io.output_folder import claimed_folder
from RRLMedSAMLib.io.volumes import check_registrable, read_scan, volume_stem, write_image
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.checkpoint import save_weights
from RRLMedSAMLib.run.config import run_settings, run_working_grid
from RRLMedSAMLib.run.device import resolve_device
from RRLMedSAMLib.run.distributed import current, launch_from_env, process_group
from RRLMedSAMLib.run.folder import (
    RUN_FILES,
    RunFolder,
    clear_run_layout,
    config_hash,
    path_fingerprint,
    read_config,
    stored_run_state,
)
from RRLMedSAMLib.run.methods import DEFAULT_METHOD, Method, get_method
from RRLMedSAMLib.run.networks import build_networks, parameter_counts, rrl_parameter_counts
from RRLMedSAMLib.run.presets import Preset, get_preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings, get_rrl_settings
from RRLMedSAMLib.run.state import FAILED, FINISHED, INTERRUPTED, RUNNING, write_run_state
from RRLMedSAMLib.run.teacher import resolve_teacher, teacher_log_line, teacher_parameter_count, teacher_summary
from RRLMedSAMLib.training.autosam_stage import train_autosam
from RRLMedSAMLib.training.calibration_stage import calibrate_run
from RRLMedSAMLib.training.context import TrainingContext
from RRLMedSAMLib.training.distill_data import collect_distill_paths
from RRLMedSAMLib.training.prepare import (
    Atlas,
    check_scan_paths,
    load_prepared,
    prealignment_record,
    prepare_training_data,
    read_atlas,
    save_prepared,
)
from RRLMedSAMLib.training.pseudo_labels import fallback_summary, pseudo_label_registrations
from RRLMedSAMLib.training.rank_follower import follow_training
from RRLMedSAMLib.training.registration_stage import make_registration_step
from RRLMedSAMLib.training.rrl_stages import train_rrl
from RRLMedSAMLib.training.segmentation_stage import make_segmentation_step


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
    method: str | None = None
    teacher: str | None = None
    rrl: dict = field(default_factory=dict)
    prepare_run: Callable[[RunFolder, dict], None] | None = None
    volume_calibration: bool = False
    """``method``: a name of ``run/methods.py`` (``None``: ``rrl`` for a new run, the stored one on resume).
    ``teacher``: shortcut for ``rrl["teacher"]``. ``rrl``: :class:`RRLSettings` overrides (teacher,
    slice size, stage lengths...; ``None`` values ignored). ``prepare_run(run, config)``: called once a
    new run folder holds its configuration and atlas, before any stage (the benchmark copies the
    stages a new run shares with a finished one here: :mod:`RRLMedSAMLib.bench.stage_sharing`).
    ``volume_calibration``: end with the volume calibration stage (``training/calibration_stage.py``)."""


def _inputs_config(request: TrainRequest) -> dict:
    return {
        "atlas_image": path_fingerprint(request.atlas_image),
        "atlas_label": path_fingerprint(request.atlas_label),
        "images": [path_fingerprint(p) for p in request.images],
    }


def _start_or_resume(request: TrainRequest, run: RunFolder) -> dict | None:
    """Check the run folder against the request; return the stored config when resuming.

    A plain ``train`` into a run whose state is ``failed`` starts afresh (see :func:`clear_run_layout`).
    """
    state = stored_run_state(run)
    finished = state == FINISHED and run.model.exists()
    if request.resume:
        if not run.config.exists():
            raise InputError(f"Nothing to resume in {run.root}: it holds no training (no config.json). Drop --resume.")
        if finished:
            raise InputError(f"The training in {run.root} has finished; there is nothing to resume. "
                             "Use it with 'rrlmedsam segment', or train into another --out folder.")
        config = read_config(run)
        if config["inputs"] != _inputs_config(request):
            raise InputError(f"--resume with different inputs than the training in {run.root}; pass the same atlas and images.")
        stored = config["method"]
        if request.method is not None and request.method != stored:
            raise InputError(f"--resume with --method {request.method}, but the training in {run.root} uses {stored}.")
        return config
    if run.config.exists() and state != FAILED:
        if finished:
            raise InputError(f"{run.root} already holds a finished training; choose another --out folder "
                             "(--resume only continues unfinished trainings).")
        raise InputError(f"{run.root} already holds a training; pass --resume to continue it or choose an empty --out folder.")
    if state is None:  # a folder the engine never ran in: refuse to overwrite a user's file (a cache/ put there is reused)
        taken = [name for name in RUN_FILES if not name.startswith("cache/") and (run.root / name).exists()]
        if taken:
            raise InputError(f"{run.root} holds files a training would overwrite ({', '.join(taken[:3])}); choose an "
                             "empty --out folder.")
    return None


def train(request: TrainRequest, progress: ProgressReporter | None = None) -> RunFolder:
    """Run (or resume) a training; returns the run folder.

    Launched by ``torchrun`` with more than one process, this process is one rank of a
    data-parallel job (:mod:`RRLMedSAMLib.training.data_parallel`, :mod:`RRLMedSAMLib.training.rank_follower`): rank 0 does what a single
    process does, the others train alongside it. torchrun's elastic restart of the job resumes.
    """
    launch = launch_from_env()
    if launch is not None and not current().active:
        with process_group(resolve_device(request.device), launch):
            return train(request, progress)
    group = current()
    if not group.is_main:
        return follow_training(Path(request.out), group, TRAINERS)
    if not request.resume and group.restarted_in(Path(request.out)):
        request = replace(request, resume=True)
    try:
        return _train_in_lock(request, progress)
    except BaseException as error:
        group.abandon_setup(error)
        raise


def _train_in_lock(request: TrainRequest, progress: ProgressReporter | None) -> RunFolder:
    """Run (or resume) a training under the run folder's lock; returns the run folder.

    Inputs are validated before anything is written: a refused request leaves no file behind.
    Once the run folder is set up, ``run_state.json`` follows the run (running, interrupted,
    failed, finished).
    """
    run = RunFolder(Path(request.out))
    check_scan_paths(request.images)
    if request.resume and not run.root.is_dir():
        raise InputError(f"Nothing to resume: {run.root} does not exist.")
    with claimed_folder(run.root, "train", "Run folder") as claim:
        stored = _start_or_resume(request, run)
        prepared = _validated_request(request, run, stored)
        claim.keep = True
        if stored is None and stored_run_state(run) is not None:
            clear_run_layout(run)  # a failed run, or one stopped before its configuration was written
        write_run_state(run.root, RUNNING, "training resumed" if stored is not None else "training started")
        try:
            _train_locked(request, run, stored, prepared, progress)
        except (KeyboardInterrupt, CancelledError):
            write_run_state(run.root, INTERRUPTED, f"training interrupted; continue it with 'rrlmedsam train --resume "
                                                   f"--out {run.root}' and the same inputs")
            raise
        except BaseException as error:
            write_run_state(run.root, FAILED, f"{type(error).__name__}: {error}" if not isinstance(error, InputError)
                            else str(error))
            raise
        write_run_state(run.root, FINISHED, f"model written to {run.model}")
    return run


@dataclass
class _Validated:
    """What :func:`_validated_request` read and resolved before the run folder is touched."""

    atlas: Atlas
    scans: list[sitk.Image]
    names: list[str]
    method: Method | None = None
    preset: Preset | None = None
    settings: RRLSettings | None = None
    teacher: dict | None = None
    device: torch.device | None = None
    label_table: list[LabelEntry] | None = None


def _validated_request(request: TrainRequest, run: RunFolder, stored: dict | None) -> _Validated:
    """Read and check every input and setting (raises :class:`InputError`); writes nothing."""
    atlas = read_atlas(request.atlas_image, request.atlas_label)
    scans = [read_scan(p, "Image") for p in request.images]
    checked = _Validated(atlas, scans, [volume_stem(p) for p in request.images])
    if stored is None:
        checked.method = get_method(request.method or DEFAULT_METHOD)
        checked.preset = get_preset(request.preset, **request.overrides)
        checked.settings = get_rrl_settings(checked.preset.name, **_absolute_paths(
            request.rrl | {"teacher": request.rrl.get("teacher") or request.teacher}))
        checked.teacher = resolve_teacher(checked.settings, checked.method)
        if checked.method.needs_teacher and checked.teacher["name"] == "none":
            raise InputError(
                f"--method {checked.method.name} needs the SAM encoder, but {checked.teacher['reason']}. Pass --teacher "
                "vit_b with the weights in the weights folder (or --sam-checkpoint FILE), or --teacher random-vit_b for a benchmark."
            )
        checked.label_table = build_label_table(atlas.label, request.atlas_label, request.labels_table)
        grid = make_working_grid(atlas.label, checked.preset.grid_size, divisor=checked.preset.grid_divisor)
    else:
        grid = run_working_grid(stored)
    for path, image, what in [(request.atlas_image, atlas.image, "Atlas image"),
                              *[(p, scan, "Image") for p, scan in zip(request.images, scans)]]:
        check_registrable(image, path, what, grid.spacing_mm)
    checked.device = resolve_device(request.device)
    return checked


def _train_locked(request: TrainRequest, run: RunFolder, stored: dict | None, checked: _Validated,
                  progress: ProgressReporter | None) -> None:
    """Set the run folder up (new runs), prepare the data and run the method's stages, then finalise."""
    atlas, scans, names, device = checked.atlas, checked.scans, checked.names, checked.device
    progress = progress or ProgressReporter(run.progress)
    if stored is None:
        method, preset, settings, teacher = checked.method, checked.preset, checked.settings, checked.teacher
        config = {
            "format_version": MODEL_FORMAT_VERSION,
            "engine_version": __version__,
            "method": method.name,
            "preset": preset.to_dict(),
            "rrl": settings.to_dict(),
            "teacher": teacher,
            "seed": request.seed,
            "inputs": _inputs_config(request),
            "scan_names": names,
            "label_ids": atlas.label_ids,
            "working_grid": make_working_grid(atlas.label, preset.grid_size, divisor=preset.grid_divisor).to_dict(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_image(atlas.image, run.atlas_image)
        write_image(atlas.label, run.atlas_label)
        write_label_table(checked.label_table, run.labels)
        write_json_atomic(run.config, config)
        if request.prepare_run is not None:
            request.prepare_run(run, config)
    else:
        config = stored
    method, preset, settings, teacher = run_settings(config)
    print(f"Method: {method.name} ({method.summary}). {teacher_log_line(teacher)}", flush=True)
    seed = int(config["seed"])

    if run.prepared.exists():
        data = load_prepared(run.prepared)
        if not run.prealignment.exists():  # prepared data handed over without its record (a copied cache)
            write_json_atomic(run.prealignment, prealignment_record(request.images, data))
    else:
        grid = run_working_grid(config)
        data = prepare_training_data(atlas, scans, names, grid, preset.affine_iterations, seed, progress)
        write_json_atomic(run.prealignment, prealignment_record(request.images, data))
        save_prepared(data, run.prepared)
    group = current()
    group.record_launch(run.root)
    group.announce_setup()
    device = group.place(device)

    context = TrainingContext(run, config, method, preset, settings, data, device, progress, seed, teacher, group)
    networks = TRAINERS[method.family](context)
    save_weights(run.model, networks, {"config_hash": config_hash(config), "method": method.name})
    card = _model_card(config, networks, device, run) | {"model_sha256": sha256_file(run.model)}
    if run.pseudo_labels.is_file():
        card["pseudo_labels"] = fallback_summary(pseudo_label_registrations(run.pseudo_labels), data.scan_names)
    write_json_atomic(run.model_card, card | {
        "volume_calibration": _calibrate_volumes(run, device, progress) if request.volume_calibration
        else {"applied": False, "reason": "not requested (train --volume-calibration off)"}})
    progress.done(f"model written to {run.model} (method {method.name}; teacher {teacher['name']})")


def _absolute_paths(rrl: dict) -> dict:
    """RRL overrides with the weights and distillation paths made absolute (and the latter checked)."""
    values = dict(rrl)
    if values.get("distill_images"):
        collect_distill_paths(values["distill_images"])
        values["distill_images"] = [str(Path(p).expanduser().resolve()) for p in values["distill_images"]]
    for key in ("sam_checkpoint", "weights_dir"):
        if values.get(key):
            values[key] = str(Path(values[key]).expanduser().resolve())
    return values


def train_plain(ctx: TrainingContext) -> dict[str, nn.Module]:
    """The plain pipeline: registration network, pseudo labels, plain segmentation network."""
    preset, device = ctx.preset, ctx.device
    torch.manual_seed(ctx.seed)
    networks = build_networks(preset, ctx.data.num_classes)
    for module in networks.values():
        module.to(device)
    registration = networks["registration"]
    reg_optimizer = torch.optim.Adam(registration.parameters(), lr=preset.learning_rate)
    ctx.stage("registration", preset.registration_steps,
              make_registration_step(registration, reg_optimizer, ctx.data, preset, device),
              {"registration": registration}, {"adam": reg_optimizer})
    pseudo_labels = ctx.pseudo_labels(registration)

    segmentation = networks["segmentation"]
    if not ctx.run.checkpoint("segmentation").exists():
        segmentation.encoder.load_state_dict(registration.encoder.state_dict())
    seg_optimizer = torch.optim.Adam(segmentation.parameters(), lr=preset.learning_rate)
    ctx.stage("segmentation", preset.segmentation_steps,
              make_segmentation_step(segmentation, seg_optimizer, ctx.data, pseudo_labels, device,
                                     patch_size=preset.segmentation_patch, atlas_prior=preset.atlas_prior),
              {"segmentation": segmentation}, {"adam": seg_optimizer})
    return networks


def _calibrate_volumes(run: RunFolder, device: torch.device, progress: ProgressReporter) -> dict:
    """The finished run's volume calibration (:mod:`RRLMedSAMLib.training.calibration_stage`)."""
    return calibrate_run(run.root, device, progress)


TRAINERS = {"plain": train_plain, "rrl": train_rrl, "autosam": train_autosam}


def _model_card(config: dict, networks: dict[str, nn.Module], device: torch.device, run: RunFolder) -> dict:
    method, _, rrl_settings, record = run_settings(config)
    teacher = teacher_summary(record, rrl_settings)
    settings = config["preset"] | {"seed": config["seed"]}
    if "working_grid" in config:
        settings["working_grid"] = config["working_grid"]
    if method.family == "rrl":
        parameters = rrl_parameter_counts(networks)
        settings |= {k: v for k, v in rrl_settings.to_dict().items() if not k.startswith("autosam")}
    else:
        parameters = parameter_counts(networks)
    if method.family == "autosam":
        settings |= {k: v for k, v in rrl_settings.to_dict().items() if k.startswith(("autosam", "slice", "teacher"))}
    if record["name"] != "none":
        parameters["teacher"] = {"name": record["name"], "parameters": teacher_parameter_count(record, rrl_settings)}
    return {
        "engine": "RRLMedSAMLib",
        "engine_version": __version__,
        "format_version": MODEL_FORMAT_VERSION,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": method.name,
        "method_summary": method.summary,
        "configuration_hash": config_hash(config),
        "data": {
            "atlas_image": config["inputs"]["atlas_image"]["path"],
            "atlas_label": config["inputs"]["atlas_label"]["path"],
            "unlabelled_scans": [entry["path"] for entry in config["inputs"]["images"]],
            "label_ids": config["label_ids"],
        },
        "settings": settings,
        "teacher": teacher,
        "parameters": parameters,
        "trained_on": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                       **current().describe()},
        "shared_stages": json.loads(run.shared_stages.read_text()) if run.shared_stages.is_file() else None,
    }
