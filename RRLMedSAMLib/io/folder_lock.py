"""Exclusive locks on the folders the engine writes (a run folder, a segment output folder).

The lock is an OS file lock (``filelock``) on ``<folder>/.rrlmedsam.lock``: the operating system
releases it when its process dies, so a lock left by a crashed or killed process never blocks.
Beside it, ``.rrlmedsam.lock.owner`` (JSON: pid, host, command, since) names the holder, so that a
refused second process can say who holds the folder. Torch-free: the Slicer module reads it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic

LOCK_NAME = ".rrlmedsam.lock"
OWNER_NAME = ".rrlmedsam.lock.owner"

#: How long a process waits for a lock: long enough to ride out a reader's probe, short enough to refuse at once.
ACQUIRE_TIMEOUT_S = 1.0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_owner(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The recorded holder of ``folder``'s lock (``None``: no record or unreadable)."""
    try:
        owner = json.loads((Path(folder) / OWNER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _pid_alive(pid: object) -> bool:
    import psutil

    return isinstance(pid, int) and pid > 0 and psutil.pid_exists(pid)


def lock_holder(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner record when a live process holds ``folder``'s lock, else ``None``.

    Cheap: a dead or foreign-host PID answers at once; only a live one is confirmed by a
    non-blocking probe of the lock itself.
    """
    folder = Path(folder)
    owner = read_owner(folder)
    if owner is None or not (folder / LOCK_NAME).exists():
        return None
    if owner.get("host") == socket.gethostname() and not _pid_alive(owner.get("pid")):
        return None
    probe = filelock.FileLock(str(folder / LOCK_NAME), timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return owner
    probe.release()
    return None


class FolderLock:
    """Hold the exclusive lock of ``folder`` (which must exist) while a command writes into it.

    ``acquire`` raises :class:`InputError` naming the holder's PID when another process has it.
    ``release(remove=True)`` also deletes the lock files (for a command that leaves nothing behind).
    """

    def __init__(self, folder: str | os.PathLike, command: str) -> None:
        self.folder = Path(folder)
        self.command = command
        self._lock = filelock.FileLock(str(self.folder / LOCK_NAME), timeout=ACQUIRE_TIMEOUT_S)
        self.created_files: list[Path] = []

    def acquire(self) -> "FolderLock":
        lock_path, owner_path = self.folder / LOCK_NAME, self.folder / OWNER_NAME
        new = [p for p in (lock_path, owner_path) if not p.exists()]
        try:
            self._lock.acquire()
        except filelock.Timeout:
            owner = read_owner(self.folder) or {}
            who = f"process {owner.get('pid', '?')}" + (f" on {owner['host']}" if owner.get("host") else "")
            what = f" ('{owner['command']}' since {owner.get('since', '?')})" if owner.get("command") else ""
            raise InputError(f"{self.folder} is in use by {who}{what}; wait for it to finish or stop it, "
                             "or choose another folder.") from None
        except OSError as error:
            raise InputError(f"Cannot lock {self.folder} ({error.strerror}); choose a writable folder.") from None
        write_json_atomic(owner_path, {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                       "since": _now()})
        self.created_files = new
        return self

    def release(self, remove: bool = False) -> None:
        """Give the lock up; with ``remove``, delete the lock files this process created."""
        owner_path = self.folder / OWNER_NAME
        owner = read_owner(self.folder)
        if owner is not None and owner.get("pid") == os.getpid():
            owner_path.unlink(missing_ok=True)
        if remove:
            for path in self.created_files:
                path.unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
