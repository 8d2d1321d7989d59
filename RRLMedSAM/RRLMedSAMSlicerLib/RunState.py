"""The widget's state machine (Qt-free so it can be tested without Slicer)."""

from __future__ import annotations

from enum import Enum


class State(Enum):
    IDLE = "idle"
    INSTALLING = "installing"
    TRAINING = "training"
    SEGMENTING = "segmenting"
    CANCELLING = "cancelling"
    FAILED = "failed"
    DONE = "done"


_START = {State.INSTALLING, State.TRAINING, State.SEGMENTING}
ALLOWED: dict[State, set[State]] = {
    State.IDLE: _START,
    State.DONE: _START | {State.IDLE},
    State.FAILED: _START | {State.IDLE},
    State.INSTALLING: {State.TRAINING, State.SEGMENTING, State.IDLE, State.DONE, State.FAILED},
    State.TRAINING: {State.CANCELLING, State.DONE, State.FAILED, State.IDLE},
    State.SEGMENTING: {State.CANCELLING, State.DONE, State.FAILED, State.IDLE},
    State.CANCELLING: {State.IDLE, State.DONE, State.FAILED},
}
BUSY = {State.INSTALLING, State.TRAINING, State.SEGMENTING, State.CANCELLING}


class RunStateMachine:
    """Current state with checked transitions; ``listener(old, new)`` is told of every change."""

    def __init__(self, listener=None) -> None:
        self.state = State.IDLE
        self.listener = listener

    @property
    def busy(self) -> bool:
        """True while something runs (the action button is a Cancel button then)."""
        return self.state in BUSY

    def can_go(self, new: State) -> bool:
        return new in ALLOWED[self.state]

    def go(self, new: State) -> None:
        if not self.can_go(new):
            raise RuntimeError(f"Cannot go from {self.state.value} to {new.value} while a run is in progress.")
        old, self.state = self.state, new
        if self.listener is not None:
            self.listener(old, new)
