"""SAM checkpoint manifest, weights folder, sha256 verification and safe loading.

Rules (DESIGN.md sections 4-5):

* The manifest (``Resources/models/sam_checkpoints.json``, shipped as package data) lists the known files with their
  published sha256. A file is *verified* when its sha256 equals a manifest entry's.
* Files are looked up by manifest name in the weights folder: explicit setting, else the
  environment variable ``RRLMEDSAM_WEIGHTS_DIR``, else ``~/.cache/rrlmedsam/weights``.
* A file given by path whose hash matches no entry is refused with :class:`InputError` unless the
  caller passes ``allow_custom=True`` (the user's explicit "these are my own weights").
  Entries whose sha256 is ``null`` (no published checksum, e.g. MedSAM) are reachable only so.
* Loading never unpickles arbitrary objects: ``torch.load(..., weights_only=True)`` for ``.pth``
  files, :mod:`safetensors` for ``.safetensors``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..io.atomic import atomic_path
from ..io.file_hash import CHUNK_BYTES, sha256_file
from ..resources import manifest_path

#: Environment variable naming the weights folder.
WEIGHTS_DIR_ENV = "RRLMEDSAM_WEIGHTS_DIR"
#: Weights folder used when neither a setting nor the environment variable is given.
DEFAULT_WEIGHTS_DIR = Path("~/.cache/rrlmedsam/weights")

_ENCODER_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


@dataclass(frozen=True)
class CheckpointEntry:
    """One manifest entry.

    Attributes:
        name: manifest name (``sam_vit_b``...).
        model_type: encoder hyper-parameter set: ``vit_b``, ``vit_l`` or ``vit_h``.
        filename: file name in the weights folder.
        url: where the user downloads it.
        sha256: published lowercase hex digest, or ``None`` when none is published.
        size_bytes: expected file size in bytes, or ``None`` when unknown.
    """

    name: str
    model_type: str
    filename: str
    url: str
    sha256: str | None
    size_bytes: int | None


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint file whose bytes were hashed.

    Attributes:
        path: the file.
        sha256: its sha256 (lowercase hex).
        entry: the matching manifest entry, or ``None`` for accepted custom weights.
        model_type: ``vit_b``/``vit_l``/``vit_h`` from the entry; ``None`` for custom weights
            (then inferred from the tensors by :func:`infer_model_type`).
    """

    path: Path
    sha256: str
    entry: CheckpointEntry | None
    model_type: str | None

    @property
    def is_custom(self) -> bool:
        return self.entry is None

    @property
    def label(self) -> str:
        """Short human-readable identity for logs and model cards."""
        return self.entry.name if self.entry else f"custom:{self.sha256[:12]}"


def load_manifest(path: str | os.PathLike | None = None) -> tuple[CheckpointEntry, ...]:
    """Read a checkpoint manifest (default: the shipped one)."""
    path = Path(path) if path is not None else manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = tuple(
            CheckpointEntry(
                name=str(item["name"]),
                model_type=str(item["model_type"]),
                filename=str(item["filename"]),
                url=str(item["url"]),
                sha256=str(item["sha256"]).lower() if item.get("sha256") else None,
                size_bytes=int(item["size_bytes"]) if item.get("size_bytes") is not None else None,
            )
            for item in data["checkpoints"]
        )
    except FileNotFoundError as error:
        raise InputError(
            f"SAM checkpoint manifest not found at {path}; reinstall the extension or pass the manifest path."
        ) from error
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"SAM checkpoint manifest {path} is unreadable or malformed: {error}") from error
    for entry in entries:
        if entry.model_type not in _ENCODER_WIDTHS.values():
            raise InputError(f"manifest entry {entry.name!r} has unknown model_type {entry.model_type!r}")
    return entries


def resolve_weights_dir(setting: str | os.PathLike | None = None) -> Path:
    """Weights folder: ``setting`` if given, else ``$RRLMEDSAM_WEIGHTS_DIR``, else the default."""
    if setting:
        return Path(setting).expanduser()
    from_env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if from_env:
        return Path(from_env).expanduser()
    return DEFAULT_WEIGHTS_DIR.expanduser()


def find_entry(name: str, manifest: Sequence[CheckpointEntry]) -> CheckpointEntry:
    """Manifest entry by name, by filename, or by model type (first entry of that type)."""
    for entry in manifest:
        if name in (entry.name, entry.filename):
            return entry
    for entry in manifest:
        if name == entry.model_type:
            return entry
    known = ", ".join(entry.name for entry in manifest)
    raise InputError(f"unknown SAM checkpoint {name!r}; known checkpoints: {known}")


def verify_checkpoint(
    path: str | os.PathLike,
    *,
    manifest: Sequence[CheckpointEntry] | None = None,
    allow_custom: bool = False,
) -> VerifiedCheckpoint:
    """Hash an explicitly given file and match it against the manifest.

    Raises:
        InputError: the file is missing/unreadable, or its hash matches no entry with a published
            sha256 and ``allow_custom`` is false.
    """
    manifest = load_manifest() if manifest is None else manifest
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"SAM weights file not found: {path}")
    try:
        digest = sha256_file(path)
    except OSError as error:
        raise InputError(f"cannot read SAM weights file {path}: {error}") from error
    for entry in manifest:
        if entry.sha256 is not None and entry.sha256 == digest:
            return VerifiedCheckpoint(path=path, sha256=digest, entry=entry, model_type=entry.model_type)
    if allow_custom:
        return VerifiedCheckpoint(path=path, sha256=digest, entry=None, model_type=None)
    raise InputError(
        f"the sha256 of {path} ({digest}) matches no known SAM checkpoint; the file is corrupt, "
        "tampered with or not an official release. Re-download it, or, if these are your own "
        "weights (e.g. MedSAM), pass them explicitly as custom weights."
    )


def resolve_checkpoint(
    name: str = "sam_vit_b",
    *,
    path: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike | None = None,
    manifest: Sequence[CheckpointEntry] | None = None,
    allow_custom: bool = False,
) -> VerifiedCheckpoint:
    """Find and verify the teacher's weights.

    Args:
        name: manifest name, filename or model type, used when ``path`` is not given.
        path: explicit file; takes precedence over ``name`` (see :func:`verify_checkpoint`).
        weights_dir: folder setting (see :func:`resolve_weights_dir`).
        manifest: entries to trust (default: the shipped manifest).
        allow_custom: accept an explicit file whose hash matches no entry.
    """
    manifest = load_manifest() if manifest is None else manifest
    if path is not None:
        return verify_checkpoint(path, manifest=manifest, allow_custom=allow_custom)
    entry = find_entry(name, manifest)
    if entry.sha256 is None:
        raise InputError(
            f"{entry.name} has no published sha256, so it cannot be verified by name; pass the file "
            f"({entry.filename}) explicitly as custom weights."
        )
    folder = resolve_weights_dir(weights_dir)
    candidate = folder / entry.filename
    if not candidate.is_file():
        raise InputError(
            f"SAM weights {entry.filename} not found in {folder}. Download them from {entry.url} into that "
            f"folder (or set {WEIGHTS_DIR_ENV}), or import the file with the weights manager."
        )
    if entry.size_bytes is not None and candidate.stat().st_size != entry.size_bytes:
        raise InputError(
            f"{candidate} has {candidate.stat().st_size} bytes, expected {entry.size_bytes}: the download is "
            f"incomplete or the file is not {entry.name}. Delete it and download it again from {entry.url}."
        )
    digest = sha256_file(candidate)
    if digest != entry.sha256:
        raise InputError(
            f"sha256 of {candidate} is {digest}, expected {entry.sha256} for {entry.name}: the file is corrupt "
            f"or tampered with. Delete it and download it again from {entry.url}."
        )
    return VerifiedCheckpoint(path=candidate, sha256=digest, entry=entry, model_type=entry.model_type)


def import_checkpoint(
    source: str | os.PathLike,
    *,
    weights_dir: str | os.PathLike | None = None,
    manifest: Sequence[CheckpointEntry] | None = None,
) -> VerifiedCheckpoint:
    """Copy a verified official file into the weights folder ("import weights from file").

    The copy is atomic (temporary name, then rename); the source must match a manifest entry.
    """
    verified = verify_checkpoint(source, manifest=manifest, allow_custom=False)
    assert verified.entry is not None
    target = resolve_weights_dir(weights_dir) / verified.entry.filename
    if target.resolve() != verified.path.resolve():
        try:
            with atomic_path(target) as temp, open(verified.path, "rb") as src, open(temp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_BYTES)
        except OSError as error:
            raise InputError(f"cannot copy SAM weights into {target.parent}: {error}") from error
    return VerifiedCheckpoint(path=target, sha256=verified.sha256, entry=verified.entry, model_type=verified.model_type)


def _tensor_mapping(obj: object) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return dict(obj)
    return None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a tensor state dict without executing pickled code.

    ``.safetensors`` files go through :mod:`safetensors`; anything else through
    ``torch.load(map_location="cpu", weights_only=True)``. A top-level ``{"model": ...}`` or
    ``{"state_dict": ...}`` wrapper is unwrapped. Tensors are returned on the CPU.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse is the user's file problem
        raise InputError(
            f"{path} is not a loadable tensor checkpoint (only plain tensor state dicts are accepted): {error}"
        ) from error
    state = _tensor_mapping(loaded)
    if state is None and isinstance(loaded, Mapping):
        for key in ("model", "state_dict"):
            state = _tensor_mapping(loaded.get(key))
            if state is not None:
                break
    if state is None:
        raise InputError(f"{path} does not hold a state dict of tensors")
    return state


def submodule_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` (e.g. ``"image_encoder."``) with the prefix removed."""
    if not prefix.endswith("."):
        prefix += "."
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def image_encoder_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image encoder's weights from a whole-SAM checkpoint, or from an encoder-only one."""
    encoder = submodule_state_dict(state, "image_encoder.")
    if encoder:
        return encoder
    if "patch_embed.proj.weight" in state:
        return dict(state)
    raise InputError("the checkpoint holds no SAM image encoder (no 'image_encoder.*' keys)")


def infer_model_type(encoder_state: Mapping[str, torch.Tensor]) -> str:
    """``vit_b``/``vit_l``/``vit_h`` from the patch embedding width of an image-encoder state dict."""
    weight = encoder_state.get("patch_embed.proj.weight")
    if weight is None or weight.shape[0] not in _ENCODER_WIDTHS:
        raise InputError("cannot tell the SAM encoder size from the checkpoint (patch_embed.proj.weight missing or unusual)")
    return _ENCODER_WIDTHS[int(weight.shape[0])]
