"""A training that fails after its run folder is set up is marked failed; a plain retry starts afresh
and clears only the engine's own files; refused requests leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from guard_helpers import quick_train_args, snapshot
from tiny_case import make_case

import RRLMedSAMLib.training.trainer as trainer
from RRLMedSAMLib.cli import main
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.run.state import read_run_state


def test_failed_run_is_marked_and_a_plain_retry_starts_afresh(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = make_case(tmp_path / "case")
    run = tmp_path / "run"

    def failing(*args: object, **kwargs: object) -> None:
        raise InputError("the disk filled up while preparing")

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "prepare_training_data", failing)
        assert main(quick_train_args(case, run)) == 2
    assert "the disk filled up" in capsys.readouterr().err
    state = read_run_state(run)
    assert state["state"] == "failed" and state["message"] == "the disk filled up while preparing"
    assert not state["in_use"]
    assert (run / "config.json").exists() and (run / "atlas" / "atlas_image.nii.gz").exists()

    (run / "notes.txt").write_text("my notes")
    (run / "atlas" / "my_atlas.nii.gz").write_bytes(case["atlas_image"].read_bytes())
    (run / "cache").mkdir(exist_ok=True)
    (run / "cache" / "mine.json").write_text("{}")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "an_old_stage.safetensors").write_bytes(b"stale engine checkpoint")
    assert main(quick_train_args(case, run)) == 0
    assert read_run_state(run)["state"] == "finished"
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "atlas" / "my_atlas.nii.gz").read_bytes() == case["atlas_image"].read_bytes()
    assert (run / "cache" / "mine.json").read_text() == "{}"
    assert not (run / "checkpoints" / "an_old_stage.safetensors").exists()
    assert (run / "model.safetensors").exists()


def test_a_new_run_in_a_folder_of_user_files_deletes_none_of_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    case = make_case(tmp_path / "case")
    run = tmp_path / "data"
    (run / "atlas").mkdir(parents=True)
    (run / "atlas" / "atlas_image.nii.gz").write_bytes(b"the user's own file of that name")
    before = snapshot(tmp_path)
    assert main(quick_train_args(case, run)) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    (run / "atlas" / "atlas_image.nii.gz").rename(run / "atlas" / "patient.nii.gz")
    assert main(quick_train_args(case, run)) == 0
    assert (run / "atlas" / "patient.nii.gz").read_bytes() == b"the user's own file of that name"


def test_an_unexpected_error_after_setup_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = make_case(tmp_path / "case")
    run = tmp_path / "run"
    monkeypatch.setattr(trainer, "prepare_training_data", lambda *a, **k: 1 / 0)
    monkeypatch.setenv("RRLMEDSAM_LOG_DIR", str(tmp_path / "logs"))
    assert main(quick_train_args(case, run)) == 1
    assert "internal error: ZeroDivisionError" in capsys.readouterr().err
    assert json.loads((run / "run_state.json").read_text())["message"].startswith("ZeroDivisionError")


def test_a_refused_train_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    case = make_case(tmp_path / "case")
    before = snapshot(tmp_path)
    out = tmp_path / "new" / "deeper" / "run"
    assert main(quick_train_args(case | {"scan_a": tmp_path / "missing.nii.gz"}, out)) == 2
    assert snapshot(tmp_path) == before
    assert main(quick_train_args(case, tmp_path / "nothing", "--resume")) == 2
    assert snapshot(tmp_path) == before
    assert "not found" in capsys.readouterr().err
