"""segment never deletes what it did not write: existing scan folders, --overwrite, stale results, evaluate's report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from guard_helpers import quick_train_args
from tiny_case import make_case

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.commands.segment import RESULT_FILES


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("segment_outputs")
    case = make_case(root / "case")
    assert main(quick_train_args(case, root / "run")) == 0
    return case, root / "run"


def _segment(case: dict[str, Path], run: Path, out: Path, *extra: str) -> int:
    return main(["segment", "--model", str(run), "--image", str(case["scan_a"]), "--out", str(out),
                 "--refinement-steps", "0", *extra])


def test_user_files_survive_with_and_without_overwrite(
    model: tuple[dict[str, Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case, run = model
    folder = tmp_path / "seg" / "scan_a_image"
    folder.mkdir(parents=True)
    notes = folder / "notes.txt"
    notes.write_text("reviewed by Dr. A")
    (tmp_path / "seg" / "other.txt").write_text("keep me too")

    assert _segment(case, run, tmp_path / "seg") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]

    assert _segment(case, run, tmp_path / "seg", "--overwrite") == 0
    assert notes.read_text() == "reviewed by Dr. A"
    assert (tmp_path / "seg" / "other.txt").read_text() == "keep me too"
    written = {p.name for p in folder.iterdir()}
    assert written >= {"notes.txt", "segmentation.nii.gz", "qc.json", "deformation.nrrd"}
    first = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.nii.gz")))
    assert set(np.unique(first)) <= {0, 5, 9, 12}

    stale = folder / "prompt_mask.nii.gz"
    stale.write_bytes(b"an earlier run's result")
    before = (folder / "qc.json").stat().st_mtime_ns
    assert _segment(case, run, tmp_path / "seg", "--overwrite") == 0
    assert notes.read_text() == "reviewed by Dr. A"
    assert (folder / "qc.json").stat().st_mtime_ns >= before
    assert not stale.exists(), "a result file this segmentation did not produce was left from an earlier one"
    assert {p.name for p in folder.iterdir()} - set(RESULT_FILES) == {"notes.txt"}
    assert not [p for p in (tmp_path / "seg").iterdir() if p.name.endswith(".partial")]


def test_out_set_to_the_model_folder_keeps_the_run(
    model: tuple[dict[str, Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case, run = model
    atlas = tmp_path / "atlas.nii.gz"
    atlas.write_bytes(case["scan_a"].read_bytes())
    before = sorted((p.name, p.stat().st_size) for p in (run / "atlas").iterdir())
    assert main(["segment", "--model", str(run), "--image", str(atlas), "--out", str(run)]) == 2
    assert "inside the model folder" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_size) for p in (run / "atlas").iterdir()) == before


def test_evaluate_reports_predictions_without_truth(
    model: tuple[dict[str, Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case, _ = model
    pred, truth = tmp_path / "pred", tmp_path / "truth"
    pred.mkdir()
    truth.mkdir()
    for name in ("case1", "stray"):
        (pred / f"{name}.nii.gz").write_bytes(case["scan_a_label"].read_bytes())
    (truth / "case1.nii.gz").write_bytes(case["scan_a_label"].read_bytes())
    assert main(["evaluate", "--pred", str(pred), "--truth", str(truth), "--out", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "no truth for 1 prediction(s)" in err and "stray" in err
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["unmatched_predictions"] == ["stray"]


def test_stop_file_between_scans_keeps_the_finished_scans(
    model: tuple[dict[str, Path], Path], tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import RRLMedSAMLib.commands.segment as segment

    case, run = model
    stop, out = tmp_path / "stop", tmp_path / "seg"
    original = segment.segment_scan

    def segment_then_request_stop(*args: object, **kwargs: object) -> Path:
        folder = original(*args, **kwargs)
        stop.write_text("")
        return folder

    monkeypatch.setattr(segment, "segment_scan", segment_then_request_stop)
    monkeypatch.setenv("RRLMEDSAM_STOP_FILE", str(stop))
    assert main(["segment", "--model", str(run), "--image", str(case["scan_a"]), str(case["scan_b"]), "--out", str(out),
                 "--refinement-steps", "0"]) == 130
    assert "segmentation stopped" in capsys.readouterr().err
    assert (out / "scan_a_image" / "qc.json").exists() and not (out / "scan_b_image").exists()
    assert stop.exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
