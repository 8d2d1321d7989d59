"""Run folder locks and run_state.json with real processes: a second train is refused, the stop file
stops training like SIGTERM (checkpoint kept, exit 130), --resume finishes it, a dead holder never blocks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from guard_helpers import engine_env, start_engine, wait_for
from tiny_case import REPO, engine, make_case, train_args

from RRLMedSAMLib.io.folder_lock import FolderLock
from RRLMedSAMLib.run.state import read_run_state

#: Long enough for the race to be decided while the winner trains; short enough to resume quickly.
STEPS = ("--method", "plain", "--set", "registration_steps=12", "--set", "segmentation_steps=2")


def _state(run: Path) -> dict:
    return json.loads((run / "run_state.json").read_text()) if (run / "run_state.json").exists() else {}


def test_two_trainings_on_one_folder_then_stop_file_then_resume(tmp_path: Path) -> None:
    case = make_case(tmp_path / "case")
    run, stop = tmp_path / "run", tmp_path / "stop_request"
    env = engine_env(RRLMEDSAM_STOP_FILE=str(stop))
    first, second = (start_engine(*train_args(case, run, *STEPS), env=env) for _ in range(2))
    wait_for(lambda: first.poll() is not None or second.poll() is not None, timeout=180)
    loser, winner = (first, second) if first.poll() is not None else (second, first)
    assert loser.wait() == 2, loser.stderr.read()
    message = loser.stderr.read().strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert f"in use by process {winner.pid}" in message, message
    assert winner.poll() is None, "the winner should still be training"
    state = read_run_state(run)
    assert state["in_use"] and state["holder_pid"] == winner.pid

    wait_for(lambda: _state(run).get("state") == "running" and (run / "progress.jsonl").exists()
             and '"stage": "registration"' in (run / "progress.jsonl").read_text(), winner, timeout=180)
    stop.write_text("")
    assert winner.wait(timeout=180) == 130, winner.stderr.read()[-2000:]
    assert "--resume" in winner.stderr.read()
    assert stop.exists(), "the engine must not delete the caller's stop file"
    assert _state(run)["state"] == "interrupted" and _state(run)["pid"] == winner.pid
    assert "--resume" in _state(run)["message"]
    assert (run / "checkpoints" / "registration.safetensors").exists()
    assert not (run / "model.safetensors").exists()
    assert read_run_state(run)["in_use"] is False

    stop.unlink()
    resumed = engine(*train_args(case, run, *STEPS, "--resume"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = _state(run)
    assert final["state"] == "finished" and set(final) == {"state", "pid", "host", "updated", "message"}
    from RRLMedSAMLib.io.file_hash import sha256_file

    assert json.loads((run / "model_card.json").read_text())["model_sha256"] == sha256_file(run / "model.safetensors")
    again = engine(*train_args(case, run, *STEPS, "--resume"))
    assert again.returncode == 2 and "finished" in again.stderr


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from RRLMedSAMLib.io.folder_lock import FolderLock; "
         f"lock = FolderLock({str(folder)!r}, 'train').acquire(); print('held', flush=True); time.sleep(60)"],
        cwd=REPO, env=engine_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert read_run_state(folder)["holder_pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_run_state(folder)["in_use"] is False
    lock = FolderLock(folder, "segment").acquire()
    lock.release()


def test_run_state_reads_without_torch() -> None:
    code = ("import sys; from RRLMedSAMLib.run.state import read_run_state; read_run_state('.'); "
            "assert 'torch' not in sys.modules and 'SimpleITK' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=engine_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
