"""Run-folder manager on real folders and real processes: new, finished, failed, interrupted, in use, delete.

The engine's ``run_state.json`` files are written here in the contract's format; the full cycle with
the real engine (cancel, resume after a restart, segment with the finished run) is in
``test_slicer_run_cycle_engine.py``.
"""

from __future__ import annotations

import datetime
import json
import socket
import subprocess
import sys

import pytest
from slicer_test_helpers import REPO_ROOT  # noqa: F401  (puts the module folder on sys.path)

from RRLMedSAMSlicerLib import RunsLogic as rl  # noqa: E402

NOW = datetime.datetime(2026, 12, 6, 21, 30, 15)
TRAIN = ["train", "--atlas-image", "a.nrrd", "--out", "RUN/model", "--preset", "tiny"]


def utc(delta_s: float = 0.0) -> str:
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta_s)).isoformat(timespec="seconds")


def new_run(root, name: str = "Atlas T1", state: dict | None = None, finished_files: bool = False, token: str | None = None):
    folder = rl.create_run(root, name, now=NOW, token=token)
    rl.record_train_args(folder, ["/opt/PythonSlicer", "-m", "RRLMedSAMLib", *TRAIN])
    model = folder / rl.ENGINE_FOLDER
    model.mkdir()
    (model / "config.json").write_text("{}")
    if state is not None:
        record = {"pid": 1, "host": socket.gethostname(), "updated": utc(), "message": "", **state}
        (model / rl.RUN_STATE_FILE).write_text(json.dumps(record))
    if finished_files:
        (model / "model.safetensors").write_bytes(b"weights")
        (model / "model_card.json").write_text("{}")
    return folder


@pytest.fixture
def sleeper():
    """A real live process (its PID stands for a training engine)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_new_run_folder_is_named_from_atlas_date_and_id(tmp_path):
    root = tmp_path / "runs"
    first = rl.create_run(root, "Atlas T1 (left)/v2", now=NOW, token="a1b2c3")
    assert first.name == "Atlas_T1_left_v2-20261206-213015-a1b2c3"
    again = rl.create_run(root, "Atlas T1 (left)/v2", now=NOW, token="a1b2c3")  # same second, same id: another id
    assert again != first and again.name.startswith("Atlas_T1_left_v2-20261206-213015-")
    manifest = rl.read_manifest(first)
    assert manifest["atlas"] == "Atlas T1 (left)/v2" and manifest["created"].startswith("2026-12-06T21:30:15")
    run = rl.read_run(first)
    assert run.status == rl.RunStatus.NOT_STARTED and run.atlas_name == "Atlas T1 (left)/v2"
    rl.record_train_args(first, ["/x/PythonSlicer", "-m", "RRLMedSAMLib", *TRAIN, "--resume"])
    assert rl.read_run(first).train_args == tuple(TRAIN)  # without the engine prefix and without --resume
    assert rl.resolve_runs_root("") == rl.DEFAULT_RUNS_ROOT.expanduser()
    assert rl.resolve_runs_root(str(root)) == root


def test_states_read_from_disk(tmp_path, sleeper):
    root = tmp_path / "runs"
    finished = new_run(root, state={"state": "finished"}, finished_files=True, token="000001")
    broken = new_run(root, state={"state": "finished"}, token="000002")
    failed = new_run(root, state={"state": "failed", "message": "Atlas label is empty"}, token="000003")
    interrupted = new_run(root, state={"state": "interrupted"}, token="000004")
    in_use = new_run(root, state={"state": "running", "pid": sleeper.pid}, token="000005")
    elsewhere = new_run(root, state={"state": "running", "pid": sleeper.pid, "host": "gpu-box-7"}, token="000006")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = new_run(root, state={"state": "running", "pid": int(gone.stdout)}, token="000007")
    recycled = new_run(root, state={"state": "running", "pid": sleeper.pid, "updated": utc(-3600)}, token="000008")
    legacy = new_run(root, token="000009")  # an engine without run states: config.json only

    status = {run.folder: run for run in rl.scan_runs(root)}
    assert status[finished].status == rl.RunStatus.FINISHED and status[finished].usable
    assert status[broken].status == rl.RunStatus.FAILED and "missing" in status[broken].message
    assert status[failed].status == rl.RunStatus.FAILED and status[failed].message == "Atlas label is empty"
    assert status[interrupted].status == rl.RunStatus.INTERRUPTED and status[interrupted].resumable
    assert status[in_use].status == rl.RunStatus.IN_USE
    assert status[elsewhere].status == rl.RunStatus.IN_USE and "gpu-box-7" in status[elsewhere].message
    assert status[killed].status == rl.RunStatus.INTERRUPTED, "a running state whose process is gone was killed"
    assert status[recycled].status == rl.RunStatus.INTERRUPTED, "a live process started after the state was written is another one"
    assert status[legacy].status == rl.RunStatus.INTERRUPTED
    (tmp_path / "runs" / "not a run").mkdir()
    assert len(rl.scan_runs(root)) == 9

    assert rl.continue_args(status[interrupted]) == [*TRAIN, "--resume"]
    assert rl.continue_args(status[killed]) == [*TRAIN, "--resume"]
    assert rl.continue_args(status[failed]) == TRAIN, "a failed run is trained afresh into its folder"
    with pytest.raises(rl.RunError, match="in use"):
        rl.continue_args(status[in_use])
    with pytest.raises(rl.RunError, match="finished"):
        rl.continue_args(status[finished])
    assert rl.require_usable(status[finished]) is status[finished]
    with pytest.raises(rl.RunError, match="interrupted; choose a finished run"):
        rl.require_usable(status[interrupted])
    with pytest.raises(rl.RunError, match="Choose a finished run"):
        rl.require_usable(None)


def test_selection_keeps_the_choice_else_takes_the_newest_finished_run(tmp_path):
    root = tmp_path / "runs"
    old_done = rl.create_run(root, "a", now=NOW - datetime.timedelta(days=2), token="aaaaaa")
    new_done = rl.create_run(root, "a", now=NOW - datetime.timedelta(days=1), token="bbbbbb")
    newest = rl.create_run(root, "a", now=NOW, token="cccccc")
    for folder in (old_done, new_done):
        (folder / "model").mkdir()
        (folder / "model" / "model.safetensors").write_bytes(b"w")
        (folder / "model" / "model_card.json").write_text("{}")
    runs = rl.scan_runs(root)
    assert [run.folder for run in runs] == [newest, new_done, old_done]
    assert rl.default_selection(runs).folder == new_done
    assert rl.default_selection(runs, old_done).folder == old_done
    assert rl.default_selection(runs, tmp_path / "deleted").folder == new_done
    assert rl.default_selection([]) is None


def test_delete_only_run_folders_of_the_root_and_never_one_in_use(tmp_path, sleeper):
    root = tmp_path / "runs"
    done = new_run(root, state={"state": "finished"}, finished_files=True, token="111111")
    busy = new_run(root, state={"state": "running", "pid": sleeper.pid}, token="222222")
    runs = {run.folder: run for run in rl.scan_runs(root)}
    with pytest.raises(rl.RunError, match="in use"):
        rl.delete_run(root, runs[busy])
    assert busy.is_dir()
    with pytest.raises(rl.RunError, match="not a run folder of"):
        rl.delete_run(tmp_path / "elsewhere", runs[done])
    stranger = root / "holiday photos"
    (stranger / "model").mkdir(parents=True)
    with pytest.raises(rl.RunError, match="neither"):
        rl.delete_run(root, rl.RunInfo(stranger, rl.RunStatus.FAILED))
    assert stranger.is_dir()
    rl.delete_run(root, runs[done])
    assert not done.exists() and busy.exists()
