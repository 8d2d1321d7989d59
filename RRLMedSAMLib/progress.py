"""Progress events: one JSON object per line, machine-readable, plus a bar for humans.

Protocol (the Slicer module and scripts rely on it): every event is written on stdout as a line
``PROGRESS_MARKER + json`` unless stdout is a terminal, in which case a tqdm bar is drawn instead,
and every event is appended to ``progress.jsonl`` in the run folder. Event keys:

``event``     ``"stage_start"``, ``"progress"``, ``"stage_end"``, ``"done"`` or ``"error"``
``stage``     stage name, e.g. ``"registration"``, ``"segmentation"``, ``"segment"``
``step``      steps done in this stage; ``total``: steps in the stage
``losses``    latest loss values by name (floats)
``dice``      latest Dice on pseudo labels (float or null)
``eta_s``     seconds left in this stage (float or null); ``elapsed_s``: seconds since the stage began
``message``   optional human text

Stop requests without signals: when the environment variable :data:`STOP_FILE_ENV` names a path
and that file exists, :meth:`ProgressReporter.update` raises :class:`CancelledError`, exactly as
SIGTERM does (training saves its checkpoint; ``segment`` keeps the scans already finished). The
engine never deletes that file: the caller owns it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from RRLMedSAMLib.errors import CancelledError

PROGRESS_MARKER = "@@RRLMEDSAM_PROGRESS@@ "
STOP_FILE_ENV = "RRLMEDSAM_STOP_FILE"


def stop_requested() -> bool:
    """Whether the stop file named by :data:`STOP_FILE_ENV` exists (one cheap ``os.path.exists``)."""
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def check_stop() -> None:
    """Raise :class:`CancelledError` when a stop was requested through the stop file."""
    if stop_requested():
        raise CancelledError(f"stop requested ({os.environ[STOP_FILE_ENV]} exists)")


def parse_progress_line(line: str) -> dict[str, Any] | None:
    """Return the event carried by ``line``, or ``None`` for ordinary log text."""
    if not line.startswith(PROGRESS_MARKER):
        return None
    try:
        event = json.loads(line[len(PROGRESS_MARKER):])
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class ProgressReporter:
    """Emit progress events for one command run.

    Args:
        log_path: ``progress.jsonl`` to append to, or ``None``.
        stream: where marker lines go (stdout by default).
        show_bar: draw a tqdm bar instead of marker lines; default: when ``stream`` is a terminal.
        min_interval_s: throttle for ``progress`` events (stage boundaries are never throttled).
    """

    def __init__(
        self,
        log_path: str | os.PathLike | None = None,
        stream: TextIO | None = None,
        show_bar: bool | None = None,
        min_interval_s: float = 0.5,
    ) -> None:
        self.log_path = Path(log_path) if log_path else None
        self.stream = stream or sys.stdout
        self.show_bar = self.stream.isatty() if show_bar is None else show_bar
        self.min_interval_s = min_interval_s
        self._stage = ""
        self._total = 0
        self._step = 0
        self._done_at_start = 0
        self._start = time.monotonic()
        self._last_emit = 0.0
        self._bar: Any = None
        self.history: list[dict[str, Any]] = []

    def start_stage(self, stage: str, total: int, message: str = "", done: int = 0) -> None:
        """Begin ``stage`` with ``total`` steps (``done`` already finished, e.g. after resume)."""
        self._close_bar()
        self._stage, self._total, self._start = stage, int(total), time.monotonic()
        self._step = int(done)
        self._done_at_start = int(done)
        if self.show_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=stage, file=sys.stderr, dynamic_ncols=True)
        self._emit({"event": "stage_start", "step": int(done), "message": message}, force=True)

    def update(
        self, step: int, losses: dict[str, float] | None = None, dice: float | None = None, message: str = ""
    ) -> None:
        """Report that ``step`` of the current stage's steps are done; then honour a stop request (:func:`check_stop`)."""
        self._step = int(step)
        elapsed = time.monotonic() - self._start
        rate_steps = step - self._done_at_start
        eta = elapsed / rate_steps * (self._total - step) if rate_steps > 0 else None
        losses = {k: round(float(v), 6) for k, v in (losses or {}).items()}
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()} | ({"dice": f"{dice:.3f}"} if dice is not None else {}), refresh=True)
        self._emit(
            {"event": "progress", "step": int(step), "losses": losses, "dice": dice, "eta_s": eta, "message": message},
            force=step >= self._total,
        )
        check_stop()

    def end_stage(self, message: str = "") -> None:
        """Finish the current stage."""
        self._close_bar()
        self._emit({"event": "stage_end", "step": self._total, "message": message}, force=True)

    def done(self, message: str = "") -> None:
        """The whole command finished successfully."""
        self._close_bar()
        self._emit({"event": "done", "message": message}, force=True)

    def error(self, message: str) -> None:
        """The command failed with a user-facing ``message``."""
        self._close_bar()
        self._emit({"event": "error", "message": message}, force=True)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _emit(self, fields: dict[str, Any], force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < self.min_interval_s:
            return
        self._last_emit = now
        event = {"stage": self._stage, "total": self._total, "elapsed_s": round(now - self._start, 3)} | fields
        event.setdefault("step", self._step)
        event.setdefault("losses", {})
        event.setdefault("dice", None)
        event.setdefault("eta_s", None)
        if event["eta_s"] is not None:
            event["eta_s"] = round(event["eta_s"], 1)
        event["time"] = time.time()
        self.history.append(event)
        line = json.dumps(event)
        if not self.show_bar:
            self.stream.write(PROGRESS_MARKER + line + "\n")
            self.stream.flush()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
