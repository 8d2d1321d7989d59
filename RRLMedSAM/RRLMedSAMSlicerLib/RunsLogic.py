"""Run folders (Qt-free, no engine import): one folder per training under the runs root.

Layout of one run (the folder name is readable: atlas, date and time, short id)::

    <runs root>/<atlas>-20261206-213015-a1b2c3/
        slicer_run.json          written by the module: atlas name, creation time, the train arguments
        model/                   the engine's run folder (train --out, segment --model)
        model/run_state.json     the engine's state: running / interrupted / failed / finished
        inputs/                  atlas and scans exported for training (kept until training finished)
        results/<job>/           scans exported for segmentation and the engine's outputs (temporary)
        labels_terminology.json  terminology of the atlas segments

The state is read from the files alone, so a run interrupted before a Slicer restart is found and
resumed from what is on disk. ``run_state.json`` is the engine's contract file: it is read directly
(the engine is never imported into Slicer's process), and a ``running`` state whose process is gone
means the run was killed: it is shown as interrupted and can be resumed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

RUNS_ROOT_SETTING = "RRLMedSAM/RunsRoot"
DEFAULT_RUNS_ROOT = Path("~/RRLMedSAM/runs")
RUN_MANIFEST = "slicer_run.json"
ENGINE_FOLDER = "model"
RUN_STATE_FILE = "run_state.json"
MANIFEST_FORMAT = 1


class RunError(Exception):
    """A run cannot be used, resumed or deleted; the message says why."""


class RunStatus(Enum):
    """What the panel shows for a run (values are the words of the runs list)."""

    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    IN_USE = "in use"
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class RunInfo:
    """One run folder as found on disk."""

    folder: Path
    status: RunStatus
    message: str = ""
    atlas_name: str = ""
    created: str = ""
    updated: str = ""
    pid: int | None = None
    host: str = ""
    train_args: tuple[str, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def model_dir(self) -> Path:
        return self.folder / ENGINE_FOLDER

    @property
    def resumable(self) -> bool:
        return self.status == RunStatus.INTERRUPTED

    @property
    def usable(self) -> bool:
        """A finished run: ``segment --model`` can use it."""
        return self.status == RunStatus.FINISHED


def resolve_runs_root(setting: str | None = None) -> Path:
    """The runs root: the setting when given, else ``~/RRLMedSAM/runs``."""
    chosen = (setting or "").strip()
    return Path(chosen).expanduser() if chosen else DEFAULT_RUNS_ROOT.expanduser()


def run_folder_name(atlas_name: str, now: datetime.datetime, token: str) -> str:
    """``<atlas>-YYYYmmdd-HHMMSS-<token>``; the atlas part keeps letters, digits, ``-`` and ``_``."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", atlas_name).strip("_-")[:40].strip("_-") or "atlas"
    return f"{readable}-{now.strftime('%Y%m%d-%H%M%S')}-{token}"


def create_run(root: Path, atlas_name: str, now: datetime.datetime | None = None, token: str | None = None) -> Path:
    """Create a new, empty run folder under ``root`` with its ``slicer_run.json``."""
    root = Path(root).expanduser()
    now = now or datetime.datetime.now()
    root.mkdir(parents=True, exist_ok=True)
    for _attempt in range(20):
        folder = root / run_folder_name(atlas_name, now, token or uuid.uuid4().hex[:6])
        try:
            folder.mkdir()
        except FileExistsError:
            token = None  # a clash (same second, same id): draw another id
            continue
        write_manifest(folder, {"format": MANIFEST_FORMAT, "atlas": atlas_name,
                                "created": now.astimezone().isoformat(timespec="seconds"), "train_args": []})
        return folder
    raise RunError(f"Could not create a new run folder in {root}.")


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``slicer_run.json`` atomically."""
    target = Path(folder) / RUN_MANIFEST
    partial = target.with_name(f".{RUN_MANIFEST}.{uuid.uuid4().hex}.part")
    partial.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(partial, target)


def read_manifest(folder: Path) -> dict:
    """``slicer_run.json`` of a run, or ``{}`` when it is missing or unreadable."""
    return _read_json(Path(folder) / RUN_MANIFEST)


def record_train_args(folder: Path, command: Sequence[str]) -> None:
    """Store the ``train`` arguments of ``command`` (from ``train`` on), so the run resumes from disk alone."""
    command = [str(arg) for arg in command]
    if "train" not in command:
        raise ValueError("not a train command")
    manifest = read_manifest(folder) or {"format": MANIFEST_FORMAT}
    manifest["train_args"] = [arg for arg in command[command.index("train"):] if arg != "--resume"]
    write_manifest(folder, manifest)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def process_alive(pid: int, started_before: datetime.datetime | None = None) -> bool:
    """Whether ``pid`` is a live process (on this host) that was started before ``started_before``.

    The start-time check tells a recycled process id from the engine that wrote the state.
    """
    try:
        import psutil
    except ImportError:  # without psutil: signal 0 tells whether the id exists (POSIX)
        try:
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False
    if started_before is not None and created > started_before.timestamp() + 2.0:
        return False
    return True


def _parse_time(text: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def read_run(folder: Path, host: str | None = None, alive: Callable[..., bool] = process_alive) -> RunInfo | None:
    """The run in ``folder`` with its status, or ``None`` when the folder is not a run folder."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    model = folder / ENGINE_FOLDER
    state = _read_json(model / RUN_STATE_FILE)
    if not manifest and not state:
        return None
    host = host or socket.gethostname()
    finished_files = (model / "model.safetensors").is_file() and (model / "model_card.json").is_file()
    word, message = str(state.get("state", "")), str(state.get("message", "") or "")
    pid = state.get("pid") if isinstance(state.get("pid"), int) else None
    state_host, updated = str(state.get("host", "") or ""), str(state.get("updated", "") or "")
    if word == "running":
        if state_host and state_host != host:
            status, message = RunStatus.IN_USE, f"running on {state_host}"
        elif pid is not None and alive(pid, _parse_time(updated)):
            status = RunStatus.IN_USE
        else:
            status, message = RunStatus.INTERRUPTED, "the training process ended without saving its state; resume continues from the last checkpoint"
    elif word == "interrupted":
        status = RunStatus.INTERRUPTED
    elif word == "failed":
        status = RunStatus.FAILED
    elif word == "finished":
        status = RunStatus.FINISHED if finished_files else RunStatus.FAILED
        if not finished_files:
            message = "marked finished, but model.safetensors or model_card.json is missing"
    elif finished_files:
        status = RunStatus.FINISHED
    elif (model / "config.json").is_file():
        status = RunStatus.INTERRUPTED
    else:
        status = RunStatus.NOT_STARTED
    return RunInfo(
        folder=folder, status=status, message=message, atlas_name=str(manifest.get("atlas", "") or ""),
        created=str(manifest.get("created", "") or ""), updated=updated, pid=pid, host=state_host,
        train_args=tuple(str(arg) for arg in manifest.get("train_args") or ()),
    )


def scan_runs(root: Path, host: str | None = None, alive: Callable[..., bool] = process_alive) -> list[RunInfo]:
    """Every run folder directly under ``root``, newest first."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    runs = [run for child in root.iterdir() if child.is_dir() and (run := read_run(child, host, alive)) is not None]
    return sorted(runs, key=lambda run: (run.created or "", run.name), reverse=True)


def find_run(runs: Sequence[RunInfo], folder: Path | str | None) -> RunInfo | None:
    """The run of ``runs`` whose folder is ``folder``."""
    if not folder:
        return None
    return next((run for run in runs if run.folder == Path(folder)), None)


def default_selection(runs: Sequence[RunInfo], previous: Path | str | None = None) -> RunInfo | None:
    """Keep the previous choice while it exists; else the newest finished run, else the newest run."""
    kept = find_run(runs, previous)
    if kept is not None:
        return kept
    return next((run for run in runs if run.usable), runs[0] if runs else None)


def continue_args(run: RunInfo) -> list[str]:
    """``train`` arguments that continue ``run``: ``--resume`` when interrupted, afresh when failed."""
    if run.status == RunStatus.IN_USE:
        raise RunError(f"Run {run.name} is in use by another process ({run.message or 'training'}); wait for it or stop it first.")
    if run.status == RunStatus.FINISHED:
        raise RunError(f"Run {run.name} has finished; choose it and press Segment, or press Train for a new run.")
    if not run.train_args:
        raise RunError(f"Run {run.name} holds no training arguments ({RUN_MANIFEST} is missing); press Train for a new run.")
    missing = [arg for arg in run.train_args if arg.startswith(str(run.folder)) and not Path(arg).exists()]
    if missing:
        raise RunError(f"The exported inputs of run {run.name} are missing ({Path(missing[0]).name}); press Train for a new run.")
    return [*run.train_args, "--resume"] if run.status == RunStatus.INTERRUPTED else list(run.train_args)


def require_usable(run: RunInfo | None) -> RunInfo:
    """The run to segment with; refuses anything but a finished run."""
    if run is None:
        raise RunError("Choose a finished run in the runs list (or press Train first).")
    if not run.usable:
        raise RunError(f"Run {run.name} is {run.status.value}; choose a finished run to segment with.")
    return run


def delete_run(root: Path, run: RunInfo, host: str | None = None, alive: Callable[..., bool] = process_alive) -> None:
    """Delete a run folder: only a run folder directly under ``root``, and never one in use."""
    root, folder = Path(root).expanduser().resolve(), run.folder.resolve()
    if folder.parent != root or folder.is_symlink():
        raise RunError(f"{run.folder} is not a run folder of {root}; it was not deleted.")
    current = read_run(run.folder, host, alive)  # the state may have changed since the list was drawn
    if current is None:
        raise RunError(f"{run.folder} holds neither {RUN_MANIFEST} nor an engine state; it was not deleted.")
    if current.status == RunStatus.IN_USE:
        raise RunError(f"Run {run.name} is in use ({current.message or 'training'}); stop it before deleting it.")
    shutil.rmtree(folder)
