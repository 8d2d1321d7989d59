"""SAM checkpoint manager (Qt-free): cache folder, manifest, import from file with a sha256 check.

The cache folder is, in order: the module setting, the ``RRLMEDSAM_WEIGHTS_DIR`` environment
variable, ``~/.cache/rrlmedsam/weights``. Nothing is ever written into the extension's install
folder; the engine finds the files through ``RRLMEDSAM_WEIGHTS_DIR``, which the module sets for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_ENV_VAR = "RRLMEDSAM_WEIGHTS_DIR"
WEIGHTS_SETTING = "RRLMedSAM/WeightsDirectory"
DEFAULT_WEIGHTS_DIR = Path("~/.cache/rrlmedsam/weights")


class WeightsError(Exception):
    """A checkpoint or cache-folder problem; the message says what to do."""


@dataclass(frozen=True)
class CheckpointEntry:
    """One known checkpoint of the manifest."""

    name: str
    filename: str
    sha256: str | None
    url: str = ""
    size_bytes: int | None = None
    model_type: str = ""


def load_manifest(path: str | os.PathLike) -> list[CheckpointEntry]:
    """Entries of ``sam_checkpoints.json`` (a ``checkpoints`` list, or a bare list)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"Cannot read the checkpoint manifest {path}: {error}. Reinstall the extension.") from None
    items = data.get("checkpoints", []) if isinstance(data, dict) else data
    entries = []
    for item in items:
        try:
            entries.append(
                CheckpointEntry(
                    name=str(item["name"]), filename=str(item["filename"]),
                    sha256=str(item["sha256"]).lower() if item.get("sha256") else None,
                    url=str(item.get("url") or ""), size_bytes=item.get("size_bytes"),
                    model_type=str(item.get("model_type") or ""),
                )
            )
        except (KeyError, TypeError):
            raise WeightsError(f"Checkpoint manifest {path} has an entry without name/filename: {item!r}.") from None
    return entries


def resolve_weights_dir(setting: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The cache folder: ``setting``, else ``$RRLMEDSAM_WEIGHTS_DIR``, else the default."""
    environ = os.environ if environ is None else environ
    chosen = (setting or "").strip() or environ.get(WEIGHTS_ENV_VAR, "").strip()
    return Path(chosen).expanduser() if chosen else DEFAULT_WEIGHTS_DIR.expanduser()


def check_outside(folder: Path, protected: Iterable[Path]) -> Path:
    """Return ``folder`` resolved, refusing one inside a protected (install) folder."""
    resolved = Path(folder).expanduser().resolve()
    for root in protected:
        root = Path(root).resolve()
        if resolved == root or root in resolved.parents:
            raise WeightsError(
                f"The weights folder {resolved} is inside the extension's install folder {root}, which is replaced on "
                "every update; choose a folder in your home directory instead."
            )
    return resolved


def sha256_of(path: str | os.PathLike, progress: Callable[[float], bool] | None = None, chunk: int = 8 << 20) -> str:
    """sha256 of a file; ``progress(fraction)`` is called per chunk and may return False to stop."""
    path = Path(path)
    total = max(path.stat().st_size, 1)
    digest, done = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
            done += len(block)
            if progress is not None and progress(done / total) is False:
                raise WeightsError("Checksum verification was cancelled; nothing was imported.")
    return digest.hexdigest()


def import_checkpoint(
    source: str | os.PathLike,
    entries: list[CheckpointEntry],
    weights_dir: Path,
    protected: Iterable[Path] = (),
    progress: Callable[[float], bool] | None = None,
) -> tuple[CheckpointEntry, Path]:
    """Copy ``source`` into the cache under its manifest name when its sha256 matches an entry."""
    source = Path(source)
    if not source.is_file():
        raise WeightsError(f"{source} is not a file; choose the downloaded .pth checkpoint.")
    weights_dir = check_outside(weights_dir, protected)
    checksum = sha256_of(source, progress)
    match = next((entry for entry in entries if entry.sha256 and entry.sha256 == checksum), None)
    if match is None:
        known = ", ".join(f"{e.name} ({e.filename})" for e in entries if e.sha256)
        raise WeightsError(
            f"{source.name} (sha256 {checksum[:12]}…) is not a known checkpoint; it is corrupt or a different file. "
            f"Download one of: {known}."
        )
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / match.filename
    if target.resolve() != source.resolve():
        partial = weights_dir / f".{match.filename}.{uuid.uuid4().hex}.part"
        try:
            shutil.copyfile(source, partial)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return match, target


def checkpoint_status(entries: list[CheckpointEntry], weights_dir: Path) -> dict[str, str]:
    """``present``, ``missing`` or ``wrong size`` for every entry (size only: hashing is on import)."""
    status = {}
    for entry in entries:
        path = Path(weights_dir) / entry.filename
        if not path.is_file():
            status[entry.name] = "missing"
        elif entry.size_bytes and path.stat().st_size != int(entry.size_bytes):
            status[entry.name] = "wrong size"
        else:
            status[entry.name] = "present"
    return status
