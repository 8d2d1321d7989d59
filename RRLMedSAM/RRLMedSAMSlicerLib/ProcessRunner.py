"""Run the ``rrlmedsam`` engine in a separate process without blocking Slicer's GUI.

Qt-free: output lines are read on a background thread and handed to callbacks on the caller's
thread, either by ``slicer.util.launchConsoleProcess(..., blocking=False)`` (Slicer >= 5.12, which
polls with a ``qt.QTimer`` itself) or by :class:`ThreadedStarter`, whose :meth:`poll` the widget
calls from its own timer.

Cancel is the same on every platform: the runner creates the stop file named by
``RRLMEDSAM_STOP_FILE`` (in a temporary folder of its own, removed afterwards); the engine stops at
its next step (training saves its checkpoint) and exits with code 130. Only when it has not exited
after a grace period is the whole process tree (the ``PythonSlicer`` launcher and the Python
interpreter it starts) killed with psutil.
"""

from __future__ import annotations

import inspect
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Must equal ``RRLMedSAMLib.progress.PROGRESS_MARKER`` (a test checks it); re-declared here because
#: the engine may not be installed in Slicer's Python when the module loads.
PROGRESS_MARKER = "@@RRLMEDSAM_PROGRESS@@ "
ENGINE_ERROR_LINE = re.compile(r"^rrlmedsam (?P<command>[\w-]+): error: (?P<message>.+)$")
EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 130
DEVICES = ("auto", "cuda", "cpu", "mps")
#: Environment variable naming the stop file: the engine stops at its next step once it exists.
STOP_FILE_ENV = "RRLMEDSAM_STOP_FILE"
#: Seconds the engine gets to save its checkpoint and exit after the stop request.
DEFAULT_CANCEL_GRACE_S = 30.0

LineCallback = Callable[[str], None]
ExitCallback = Callable[[int], None]


@dataclass(frozen=True)
class ProgressEvent:
    """One progress event of the engine (see ``RRLMedSAMLib/progress.py``)."""

    event: str
    stage: str = ""
    step: int = 0
    total: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    dice: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    message: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        """Build from the JSON object, tolerating missing or extra keys."""
        losses = data.get("losses") or {}
        return cls(
            event=str(data.get("event", "")),
            stage=str(data.get("stage") or ""),
            step=int(data.get("step") or 0),
            total=int(data.get("total") or 0),
            losses={str(k): float(v) for k, v in losses.items()} if isinstance(losses, dict) else {},
            dice=None if data.get("dice") is None else float(data["dice"]),
            eta_s=None if data.get("eta_s") is None else float(data["eta_s"]),
            elapsed_s=None if data.get("elapsed_s") is None else float(data["elapsed_s"]),
            message=str(data.get("message") or ""),
        )

    @property
    def fraction(self) -> float:
        """Part of the stage done, 0..1."""
        return min(max(self.step / self.total, 0.0), 1.0) if self.total > 0 else 0.0


def parse_progress_line(line: str) -> ProgressEvent | None:
    """The event carried by ``line``, or ``None`` for ordinary log text."""
    if not line.startswith(PROGRESS_MARKER):
        return None
    try:
        data = json.loads(line[len(PROGRESS_MARKER):])
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return ProgressEvent.from_dict(data)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RunOutcome:
    """How an engine run ended."""

    returncode: int
    cancelled: bool
    error_message: str | None
    #: True when the engine did not stop within the grace period and its process tree was killed.
    forced: bool = False

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.cancelled and self.error_message is None


def python_slicer_executable() -> str:
    """``PythonSlicer`` of this Slicer (on ``PATH`` inside Slicer, else beside the interpreter)."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(
        "PythonSlicer was not found on PATH or next to the running Python; run the engine from a complete Slicer installation."
    )


def engine_command(python: str | None = None) -> list[str]:
    """The command that starts the engine: ``PythonSlicer -m RRLMedSAMLib`` (or another ``python``)."""
    return [python or python_slicer_executable(), "-m", "RRLMedSAMLib"]


class ThreadedStarter:
    """Start a process, read its merged output on a thread; :meth:`poll` delivers lines and the exit."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._on_line: LineCallback | None = None
        self._on_exit: ExitCallback | None = None

    def __call__(self, command: list[str], env: dict[str, str], cwd: str | None, on_line: LineCallback, on_exit: ExitCallback) -> subprocess.Popen:
        self._on_line, self._on_exit = on_line, on_exit
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env={**os.environ, **env}, cwd=cwd, **kwargs,
        )
        threading.Thread(target=self._read, args=(popen,), daemon=True).start()
        return popen

    def _read(self, popen: subprocess.Popen) -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            self._queue.put(("line", line.rstrip("\r\n")))
        popen.wait()
        self._queue.put(("exit", popen.returncode))

    def poll(self) -> None:
        """Deliver the lines read so far (and the exit code) on the calling thread."""
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                return
            if kind == "line" and self._on_line:
                self._on_line(value)
            elif kind == "exit" and self._on_exit:
                self._on_exit(value)


class SlicerConsoleStarter:
    """Start through ``slicer.util.launchConsoleProcess(..., blocking=False)`` (Slicer >= 5.12)."""

    def __call__(self, command: list[str], env: dict[str, str], cwd: str | None, on_line: LineCallback, on_exit: ExitCallback) -> subprocess.Popen:
        import slicer.util

        return slicer.util.launchConsoleProcess(
            command, useStartupEnvironment=False, updateEnvironment=env, cwd=cwd,
            blocking=False, logCallback=on_line, completedCallback=on_exit,
        )

    def poll(self) -> None:
        """Nothing to do: Slicer delivers the output from its own timer."""

    @staticmethod
    def available() -> bool:
        """True inside a Slicer whose ``launchConsoleProcess`` has the non-blocking mode."""
        try:
            import qt  # noqa: F401
            import slicer.util
        except ImportError:
            return False
        return "blocking" in inspect.signature(slicer.util.launchConsoleProcess).parameters


def default_starter() -> ThreadedStarter | SlicerConsoleStarter:
    """Slicer's non-blocking launcher when available, else the reader thread."""
    return SlicerConsoleStarter() if SlicerConsoleStarter.available() else ThreadedStarter()


class EngineProcess:
    """One run of the engine: progress events, log lines, error message, cancel of the process tree.

    Args:
        command: full command line (e.g. ``engine_command() + ["train", ...]``).
        on_event: called with each :class:`ProgressEvent`.
        on_log: called with every other output line.
        on_finished: called once with the :class:`RunOutcome`.
        env: extra environment variables for the engine.
        starter: how to start the process (default: :func:`default_starter`).
        cancel_grace_s: seconds the engine gets to stop (and keep its checkpoint) after the stop
            request before its process tree is killed.
    """

    def __init__(
        self,
        command: list[str],
        on_event: Callable[[ProgressEvent], None] | None = None,
        on_log: LineCallback | None = None,
        on_finished: Callable[[RunOutcome], None] | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        starter: ThreadedStarter | SlicerConsoleStarter | None = None,
        cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
    ) -> None:
        self.command = list(command)
        self.on_event, self.on_log, self.on_finished = on_event, on_log, on_finished
        self.env = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
        self.cwd = cwd
        self.starter = starter or default_starter()
        self.cancel_grace_s = cancel_grace_s
        self.popen: subprocess.Popen | None = None
        self.outcome: RunOutcome | None = None
        self.last_event: ProgressEvent | None = None
        self._cancel_requested = False
        self._forced = False
        self._stop_dir: str | None = None
        self.stop_file: Path | None = None
        self._engine_error: str | None = None
        self._tail: deque[str] = deque(maxlen=8)
        self._tree: list[Any] = []

    @property
    def running(self) -> bool:
        return self.popen is not None and self.outcome is None

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def start(self) -> None:
        """Start the engine; returns at once."""
        if self.popen is not None:
            raise RuntimeError("This engine process was already started; create a new one.")
        self._stop_dir = tempfile.mkdtemp(prefix="rrlmedsam-stop-")
        self.stop_file = Path(self._stop_dir) / "stop"
        self.env[STOP_FILE_ENV] = str(self.stop_file)
        try:
            self.popen = self.starter(self.command, self.env, self.cwd, self._handle_line, self._handle_exit)
        except Exception:
            self._remove_stop_file()
            raise

    def poll(self) -> None:
        """Deliver pending output (needed with :class:`ThreadedStarter`; harmless otherwise)."""
        self.starter.poll()

    def _handle_line(self, line: str) -> None:
        event = parse_progress_line(line)
        if event is not None:
            self.last_event = event
            if event.event == "error" and event.message:
                self._engine_error = event.message
            if self.on_event:
                self.on_event(event)
            return
        match = ENGINE_ERROR_LINE.match(line.strip())
        if match:
            self._engine_error = match.group("message").strip()
        if line.strip() and line.strip(" ^~") and not line.startswith(PROGRESS_MARKER):
            self._tail.append(line.strip())  # skip the caret lines of Python tracebacks
        if self.on_log:
            self.on_log(line)

    def _handle_exit(self, returncode: int) -> None:
        if self.outcome is not None:
            return
        if self._cancel_requested:
            self._kill(self._tree)  # the engine has stopped; nothing of the tree may outlive it
        self._remove_stop_file()
        cancelled = self._cancel_requested or returncode == EXIT_CANCELLED
        error = None
        if returncode != 0 and not cancelled:
            error = self._engine_error or self._failure_summary(returncode)
        self.outcome = RunOutcome(returncode, cancelled, error, forced=self._forced)
        if self.on_finished:
            self.on_finished(self.outcome)

    def _failure_summary(self, returncode: int) -> str:
        tail = "\n".join(list(self._tail)[-3:])
        detail = f":\n{tail}" if tail else " without output"
        return f"The engine stopped with exit code {returncode}{detail}"

    def cancel(self) -> None:
        """Ask the engine to stop through its stop file; kill its process tree after the grace period."""
        if not self.running or self._cancel_requested:
            return
        self._cancel_requested = True
        assert self.popen is not None
        self._tree = _process_tree(self.popen)
        if self.stop_file is not None:
            try:
                self.stop_file.touch()
            except OSError:
                self._force_stop()  # no stop request possible: the fallback at once
                return
        threading.Thread(target=self._watch_stop, daemon=True).start()

    def _watch_stop(self) -> None:
        """Wait for the engine's own exit up to the grace period, then clear what is left of the tree."""
        assert self.popen is not None
        try:
            self.popen.wait(timeout=self.cancel_grace_s)
        except subprocess.TimeoutExpired:
            self._force_stop()
            return
        self._kill(self._tree)  # children of a stopped engine must not outlive it (they may hold its output open)

    def _force_stop(self) -> None:
        """The engine did not stop in time: kill the whole tree (the outcome says so)."""
        if self.outcome is not None or self.popen is None or self.popen.poll() is not None:
            return  # it exited by itself: its exit is on its way
        self._forced = True
        self._kill([*self._tree, *_process_tree(self.popen)])

    def _remove_stop_file(self) -> None:
        if self._stop_dir is not None:
            shutil.rmtree(self._stop_dir, ignore_errors=True)

    @staticmethod
    def _kill(tree: list[Any]) -> None:
        survivors = list(tree)
        for process in tree:
            children = getattr(process, "children", None)
            if children is not None:
                survivors.extend(_quietly(lambda found=children: found(recursive=True)) or [])
        for process in survivors:
            _quietly(process.kill)


def _process_tree(popen: subprocess.Popen) -> list[Any]:
    """The launched process and all its descendants (psutil), or only the launched one without psutil."""
    try:
        import psutil
    except ImportError:
        return [popen]
    try:
        root = psutil.Process(popen.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _quietly(action: Callable[[], Any]) -> Any:
    """Run ``action``, ignoring processes that are already gone."""
    try:
        return action()
    except (ProcessLookupError, OSError):
        return None
    except Exception as error:  # psutil.NoSuchProcess / AccessDenied without importing psutil here
        if type(error).__name__ in ("NoSuchProcess", "AccessDenied", "ZombieProcess"):
            return None
        raise
