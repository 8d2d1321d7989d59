"""Claim an output folder: create it if needed, hold its lock, and leave nothing behind on failure.

A command that fails before it has written anything of value removes the lock files it made and
the folders it created (only when empty: nothing it did not write is ever deleted).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.folder_lock import FolderLock


@dataclass
class ClaimedFolder:
    """A locked output folder. Set ``keep`` once the command has written something that must survive a failure."""

    path: Path
    lock: FolderLock
    created: list[Path] = field(default_factory=list)
    keep: bool = False


def _make_folders(path: Path, what: str) -> list[Path]:
    """Create ``path`` and its missing parents; return those created, deepest first."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a folder; choose a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as error:
        _remove_empty(missing)
        raise InputError(f"{what} {path} is not writable ({error.strerror}); choose another folder.") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def claimed_folder(path: str | os.PathLike, command: str, what: str = "Output folder") -> Iterator[ClaimedFolder]:
    """Create and lock ``path`` for ``command``; on an exception undo both unless ``keep`` was set."""
    path = Path(path)
    created = _make_folders(path, what)
    lock = FolderLock(path, command)
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    claim = ClaimedFolder(path, lock, created)
    try:
        yield claim
    except BaseException:
        lock.release(remove=not claim.keep)
        if not claim.keep:
            _remove_empty(created)
        raise
    lock.release()
