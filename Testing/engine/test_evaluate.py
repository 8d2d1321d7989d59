"""Dice / HD95 / Jacobian metrics against hand-computed cases, and the evaluate command."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import OBLIQUE_DIRECTION, assert_clean_error, make_image, run_cli, write_volume

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.metrics import (
    dice_per_label,
    evaluate_pairs,
    find_pairs,
    folding_fraction,
    hd95_per_label,
    jacobian_determinant,
    physical_to_array_displacement,
    summarize,
)


def _cube(shape=(12, 12, 12), start=(3, 3, 3), size=(4, 4, 4), value=1) -> np.ndarray:
    array = np.zeros(shape, dtype=np.uint8)
    array[tuple(slice(s, s + n) for s, n in zip(start, size))] = value
    return array


def test_dice_hand_computed() -> None:
    truth = _cube() + _cube(start=(8, 8, 8), size=(2, 2, 2), value=2)
    pred = _cube(start=(3, 3, 5)) + _cube(start=(0, 0, 0), size=(2, 2, 2), value=3)
    dice = dice_per_label(pred, truth)
    assert list(dice) == [1, 2]
    assert dice[1] == pytest.approx(2 * 32 / (64 + 64))  # half of the cube overlaps
    assert dice[2] == 0.0  # missing from the prediction
    assert math.isnan(dice_per_label(pred, truth, [5])[5])  # absent from both


def test_hd95_uses_physical_spacing() -> None:
    truth = _cube()
    shifted_z = np.roll(truth, 1, axis=0)
    shifted_x = np.roll(truth, 2, axis=2)
    assert hd95_per_label(shifted_z, truth, spacing=(2.0, 1.0, 1.0))[1] == pytest.approx(2.0)
    assert hd95_per_label(shifted_x, truth, spacing=(2.0, 1.0, 1.5))[1] == pytest.approx(3.0)
    assert hd95_per_label(truth, truth, spacing=(1.0, 1.0, 1.0))[1] == 0.0
    assert math.isnan(hd95_per_label(np.zeros_like(truth), truth)[1])
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_label(truth, truth, spacing=(1.0, 1.0))


def test_hd95_is_95th_percentile_not_max() -> None:
    truth = np.zeros((40, 40, 40), dtype=np.uint8)
    truth[5:35, 5:35, 5:35] = 1
    pred = truth.copy()
    pred[20, 20, 36:39] = 1  # a thin spike 4 voxels out: the maximum, but a tiny share of the surface
    assert hd95_per_label(pred, truth)[1] == pytest.approx(0.0)


def test_jacobian_and_folding() -> None:
    shape = (6, 7, 8)
    assert np.allclose(jacobian_determinant(np.zeros((3, *shape))), 1.0)
    z = np.arange(shape[0], dtype=float)[:, None, None] * np.ones(shape)
    stretch = np.zeros((3, *shape))
    stretch[0] = 0.5 * z * 2.0  # u_z = 0.5 * (z in mm) with 2 mm spacing along z
    assert np.allclose(jacobian_determinant(stretch, spacing=(2.0, 1.0, 1.0)), 1.5)
    fold = np.zeros((3, *shape))
    fold[2] = -2.0 * np.arange(shape[2], dtype=float)[None, None, :]
    det = jacobian_determinant(fold)
    assert np.allclose(det, -1.0)
    assert folding_fraction(det) == 1.0
    assert folding_fraction(np.array([1.0, 0.5, -0.1, 0.0])) == 0.5
    assert folding_fraction(np.array([1.0, -1.0]), mask=np.array([True, False])) == 0.0
    with pytest.raises(ValueError):
        jacobian_determinant(np.zeros(shape + (3,)))


def test_physical_to_array_displacement() -> None:
    field = np.zeros((2, 3, 4, 3))
    field[..., 0] = 1.0  # 1 mm along physical x
    assert np.allclose(physical_to_array_displacement(field)[2], 1.0)  # array x component
    swap = (0, 1, 0, 1, 0, 0, 0, 0, 1)  # index i along physical y, index j along physical x
    moved = physical_to_array_displacement(field, swap)
    assert moved.shape == (3, 2, 3, 4)
    assert np.allclose(moved[1], 1.0) and np.allclose(moved[2], 0.0)
    rotated = physical_to_array_displacement(np.ones((2, 2, 2, 3)), OBLIQUE_DIRECTION)
    assert np.allclose(np.linalg.norm(rotated, axis=0), math.sqrt(3))  # rotation keeps lengths


def test_evaluate_pairs_rejects_other_grid() -> None:
    truth = make_image(_cube())
    pred = make_image(_cube(), oblique=False)
    with pytest.raises(InputError, match="different grids"):
        evaluate_pairs([("case", pred, truth)])
    cases = evaluate_pairs([("case", make_image(_cube()), truth)])
    summary = summarize(cases)
    assert summary["mean_dice"] == 1.0 and summary["labels"][0]["name"] == "Label 1"


def _make_folders(tmp_path: Path) -> tuple[Path, Path]:
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth = _cube() + _cube(start=(8, 8, 8), size=(2, 2, 2), value=2)
    write_volume(truth_dir / "alpha.nii.gz", truth)
    write_volume(truth_dir / "beta.nii.gz", truth)
    write_volume(pred_dir / "alpha.nii.gz", _cube(start=(3, 3, 5)))  # label 2 missing
    write_volume(pred_dir / "beta" / "segmentation.nii.gz", truth)  # the segment command's layout
    return pred_dir, truth_dir


def test_find_pairs_accepts_both_layouts(tmp_path: Path) -> None:
    pred_dir, truth_dir = _make_folders(tmp_path)
    pairs, unmatched = find_pairs(pred_dir, truth_dir)
    assert [(n, p.relative_to(pred_dir).as_posix()) for n, p, _ in pairs] == [
        ("alpha", "alpha.nii.gz"), ("beta", "beta/segmentation.nii.gz")]
    assert unmatched == []
    with pytest.raises(InputError, match="both as files or both as folders"):
        find_pairs(pred_dir / "alpha.nii.gz", truth_dir)


def test_evaluate_cli_writes_three_files(tmp_path: Path) -> None:
    pred_dir, truth_dir = _make_folders(tmp_path)
    (truth_dir / "labels.csv").write_text("id,name,r,g,b\n1,Liver,200,0,0\n2,Spleen,0,200,0\n")
    out = tmp_path / "metrics"
    result = run_cli("evaluate", "--pred", str(pred_dir), "--truth", str(truth_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "mean Dice" in result.stdout and "alpha" in result.stdout
    data = json.loads((out / "metrics.json").read_text())
    alpha, beta = data["cases"]
    assert alpha["dice"] == {"1": 0.5, "2": 0.0}
    assert alpha["hd95_mm"]["2"] is None
    assert beta["mean_dice"] == 1.0 and beta["mean_hd95_mm"] == 0.0
    assert data["mean_dice"] == pytest.approx((0.25 + 1.0) / 2)
    spleen = [row for row in data["labels"] if row["id"] == 2][0]
    assert spleen["name"] == "Spleen" and spleen["missing"] == 1 and spleen["dice_mean"] == 0.5
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 4 and rows[1] == {"case": "alpha", "label": "2", "name": "Spleen", "dice": "0.000000", "hd95_mm": ""}
    table = (out / "metrics.md").read_text()
    assert "| 1 | Liver | 2 |" in table and "**0.625**" in table and "Dice 0" in table


def test_evaluate_single_files_and_label_restriction(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pred_dir, truth_dir = _make_folders(tmp_path)
    (tmp_path / "only1.csv").write_text("id,name,r,g,b\n1,Liver,200,0,0\n")
    code = main(["evaluate", "--pred", str(pred_dir / "alpha.nii.gz"), "--truth", str(truth_dir / "alpha.nii.gz"),
                 "--labels", str(tmp_path / "only1.csv"), "--out", str(tmp_path / "m")])
    assert code == 0
    assert "1 case(s), 1 label(s)" in capsys.readouterr().out
    data = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert data["cases"][0]["dice"] == {"1": 0.5}


def test_evaluate_cli_bad_inputs(tmp_path: Path) -> None:
    truth = write_volume(tmp_path / "truth.nii.gz", _cube())
    other_grid = write_volume(tmp_path / "pred.nii.gz", _cube(), oblique=False)
    result = run_cli("evaluate", "--pred", str(other_grid), "--truth", str(truth), "--out", str(tmp_path / "m"))
    assert_clean_error(result, "different grids", "resample")
    assert not (tmp_path / "m" / "metrics.json").exists()


def test_evaluate_missing_file_is_input_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    truth = write_volume(tmp_path / "truth.nii.gz", _cube())
    assert main(["evaluate", "--pred", str(tmp_path / "missing.nii.gz"), "--truth", str(truth)]) == 2
    error = capsys.readouterr().err
    assert "not found" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", "--pred", str(empty), "--truth", str(empty)]) == 2
    assert "No label files" in capsys.readouterr().err


def test_evaluate_non_integer_prediction_is_rejected(tmp_path: Path) -> None:
    truth = write_volume(tmp_path / "truth.nii.gz", _cube())
    pred = tmp_path / "soft.nii.gz"
    sitk.WriteImage(make_image(_cube().astype(np.float32) * 0.7), str(pred))
    with pytest.raises(InputError, match="non-integer"):
        evaluate_pairs([("soft", pred, truth)])
