"""The panel's decisions (PanelLogic): enabled states, progress display, status lines, clean-up after a run."""

from __future__ import annotations

from pathlib import Path

from slicer_test_helpers import REPO_ROOT  # noqa: F401  (puts the module folder on sys.path)

from RRLMedSAMSlicerLib import PanelLogic as pl  # noqa: E402
from RRLMedSAMSlicerLib.ProcessRunner import ProgressEvent, RunOutcome  # noqa: E402
from RRLMedSAMSlicerLib.RunsLogic import RunInfo, RunStatus  # noqa: E402
from RRLMedSAMSlicerLib.RunState import State  # noqa: E402


def run(status: RunStatus, message: str = "") -> RunInfo:
    return RunInfo(Path("/runs/atlas-20261206-213015-a1b2c3"), status, message, atlas_name="atlas", updated="2026-12-06T21:40:00+00:00")


def view(state=State.IDLE, has_atlas=True, has_scans=True, selected=None, auto=True, resuming=False) -> pl.Controls:
    return pl.controls(pl.PanelInputs(state, has_atlas, has_scans, selected, auto, resuming))


def test_idle_panel_enables_what_the_inputs_and_the_selected_run_allow():
    finished = view(selected=run(RunStatus.FINISHED))
    assert finished.train_enabled and finished.segment_enabled and finished.delete_enabled
    assert not finished.resume_enabled and finished.resume_text == "Resume"
    interrupted = view(selected=run(RunStatus.INTERRUPTED))
    assert interrupted.resume_enabled and not interrupted.segment_enabled
    failed = view(selected=run(RunStatus.FAILED))
    assert failed.resume_enabled and failed.resume_text == "Train again"
    in_use = view(selected=run(RunStatus.IN_USE))
    assert not in_use.resume_enabled and not in_use.delete_enabled and not in_use.segment_enabled
    assert not view(has_atlas=False).train_enabled and not view(has_scans=False, selected=run(RunStatus.FINISHED)).segment_enabled
    assert not view(selected=None).segment_enabled and not view(selected=None).delete_enabled
    assert view(auto=False).label_smoothing_enabled and not view(auto=True).label_smoothing_enabled


def test_running_action_becomes_cancel_and_everything_else_waits():
    training = view(State.TRAINING, selected=run(RunStatus.IN_USE))
    assert training.train_text == "Cancel" and training.train_enabled
    assert not training.segment_enabled and not training.resume_enabled and not training.settings_enabled
    resuming = view(State.TRAINING, selected=run(RunStatus.IN_USE), resuming=True)
    assert resuming.resume_text == "Cancel" and resuming.resume_enabled
    assert resuming.train_text == "Train" and not resuming.train_enabled
    segmenting = view(State.SEGMENTING, selected=run(RunStatus.FINISHED))
    assert segmenting.segment_text == "Cancel" and segmenting.segment_enabled and not segmenting.train_enabled
    cancelling = view(State.CANCELLING, selected=run(RunStatus.IN_USE))
    assert not (cancelling.train_enabled or cancelling.segment_enabled or cancelling.resume_enabled or cancelling.delete_enabled)


def test_progress_events_become_bar_details_and_log():
    progress = pl.progress_view(ProgressEvent("progress", "joint_stage2", 30, 120, {"ncc": 0.51234}, 0.8123, 95.0,
                                              message="scan_a: registration 2 of 9"), elapsed_s=200)
    assert progress.bar_value == 250 and progress.bar_format == "joint_stage2 30/120, about 2 min left"
    assert progress.details == "scan_a: registration 2 of 9 · ncc 0.5123 · Dice on pseudo labels 0.812 · elapsed 3 min"
    assert progress.log_line is None
    start = pl.progress_view(ProgressEvent("stage_start", "registration", 0, 12, message="learning the deformation"), 1)
    assert start.log_line == "Stage registration: learning the deformation" and start.bar_value == 0
    error = pl.progress_view(ProgressEvent("error", message="out of memory"), 1)
    assert error.log_line == "Engine error: out of memory" and error.bar_value is None
    assert pl.progress_view(ProgressEvent("done"), 1) == pl.ProgressView()
    assert [pl.duration(s) for s in (None, 45, 180, 3900)] == ["?", "45 s", "3 min", "1 h 05 min"]


def test_how_a_run_ends_decides_state_status_and_clean_up():
    stopped = pl.finished_view(pl.TRAINING, RunOutcome(130, True, None), 65)
    assert stopped.next_state == State.IDLE and "checkpoint is saved" in stopped.status and "Resume" in stopped.status
    assert not stopped.remove_training_inputs, "an interrupted run keeps its inputs to be resumed"
    forced = pl.finished_view(pl.TRAINING, RunOutcome(-9, True, None, forced=True), 65)
    assert "stopped by force" in forced.status
    done = pl.finished_view(pl.TRAINING, RunOutcome(0, False, None), 65)
    assert done.next_state == State.DONE and done.remove_training_inputs and done.status == "Training finished in 65 s. Press Segment."
    assert not pl.finished_view(pl.TRAINING, RunOutcome(0, False, None), 65, keep_temporary_files=True).remove_training_inputs
    failed = pl.finished_view(pl.TRAINING, RunOutcome(2, False, "Run folder X is in use by process 42"), 3)
    assert failed.next_state == State.FAILED and failed.error_dialog == "Run folder X is in use by process 42"
    assert failed.status == "The training failed: Run folder X is in use by process 42" and not failed.remove_training_inputs
    segmented = pl.finished_view(pl.SEGMENTATION, RunOutcome(0, False, None), 5)
    assert segmented.load_results and not segmented.load_finished_scans_only and segmented.next_state == State.DONE
    cut = pl.finished_view(pl.SEGMENTATION, RunOutcome(130, True, None), 5)
    assert cut.load_results and cut.load_finished_scans_only and cut.next_state == State.IDLE
    assert pl.results_status(1, 5, cancelled=True) == "Segmentation cancelled; 1 finished scan(s) loaded."


def test_runs_list_texts():
    killed = run(RunStatus.INTERRUPTED, "the training process ended without saving its state")
    assert pl.status_cell(killed) == "interrupted, resumable"
    assert pl.run_tooltip(killed).splitlines() == [
        "/runs/atlas-20261206-213015-a1b2c3", "Atlas: atlas", "Updated: 2026-12-06T21:40:00+00:00",
        "the training process ended without saving its state"]
    question = pl.delete_question(run(RunStatus.FINISHED))
    assert "atlas-20261206-213015-a1b2c3 (finished)" in question and "cannot be undone" in question
    assert pl.starting_status(pl.TRAINING, run(RunStatus.NOT_STARTED)).startswith("Training into the new run atlas-")
    assert pl.starting_status(pl.TRAINING, killed, resume=True).startswith("Resuming training atlas-")
    assert "30 s" in pl.cancelling_status(30.0)
