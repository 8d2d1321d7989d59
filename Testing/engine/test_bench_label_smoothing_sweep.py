"""``bench/label_smoothing_sweep.py``: smoothing settings applied to saved segmentations, scored against real files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RRLMedSAMLib.metrics.overlap import dice_score

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "label_smoothing_sweep.py"


def _ellipsoid(radii: tuple[float, float, float]) -> np.ndarray:
    grid = np.indices((24, 32, 32)).astype(float)
    centre = (11.5, 15.5, 15.5)
    return (sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0).astype(np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(image, str(path))


def _dataset(root: Path) -> None:
    """Atlas and two scans, each a smooth ellipsoid; the 'predictions' are the truths with a ragged fringe."""
    (root / "truth").mkdir()
    _write(root / "truth" / "atlas.nii.gz", _ellipsoid((7, 10, 9)))
    rng = np.random.default_rng(0)
    for name, radii in (("scan_a", (6, 11, 9)), ("scan_b", (8, 9, 10))):
        truth = _ellipsoid(radii)
        _write(root / "truth" / f"{name}.nii.gz", truth)
        shell = ndimage.binary_dilation(truth) & (truth == 0)
        inner = truth.astype(bool) & ~ndimage.binary_erosion(truth)
        ragged = truth.copy()
        ragged[shell & (rng.random(truth.shape) < 0.4)] = 1
        ragged[inner & (rng.random(truth.shape) < 0.4)] = 0
        (root / "pred" / name).mkdir(parents=True)
        _write(root / "pred" / name / "segmentation.nii.gz", ragged)


def _run(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--pred", str(root / "pred"), "--truth", str(root / "truth"),
                           "--atlas-label", str(root / "truth" / "atlas.nii.gz"), *extra],
                          capture_output=True, text=True)


def test_sweep_scores_each_setting_and_splits_selection_from_held_out(tmp_path: Path) -> None:
    _dataset(tmp_path)
    result = _run(tmp_path, "--settings", "1", "auto", "--selection", "scan_a", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "per_scan.csv").open()))
    assert sorted((row["case"], row["setting"]) for row in rows) == [
        ("scan_a", "0.0"), ("scan_a", "1.0"), ("scan_a", "auto"), ("scan_b", "0.0"), ("scan_b", "1.0"), ("scan_b", "auto")]
    dice = {(row["case"], row["setting"]): float(row["dice"]) for row in rows}
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / "scan_b" / "segmentation.nii.gz")))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "truth" / "scan_b.nii.gz")))
    assert dice["scan_b", "0.0"] == pytest.approx(dice_score(pred == 1, truth == 1), abs=1e-5)
    for case in ("scan_a", "scan_b"):  # smoothing a ragged copy of a smooth truth brings it closer
        assert dice[case, "auto"] > dice[case, "0.0"] and dice[case, "1.0"] > dice[case, "0.0"]
    table = (tmp_path / "out" / "summary.md").read_text()
    auto_line = next(line for line in table.splitlines() if line.startswith("| auto |"))
    cells = [cell.strip() for cell in auto_line.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(dice["scan_a", "auto"], abs=1e-4)  # selection = scan_a
    assert float(cells[3]) == pytest.approx(dice["scan_b", "auto"], abs=1e-4)  # held out = scan_b
    assert cells[4] == "2 / 0" and float(cells[5]) > 0


def test_no_scan_with_a_true_label_is_a_clear_error(tmp_path: Path) -> None:
    _dataset(tmp_path)
    for name in ("scan_a", "scan_b"):
        (tmp_path / "truth" / f"{name}.nii.gz").unlink()
    result = _run(tmp_path)
    assert result.returncode == 2
    assert "has a true label" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_setting_is_named_with_what_is_allowed(tmp_path: Path) -> None:
    result = _run(tmp_path, "--settings", "-1")
    assert result.returncode == 2
    assert "--settings: must be 0 or more (mm) or 'auto', not '-1'" in result.stderr and "Traceback" not in result.stderr
