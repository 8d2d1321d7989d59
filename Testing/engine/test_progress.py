"""Progress events: marker lines on a pipe, a bar on a terminal, progress.jsonl always."""

from __future__ import annotations

import io
import json
from pathlib import Path

from RRLMedSAMLib.progress import PROGRESS_MARKER, ProgressReporter, parse_progress_line


def test_events_go_to_the_pipe_and_the_log(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(tmp_path / "progress.jsonl", stream=stream, show_bar=False, min_interval_s=0.0)
    reporter.start_stage("registration", 4)
    for step in range(1, 5):
        reporter.update(step, {"ncc": 0.1 * step}, dice=None)
    reporter.end_stage()
    reporter.done("finished")
    lines = stream.getvalue().splitlines()
    assert all(line.startswith(PROGRESS_MARKER) for line in lines)
    events = [parse_progress_line(line) for line in lines]
    assert [e["event"] for e in events] == ["stage_start"] + ["progress"] * 4 + ["stage_end", "done"]
    assert events[2]["losses"] == {"ncc": 0.2} and events[2]["step"] == 2 and events[2]["total"] == 4
    assert events[-2]["eta_s"] is None and isinstance(events[1]["eta_s"], float)
    logged = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert logged == events


def test_throttling_keeps_the_last_step(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(None, stream=stream, show_bar=False, min_interval_s=60.0)
    reporter.start_stage("segmentation", 100)
    for step in range(1, 101):
        reporter.update(step, {"loss": 1.0 / step})
    steps = [parse_progress_line(line)["step"] for line in stream.getvalue().splitlines()]
    assert steps[-1] == 100 and len(steps) < 10


def test_terminal_mode_draws_a_bar_instead_of_marker_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(tmp_path / "p.jsonl", stream=stream, show_bar=True, min_interval_s=0.0)
    reporter.start_stage("prealign", 2)
    reporter.update(2)
    reporter.done()
    assert PROGRESS_MARKER not in stream.getvalue()
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3


def test_ordinary_log_lines_are_not_events() -> None:
    assert parse_progress_line("epoch 3 loss 0.2") is None
    assert parse_progress_line(PROGRESS_MARKER + "{not json") is None
    assert parse_progress_line(PROGRESS_MARKER + '{"event": "done"}') == {"event": "done"}
