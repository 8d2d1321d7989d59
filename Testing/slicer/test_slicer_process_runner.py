"""The engine process runner with real subprocesses: progress, failures, stop request, kill of the whole tree."""

from __future__ import annotations

import io
import sys
import textwrap
import time
import types

import psutil
import pytest
from slicer_test_helpers import REPO_ROOT  # noqa: F401  (puts the module folder on sys.path)

from RRLMedSAMSlicerLib import ProcessRunner as pr  # noqa: E402

FAKE_ENGINE = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    MARK = "@@RRLMEDSAM_PROGRESS@@ "
    mode, pid_file = sys.argv[1], sys.argv[2]

    def event(**fields):
        print(MARK + json.dumps(fields), flush=True)

    print("loading images", flush=True)
    event(event="stage_start", stage="registration", step=0, total=4)
    for step in range(1, 5):
        event(event="progress", stage="registration", step=step, total=4, losses={"ncc": 1.0 / step},
              dice=0.5 + step / 10, eta_s=4.0 - step, elapsed_s=float(step))
    if mode == "fail":
        print("rrlmedsam train: error: Atlas label a.nii.gz is empty (all voxels are 0).", file=sys.stderr, flush=True)
        sys.exit(2)
    if mode == "crash":
        raise RuntimeError("CUDA out of memory")
    if mode in ("hang", "stubborn"):
        # a child that ignores SIGTERM and a grandchild: the runner must leave none of them alive
        code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                "print(g.pid, flush=True); time.sleep(600)")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        grandchild = child.stdout.readline().strip()
        with open(pid_file, "w") as handle:
            handle.write(f"{os.getpid()} {child.pid} {grandchild}")
        stop_file = os.environ["RRLMEDSAM_STOP_FILE"]
        signal.signal(signal.SIGTERM, lambda *a: (print("got SIGTERM", flush=True), sys.exit(143)))
        while True:
            if mode == "hang" and os.path.exists(stop_file):
                print("saving checkpoint", flush=True)
                sys.exit(130)
            time.sleep(0.05)
    event(event="done", stage="registration", step=4, total=4, message="finished")
    """
)


@pytest.fixture
def fake_engine(tmp_path):
    script = tmp_path / "fake_engine.py"
    script.write_text(FAKE_ENGINE)
    return lambda mode: [sys.executable, str(script), mode, str(tmp_path / "pids.txt")]


def run_to_end(process: pr.EngineProcess, timeout_s: float = 60.0) -> pr.RunOutcome:
    deadline = time.monotonic() + timeout_s
    while process.outcome is None:
        assert time.monotonic() < deadline, "the engine process did not finish in time"
        process.poll()
        time.sleep(0.02)
    return process.outcome


def recorder():
    record = types.SimpleNamespace(events=[], logs=[], outcomes=[])
    callbacks = dict(on_event=record.events.append, on_log=record.logs.append, on_finished=record.outcomes.append)
    return record, callbacks


def test_marker_matches_the_engine():
    progress = pytest.importorskip("RRLMedSAMLib.progress")
    assert pr.PROGRESS_MARKER == progress.PROGRESS_MARKER


def test_parses_lines_written_by_the_engine_reporter():
    progress = pytest.importorskip("RRLMedSAMLib.progress")
    stream = io.StringIO()
    reporter = progress.ProgressReporter(stream=stream, show_bar=False, min_interval_s=0)
    reporter.start_stage("segmentation", total=10)
    reporter.update(5, losses={"dice_loss": 0.25}, dice=0.8)
    reporter.done("ok")
    events = [pr.parse_progress_line(line) for line in stream.getvalue().splitlines()]
    assert [e.event for e in events] == ["stage_start", "progress", "done"]
    assert events[1].stage == "segmentation" and events[1].step == 5 and events[1].total == 10
    assert events[1].losses == {"dice_loss": 0.25} and events[1].dice == 0.8
    assert events[1].fraction == 0.5 and events[1].eta_s is not None
    assert pr.parse_progress_line("plain log") is None
    assert pr.parse_progress_line(pr.PROGRESS_MARKER + "{broken") is None


def test_progress_and_log_lines_are_dispatched(fake_engine):
    record, callbacks = recorder()
    process = pr.EngineProcess(fake_engine("ok"), starter=pr.ThreadedStarter(), **callbacks)
    process.start()
    outcome = run_to_end(process)
    assert outcome.succeeded and record.outcomes == [outcome]
    assert [e.event for e in record.events] == ["stage_start"] + ["progress"] * 4 + ["done"]
    assert record.events[-2].losses == {"ncc": 0.25} and record.events[-2].dice == pytest.approx(0.9)
    assert record.events[-2].eta_s == 0.0
    assert record.logs == ["loading images"]


def test_engine_error_message_is_surfaced(fake_engine):
    record, callbacks = recorder()
    process = pr.EngineProcess(fake_engine("fail"), starter=pr.ThreadedStarter(), **callbacks)
    process.start()
    outcome = run_to_end(process)
    assert outcome.returncode == 2 and not outcome.cancelled and not outcome.succeeded
    assert outcome.error_message == "Atlas label a.nii.gz is empty (all voxels are 0)."


def test_crash_reports_the_last_lines(fake_engine):
    process = pr.EngineProcess(fake_engine("crash"), starter=pr.ThreadedStarter())
    process.start()
    outcome = run_to_end(process)
    assert outcome.returncode == 1
    assert "exit code 1" in outcome.error_message and "CUDA out of memory" in outcome.error_message


def start_hanging(fake_engine, tmp_path, mode: str, grace_s: float):
    record, callbacks = recorder()
    process = pr.EngineProcess(fake_engine(mode), starter=pr.ThreadedStarter(), cancel_grace_s=grace_s, **callbacks)
    process.start()
    pid_file = tmp_path / "pids.txt"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and len(pid_file.read_text().split()) == 3):
        assert time.monotonic() < deadline
        process.poll()
        time.sleep(0.05)
    pids = [int(p) for p in pid_file.read_text().split()]
    assert all(psutil.pid_exists(p) for p in pids)
    return process, record, pids


def assert_all_gone(pids: list[int]) -> None:
    time.sleep(0.2)
    for pid in pids:
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"process {pid} survived the cancel"


def test_cancel_asks_through_the_stop_file_then_clears_the_tree(fake_engine, tmp_path):
    process, record, pids = start_hanging(fake_engine, tmp_path, "hang", grace_s=20.0)
    stop_file = process.stop_file
    assert process.env[pr.STOP_FILE_ENV] == str(stop_file) and not stop_file.exists()
    started = time.monotonic()
    process.cancel()
    assert stop_file.exists()
    outcome = run_to_end(process, timeout_s=30)
    assert time.monotonic() - started < 10, "the engine's own exit must not wait for the grace period"
    assert outcome.cancelled and outcome.returncode == pr.EXIT_CANCELLED and not outcome.forced
    assert outcome.error_message is None
    assert "saving checkpoint" in record.logs and "got SIGTERM" not in record.logs  # no signal: same on every platform
    assert not stop_file.parent.exists(), "the runner removes its stop file and folder"
    assert_all_gone(pids)  # the engine's leftover children are killed once it has exited


def test_engine_ignoring_the_stop_file_is_killed_after_the_grace_period(fake_engine, tmp_path):
    process, record, pids = start_hanging(fake_engine, tmp_path, "stubborn", grace_s=1.0)
    process.cancel()
    outcome = run_to_end(process, timeout_s=30)
    assert outcome.cancelled and outcome.forced and outcome.returncode != 0
    assert "saving checkpoint" not in record.logs and "got SIGTERM" not in record.logs
    assert not process.stop_file.parent.exists()
    assert_all_gone(pids)


def test_cancel_before_start_and_after_end_is_harmless(fake_engine):
    process = pr.EngineProcess(fake_engine("ok"), starter=pr.ThreadedStarter())
    process.cancel()
    process.start()
    run_to_end(process)
    process.cancel()
    assert process.outcome.succeeded
    with pytest.raises(RuntimeError, match="already started"):
        process.start()


def test_slicer_launch_console_process_path(fake_engine, monkeypatch):
    """Slicer >= 5.12: the real ``slicer.util.launchConsoleProcess(blocking=False)`` drives the callbacks.

    Its polling uses ``qt.QTimer.singleShot``; a stand-in ``qt`` module runs those timers here.
    """
    slicer_util = pytest.importorskip("slicer.util")
    timers = []
    fake_qt = types.ModuleType("qt")
    fake_qt.QTimer = types.SimpleNamespace(singleShot=lambda ms, callback: timers.append(callback))
    monkeypatch.setitem(sys.modules, "qt", fake_qt)
    assert "blocking" in pr.inspect.signature(slicer_util.launchConsoleProcess).parameters
    starter = pr.default_starter()
    assert isinstance(starter, pr.SlicerConsoleStarter)

    record, callbacks = recorder()
    process = pr.EngineProcess(fake_engine("fail"), starter=starter, **callbacks)
    process.start()
    deadline = time.monotonic() + 60
    while process.outcome is None:
        assert time.monotonic() < deadline
        if timers:
            timers.pop(0)()
        else:
            time.sleep(0.02)
    assert len(record.events) == 5
    assert process.outcome.error_message.startswith("Atlas label a.nii.gz is empty")


def test_engine_command_uses_python_slicer_or_given_python(monkeypatch, tmp_path):
    assert pr.engine_command("/opt/python") == ["/opt/python", "-m", "RRLMedSAMLib"]
    monkeypatch.setattr(pr.shutil, "which", lambda name: None)
    monkeypatch.setattr(pr.sys, "executable", str(tmp_path / "python-real"))
    with pytest.raises(FileNotFoundError, match="PythonSlicer"):
        pr.engine_command()
    (tmp_path / "PythonSlicer").write_text("")
    assert pr.engine_command()[0] == str(tmp_path / "PythonSlicer")
