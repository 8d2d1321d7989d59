"""``run_state.json``: where a training run stands, readable cheaply and without torch.

``train`` rewrites the file atomically at every transition::

    {"state": "running" | "interrupted" | "failed" | "finished",
     "pid": 1234, "host": "<socket.gethostname()>", "updated": "<ISO 8601 UTC>", "message": "<one line>"}

``running`` when training starts or resumes, ``interrupted`` on cancel (exit 130), ``failed`` on an
error once the run folder is set up (the message is the error), ``finished`` once
``model.safetensors`` and ``model_card.json`` are written. :func:`read_run_state` adds ``in_use``
(a live process holds the folder's lock) for a caller such as the Slicer module.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.folder_lock import lock_holder

RUN_STATE_NAME = "run_state.json"
RUNNING, INTERRUPTED, FAILED, FINISHED = "running", "interrupted", "failed", "finished"
STATES = (RUNNING, INTERRUPTED, FAILED, FINISHED)


def write_run_state(folder: str | os.PathLike, state: str, message: str = "") -> None:
    """Record ``state`` (one of :data:`STATES`) for this process, atomically."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    line = " ".join(str(message).split())
    write_json_atomic(Path(folder) / RUN_STATE_NAME, {
        "state": state, "pid": os.getpid(), "host": socket.gethostname(),
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "message": line,
    })


def read_run_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's recorded state plus ``in_use`` and ``holder_pid`` (the live lock holder's PID or ``None``).

    A folder without (or with an unreadable) ``run_state.json`` reports ``state`` ``None``. A
    ``running`` state whose process is gone (killed, crashed) is reported as ``interrupted``: that
    is what a resume continues.
    """
    folder = Path(folder)
    try:
        record = json.loads((folder / RUN_STATE_NAME).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("state") not in STATES:
            raise ValueError("not a run state")
    except (OSError, ValueError):
        record = {"state": None, "pid": None, "host": None, "updated": None, "message": ""}
    holder = lock_holder(folder) if folder.is_dir() else None
    record["in_use"] = holder is not None
    record["holder_pid"] = holder.get("pid") if holder else None
    if record["state"] == RUNNING and holder is None:
        record["state"] = INTERRUPTED
        record["message"] = record.get("message") or "the training process ended without finishing"
    return record
