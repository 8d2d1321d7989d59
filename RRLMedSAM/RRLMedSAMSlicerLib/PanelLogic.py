"""The panel's decisions, Qt-free: what is enabled, what a progress event shows, what the status says.

:mod:`Widget` only copies these values onto widgets; everything here is tested on plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass

from RRLMedSAMSlicerLib.ProcessRunner import ProgressEvent, RunOutcome
from RRLMedSAMSlicerLib.RunsLogic import RunInfo, RunStatus
from RRLMedSAMSlicerLib.RunState import State

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4, or slicer-core without the application

    def _(text: str) -> str:
        return text


TRAINING, SEGMENTATION = "training", "segmentation"


@dataclass(frozen=True)
class PanelInputs:
    """What the enabled states depend on."""

    state: State
    has_atlas: bool
    has_scans: bool
    selected_run: RunInfo | None
    label_smoothing_auto: bool
    resuming: bool = False


@dataclass(frozen=True)
class Controls:
    """Text and enabled state of every control that changes."""

    train_text: str
    train_enabled: bool
    segment_text: str
    segment_enabled: bool
    resume_text: str
    resume_enabled: bool
    delete_enabled: bool
    settings_enabled: bool
    label_smoothing_enabled: bool


def run_action_text(run: RunInfo | None) -> str:
    """The runs list's action button: resume an interrupted run, train a failed one again."""
    if run is not None and run.status in (RunStatus.FAILED, RunStatus.NOT_STARTED):
        return _("Train again")
    return _("Resume")


def controls(inputs: PanelInputs) -> Controls:
    """Enabled states: one run at a time; the running action's button is its Cancel button."""
    state, run = inputs.state, inputs.selected_run
    busy = state in (State.INSTALLING, State.TRAINING, State.SEGMENTING, State.CANCELLING)
    training_new = state == State.TRAINING and not inputs.resuming
    resuming = state == State.TRAINING and inputs.resuming
    can_continue = run is not None and run.status in (RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.NOT_STARTED)
    return Controls(
        train_text=_("Cancel") if training_new else _("Train"),
        train_enabled=training_new or (not busy and inputs.has_atlas and inputs.has_scans),
        segment_text=_("Cancel") if state == State.SEGMENTING else _("Segment"),
        segment_enabled=state == State.SEGMENTING or (not busy and inputs.has_scans and run is not None and run.usable),
        resume_text=_("Cancel") if resuming else run_action_text(run),
        resume_enabled=resuming or (not busy and can_continue),
        delete_enabled=not busy and run is not None and run.status != RunStatus.IN_USE,
        settings_enabled=not busy,
        label_smoothing_enabled=not inputs.label_smoothing_auto,
    )


def status_cell(run: RunInfo) -> str:
    """The runs list's state column: the state word, and the engine's message when there is one."""
    words = {
        RunStatus.FINISHED: _("finished"), RunStatus.INTERRUPTED: _("interrupted, resumable"),
        RunStatus.FAILED: _("failed"), RunStatus.IN_USE: _("in use"), RunStatus.NOT_STARTED: _("not started"),
    }
    return words[run.status]


def run_tooltip(run: RunInfo) -> str:
    """Everything known about a run, for the list's tool tip."""
    lines = [str(run.folder)]
    if run.atlas_name:
        lines.append(_("Atlas: {name}").format(name=run.atlas_name))
    if run.updated:
        lines.append(_("Updated: {time}").format(time=run.updated))
    if run.message:
        lines.append(run.message)
    return "\n".join(lines)


def delete_question(run: RunInfo) -> str:
    """The confirmation asked before a run folder is deleted."""
    return _("Delete the run {name} ({state}) and everything in its folder?\n{folder}\nThis cannot be undone.").format(
        name=run.name, state=status_cell(run), folder=run.folder)


def duration(seconds: float | None) -> str:
    """``45 s``, ``3 min``, ``1 h 05 min``."""
    if seconds is None:
        return "?"
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


@dataclass(frozen=True)
class ProgressView:
    """What one progress event changes: bar (0..1000) and its text, details line, a log line."""

    bar_value: int | None = None
    bar_format: str | None = None
    details: str | None = None
    log_line: str | None = None


def progress_view(event: ProgressEvent, elapsed_s: float) -> ProgressView:
    """How the panel shows ``event`` (stage starts are also logged; errors only logged)."""
    if event.event == "error":
        return ProgressView(log_line=_("Engine error: {message}").format(message=event.message))
    if event.event not in ("progress", "stage_start", "stage_end"):
        return ProgressView()
    log_line = None
    if event.event == "stage_start":
        log_line = _("Stage {stage}: {message}").format(stage=event.stage, message=event.message or "")
    eta = _(", about {time} left").format(time=duration(event.eta_s)) if event.eta_s is not None else ""
    parts = [event.message] if event.event == "progress" and event.message else []
    parts += [f"{name} {value:.4g}" for name, value in event.losses.items()]
    if event.dice is not None:
        parts.append(_("Dice on pseudo labels {dice:.3f}").format(dice=event.dice))
    parts.append(_("elapsed {time}").format(time=duration(elapsed_s)))
    return ProgressView(int(round(event.fraction * 1000)), f"{event.stage} {event.step}/{event.total}{eta}", " · ".join(parts), log_line)


def starting_status(kind: str, run: RunInfo | None = None, resume: bool = False) -> str:
    if kind == SEGMENTATION:
        return _("Segmenting with run {name}...").format(name=run.name) if run is not None else _("Segmenting...")
    if resume and run is not None:
        return _("Resuming training {name}...").format(name=run.name)
    return _("Training into the new run {name}...").format(name=run.name) if run is not None else _("Training...")


def cancelling_status(grace_s: float) -> str:
    return _("Stopping: the engine saves its checkpoint and exits (it is stopped by force after {seconds:.0f} s)...").format(
        seconds=grace_s)


@dataclass(frozen=True)
class FinishedView:
    """What the panel does when an engine run ends."""

    next_state: State
    status: str
    error_dialog: str | None = None
    load_results: bool = False
    load_finished_scans_only: bool = False
    remove_training_inputs: bool = False


def finished_view(kind: str, outcome: RunOutcome, elapsed_s: float, keep_temporary_files: bool = False) -> FinishedView:
    """The next state, status line and clean-up after a training or segmentation ended."""
    elapsed = duration(elapsed_s)
    if outcome.cancelled:
        if kind == TRAINING:
            how = _("stopped by force; resume continues from the last saved checkpoint") if outcome.forced else _(
                "its checkpoint is saved")
            return FinishedView(State.IDLE, _("Training stopped after {time} ({how}). Choose it in the runs list and press "
                                              "Resume to continue.").format(time=elapsed, how=how))
        return FinishedView(State.IDLE, _("Segmentation cancelled; the scans already finished are loaded."),
                            load_results=True, load_finished_scans_only=True)
    if not outcome.succeeded:
        message = outcome.error_message or _("The engine failed.")
        return FinishedView(State.FAILED, _("The {kind} failed: {message}").format(kind=kind, message=message), error_dialog=message)
    if kind == TRAINING:
        return FinishedView(State.DONE, _("Training finished in {time}. Press Segment.").format(time=elapsed),
                            remove_training_inputs=not keep_temporary_files)
    return FinishedView(State.DONE, _("Segmented in {time}.").format(time=elapsed), load_results=True)


def results_status(count: int, elapsed_s: float, cancelled: bool = False) -> str:
    if cancelled:
        return _("Segmentation cancelled; {count} finished scan(s) loaded.").format(count=count)
    return _("Segmented {count} scan(s) in {time}.").format(count=count, time=duration(elapsed_s))
