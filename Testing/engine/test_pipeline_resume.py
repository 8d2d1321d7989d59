"""Interrupting a real training process at any moment loses nothing: resume gives identical weights."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from tiny_case import assert_same_weights, copy_prepared, engine, start_training, train_args, wait_for_step

from RRLMedSAMLib.registration.volume_calibration import read_volume_calibration

STEPS = ("--set", "registration_steps=40", "--set", "segmentation_steps=16", "--volume-calibration", "on")


@pytest.fixture(scope="module")
def reference(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted training."""
    out = tmp_path_factory.mktemp("reference") / "run"
    result = engine(*train_args(tiny_case, out, *STEPS))
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize("kill_signal", [signal.SIGKILL, signal.SIGTERM])
def test_interrupted_training_resumes_to_identical_weights(
    tiny_case: dict[str, Path], reference: Path, tmp_path: Path, kill_signal: int
) -> None:
    out = tmp_path / "run"
    copy_prepared(reference, out)
    process = start_training(train_args(tiny_case, out, *STEPS, "--resume"))
    wait_for_step(out, "registration", 9, process)
    process.send_signal(kill_signal)
    code = process.wait(timeout=60)
    assert not (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "registration.safetensors").exists()
    if kill_signal == signal.SIGTERM:
        assert code == 130
        assert "resume" in process.stderr.read().lower()
    resumed = engine(*train_args(tiny_case, out, *STEPS, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)


def test_training_interrupted_in_its_volume_calibration_resumes_and_finishes_it(
    tiny_case: dict[str, Path], reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    copy_prepared(reference, out)
    process = start_training(train_args(tiny_case, out, *STEPS, "--resume"))
    wait_for_step(out, "volume_calibration", 2, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (out / "volume_calibration.json").exists()
    resumed = engine(*train_args(tiny_case, out, *STEPS, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, out)
    expected = read_volume_calibration(reference).recovery
    recovery = read_volume_calibration(out).recovery
    assert set(recovery) == set(expected)
    # the calibration pre-aligns afresh, and ITK's affine registration is not bitwise repeatable
    assert all(abs(recovery[label] - expected[label]) < 0.05 for label in expected)
    assert json.loads((out / "model_card.json").read_text())["volume_calibration"]["applied"] is True


def test_sigterm_checkpoints_the_last_completed_step(tiny_case: dict[str, Path], reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    copy_prepared(reference, out)
    process = start_training(train_args(tiny_case, out, *STEPS, "--resume"))
    wait_for_step(out, "registration", 6, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, process.stderr.read()[-3000:]
    from RRLMedSAMLib.run.checkpoint import read_checkpoint

    _, meta, _ = read_checkpoint(out / "checkpoints" / "registration.safetensors")
    reported = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    last_step = max(e["step"] for e in reported if e["stage"] == "registration" and e["event"] == "progress")
    assert meta["step"] >= last_step


def test_resume_without_a_training_is_refused(tiny_case: dict[str, Path], tmp_path: Path) -> None:
    result = engine(*train_args(tiny_case, tmp_path / "nothing", "--resume"))
    assert result.returncode == 2 and "nothing to resume" in result.stderr.lower()


def test_training_into_an_existing_run_needs_resume(tiny_case: dict[str, Path], reference: Path) -> None:
    result = engine(*train_args(tiny_case, reference))
    assert result.returncode == 2 and "--resume" in result.stderr
