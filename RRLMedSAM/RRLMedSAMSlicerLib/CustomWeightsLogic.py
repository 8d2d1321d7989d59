"""Custom SAM checkpoints (MedSAM or one's own), Qt-free and torch-free.

A checkpoint whose sha256 is in the manifest is imported as a verified file (:mod:`WeightsLogic`).
Any other file can still be used after the user accepted that its checksum cannot be verified:
it is checked to hold a SAM image encoder in the official key layout (read from the file's index
without unpickling anything), copied into ``<weights folder>/custom/``, remembered in a setting and
given to ``train`` as ``--sam-checkpoint PATH --allow-custom-weights``.
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import shutil
import struct
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from RRLMedSAMSlicerLib.WeightsLogic import CheckpointEntry, WeightsError, check_outside, sha256_of

CUSTOM_CHECKPOINT_SETTING = "RRLMedSAM/CustomCheckpoint"
CUSTOM_FOLDER = "custom"
ENCODER_PREFIX = "image_encoder."
#: Transformer blocks of SAM's image encoder per model type.
MODEL_TYPES_BY_DEPTH = {12: "vit_b", 24: "vit_l", 32: "vit_h"}
_BLOCK_KEY = re.compile(r"^(?:module\.)?image_encoder\.blocks\.(\d+)\.")
_STRING_OPS = {"BINUNICODE", "SHORT_BINUNICODE", "UNICODE", "BINUNICODE8"}


@dataclass(frozen=True)
class CheckpointInspection:
    """What the file is: its checksum, the manifest entry it matches (if any), the SAM model type."""

    path: Path
    sha256: str
    size_bytes: int
    model_type: str
    manifest_entry: CheckpointEntry | None

    @property
    def verified(self) -> bool:
        return self.manifest_entry is not None


def checkpoint_keys(path: str | os.PathLike) -> set[str]:
    """Parameter names stored in a ``torch.save`` file (zip or legacy) or a ``.safetensors`` file.

    Only the pickle's opcodes are read (:mod:`pickletools`), nothing is executed or imported.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                return {key for key in json.loads(handle.read(length)) if key != "__metadata__"}
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"), None)
                if member is None:
                    raise WeightsError(f"{path.name} is a zip file without a PyTorch state dict.")
                return _pickle_strings(archive.read(member))
        with open(path, "rb") as handle:  # legacy torch.save: magic, protocol, system info, then the state dict
            strings: set[str] = set()
            for _ in range(4):
                strings |= _pickle_strings_from(handle)
            return strings
    except WeightsError:
        raise
    except (OSError, ValueError, struct.error, zipfile.BadZipFile) as error:
        raise WeightsError(f"Cannot read {path.name} as a SAM checkpoint: {error}.") from None


def _pickle_strings(data: bytes) -> set[str]:
    import io

    return _pickle_strings_from(io.BytesIO(data))


def _pickle_strings_from(handle) -> set[str]:
    return {str(arg) for op, arg, _ in pickletools.genops(handle) if op.name in _STRING_OPS}


def sam_model_type(keys: Iterable[str]) -> str:
    """``vit_b`` / ``vit_l`` / ``vit_h`` from the image encoder's block count; refuses other layouts."""
    keys = set(keys)
    if not any(key.startswith((ENCODER_PREFIX + "patch_embed.", "module." + ENCODER_PREFIX + "patch_embed.")) for key in keys):
        raise WeightsError(
            "This file holds no SAM image encoder in the official key layout (image_encoder.patch_embed..., "
            "image_encoder.blocks.N...); choose a Segment Anything or MedSAM checkpoint."
        )
    depth = len({int(match.group(1)) for key in keys if (match := _BLOCK_KEY.match(key))})
    if depth not in MODEL_TYPES_BY_DEPTH:
        raise WeightsError(f"The SAM image encoder in this file has {depth} blocks; only vit_b (12), vit_l (24) and vit_h (32) are known.")
    return MODEL_TYPES_BY_DEPTH[depth]


def inspect_checkpoint(
    path: str | os.PathLike, entries: list[CheckpointEntry], progress: Callable[[float], bool] | None = None
) -> CheckpointInspection:
    """Checksum, manifest match and SAM model type of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} is not a file; choose a .pth checkpoint.")
    model_type = sam_model_type(checkpoint_keys(path))
    checksum = sha256_of(path, progress)
    match = next((entry for entry in entries if entry.sha256 and entry.sha256 == checksum), None)
    return CheckpointInspection(path, checksum, path.stat().st_size, model_type, match)


def custom_weights_warning(inspection: CheckpointInspection) -> str:
    """The text of the confirmation dialog shown before an unverifiable file is used."""
    return (
        f"The checksum of {inspection.path.name} (sha256 {inspection.sha256[:16]}…, {inspection.size_bytes / 1e6:.0f} MB) "
        "is not one of the official Segment Anything checkpoints, so it cannot be verified: RRL-MedSAM cannot tell whether "
        f"the file is complete, unmodified or from the source you expect. It holds a SAM {inspection.model_type} image "
        "encoder (e.g. MedSAM).\n\nUse it as the SAM teacher of the next trainings? Only use weights from a source you trust."
    )


def import_inspected(inspection: CheckpointInspection, weights_dir: Path, protected: Iterable[Path] = ()) -> Path:
    """Copy the file into the weights folder (atomically); returns the copy.

    A verified file goes in under its manifest name (the engine finds it by name); an accepted
    custom file goes into ``<weights_dir>/custom/`` and is passed to ``train`` by path.
    """
    folder = check_outside(weights_dir, protected)
    if not inspection.verified:
        folder = folder / CUSTOM_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (inspection.manifest_entry.filename if inspection.verified else inspection.path.name)
    if target.exists() and target.resolve() == inspection.path.resolve():
        return target
    partial = folder / f".{inspection.path.name}.{uuid.uuid4().hex}.part"
    try:
        shutil.copyfile(inspection.path, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def custom_checkpoint_from_setting(value: str | None) -> Path | None:
    """The remembered custom checkpoint, or ``None`` when unset or the file is gone."""
    path = Path(value).expanduser() if (value or "").strip() else None
    return path if path is not None and path.is_file() else None


def custom_checkpoint_label(path: Path | None) -> str:
    """What the panel says about the SAM teacher weights of the next training."""
    if path is None:
        return "official SAM vit_b from the weights folder when present (verified by checksum)"
    return f"custom: {path.name} (checksum not verifiable)"
