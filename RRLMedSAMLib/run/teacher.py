"""The SAM teacher of a run: which weights (``--teacher``), its identity record, and how to build it.

The record stored in ``config.json`` (``"teacher"``) says exactly what the teacher was:

* ``{"name": "none", "reason": ...}`` - no distillation (and why);
* official or custom weights: ``name``, ``model_type``, ``checkpoint`` (file), ``weights_sha256``,
  ``label`` (manifest name or ``custom:<hash>``), ``custom``;
* ``random-vit_b`` / ``tiny``: a randomly initialised encoder (seed 0), ``weights_sha256`` =
  ``"random init"`` - for benchmarks and tests, never SAM's knowledge.

Training's teacher-feature stage is :mod:`RRLMedSAMLib.training.teacher_features`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.encoder3d import count_parameters
from RRLMedSAMLib.models.sam_teacher import TINY_ENCODER_CONFIG, SamTeacher, build_image_encoder
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.rrl_settings import RRLSettings
from RRLMedSAMLib.sam.checkpoints import (
    VerifiedCheckpoint,
    find_entry,
    image_encoder_state_dict,
    infer_model_type,
    load_manifest,
    load_state_dict,
    resolve_checkpoint,
    resolve_weights_dir,
    verify_checkpoint,
)

RANDOM_TEACHERS = {"random-vit_b": "vit_b", "tiny": "tiny"}
RANDOM_LABELS = {
    "random-vit_b": "randomly initialised SAM vit_b encoder (real size, NOT SAM weights; for benchmarks only)",
    "tiny": "tiny randomly initialised SAM-style encoder (NOT SAM weights; for tests only)",
}
_MANIFEST_NAMES = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h", "medsam": "medsam_vit_b"}


def no_teacher(reason: str) -> dict:
    """The record of a run without teacher."""
    return {"name": "none", "reason": reason}


def _explicit_file(settings: RRLSettings) -> VerifiedCheckpoint:
    try:
        return verify_checkpoint(settings.sam_checkpoint, allow_custom=settings.allow_custom_weights)
    except InputError as error:
        if "custom weights" in str(error):
            raise InputError(f"{error} (--allow-custom-weights)") from None
        raise


def _checkpoint_record(name: str, verified: VerifiedCheckpoint) -> dict:
    """The teacher record of a verified file; custom weights get their encoder size from their tensors.

    Reading a custom file here also refuses one that holds no SAM image encoder before any training.
    """
    model_type = verified.model_type or infer_model_type(image_encoder_state_dict(load_state_dict(verified.path)))
    return {
        "name": name,
        "model_type": model_type,
        "checkpoint": str(verified.path.resolve()),
        "weights_sha256": verified.sha256,
        "label": verified.label,
        "custom": verified.is_custom,
    }


def resolve_teacher(settings: RRLSettings, method: Method) -> dict:
    """Find and verify the teacher ``settings`` ask for; returns its record (see the module docstring).

    ``auto`` falls back to no teacher when no verified vit_b checkpoint is in the weights folder;
    an explicitly named checkpoint that is missing or fails verification is an :class:`InputError`.
    """
    name = settings.teacher
    if not method.uses_teacher:
        return no_teacher(f"method {method.name} uses no teacher")
    if name == "none":
        if settings.sam_checkpoint:
            raise InputError("--sam-checkpoint was given together with --teacher none; drop one of them.")
        return no_teacher("--teacher none")
    if name in RANDOM_TEACHERS:
        return {"name": name, "model_type": RANDOM_TEACHERS[name], "checkpoint": None,
                "weights_sha256": "random init", "label": RANDOM_LABELS[name], "custom": False}
    if settings.sam_checkpoint:
        verified = _explicit_file(settings)
        expected = {"vit_b": "vit_b", "vit_l": "vit_l", "vit_h": "vit_h", "medsam": "vit_b"}.get(name)
        if expected and verified.model_type and verified.model_type != expected:
            raise InputError(f"--sam-checkpoint {verified.path} holds SAM {verified.model_type}, but --teacher {name} was asked for.")
        return _checkpoint_record("vit_b" if name == "auto" else name, verified)
    folder = resolve_weights_dir(settings.weights_dir)
    if name == "auto":
        entry = find_entry("sam_vit_b", load_manifest())
        if not (folder / entry.filename).is_file():
            return no_teacher(f"no verified SAM checkpoint found in {folder}")
        try:
            return _checkpoint_record("vit_b", resolve_checkpoint("sam_vit_b", weights_dir=folder))
        except InputError as error:
            return no_teacher(f"no verified SAM checkpoint found in {folder} ({error})")
    if name == "medsam":
        raise InputError(
            "MedSAM's authors publish no sha256, so its weights cannot be verified by name; pass the file with "
            "--sam-checkpoint medsam_vit_b.pth --allow-custom-weights."
        )
    entry = find_entry(_MANIFEST_NAMES[name], load_manifest())
    if not (folder / entry.filename).is_file():
        raise InputError(
            f"--teacher {name}: SAM weights {entry.filename} not found in {folder}. Download them from {entry.url} "
            f"into that folder (or pass --weights-dir DIR, set RRLMEDSAM_WEIGHTS_DIR, or give the file with "
            f"--sam-checkpoint FILE); use --teacher none to train without distillation."
        )
    return _checkpoint_record(name, resolve_checkpoint(entry.name, weights_dir=folder))


def build_teacher(record: Mapping, settings: RRLSettings, device: torch.device) -> SamTeacher | None:
    """The frozen teacher of ``record`` on ``device`` (``None`` for no teacher); re-verifies weights files."""
    name = record["name"]
    kwargs = {"slice_size": settings.slice_size, "axis": settings.slice_axis, "batch_size": settings.teacher_batch}
    if name == "none":
        return None
    if name == "tiny":
        teacher = SamTeacher.tiny(seed=0, **kwargs)
    elif name == "random-vit_b":
        teacher = SamTeacher.random("vit_b", seed=0, **kwargs)
    else:
        verified = verify_checkpoint(record["checkpoint"], allow_custom=bool(record.get("custom")))
        if verified.sha256 != record["weights_sha256"]:
            raise InputError(
                f"The SAM weights file {record['checkpoint']} changed since training (sha256 {verified.sha256}, "
                f"expected {record['weights_sha256']}); put the original file back."
            )
        teacher = SamTeacher.from_checkpoint(verified, **kwargs)
    return teacher.to(device)


def teacher_parameter_count(record: Mapping, settings: RRLSettings) -> int:
    """Parameters of the teacher's image encoder at the run's slice size (built on the meta device: no memory)."""
    config = TINY_ENCODER_CONFIG if record["model_type"] == "tiny" else record["model_type"]
    with torch.device("meta"):
        return count_parameters(build_image_encoder(config, img_size=settings.slice_size))


def teacher_summary(record: Mapping, settings: RRLSettings) -> dict:
    """The model card's ``teacher`` entry: name, parameters, weights sha256 (or "random init"), slice size."""
    if record["name"] == "none":
        return dict(record)
    return {
        "name": record["name"],
        "label": record.get("label"),
        "model_type": record.get("model_type"),
        "parameters": teacher_parameter_count(record, settings),
        "weights_sha256": record["weights_sha256"],
        "slice_size": settings.slice_size,
        "slice_axis": settings.slice_axis,
    }


def teacher_log_line(record: Mapping) -> str:
    """One human line saying which teacher the run uses (or that it trains without one, and why)."""
    if record["name"] == "none":
        return f"Teacher: none ({record['reason']}); training without SAM distillation."
    if record["name"] in RANDOM_TEACHERS:
        return f"Teacher: {record['name']}, a {record['label']}."
    return f"Teacher: {record['label']} ({record['name']}, weights sha256 {record['weights_sha256']})."

