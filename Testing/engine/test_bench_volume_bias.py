"""``bench/volume_bias.py``: volumes, false positives/negatives and the log-volume slope, from real files."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "volume_bias.py"
SPACING = (2.0, 1.0, 0.5)  # 1 mm^3 voxels = 0.001 ml


def _cube(path: Path, side: int, shift: int = 0) -> None:
    array = np.zeros((12, 12, 12), np.uint8)
    array[shift:shift + side, :side, :side] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    sitk.WriteImage(image, str(path))


def _case(root: Path, name: str, true_side: int, predicted_side: int, shift: int = 0) -> None:
    folder = root / "pred" / name
    folder.mkdir(parents=True)
    _cube(root / "truth" / f"{name}.nii.gz", true_side)
    _cube(folder / "segmentation.nii.gz", predicted_side, shift)
    _cube(folder / "warped_atlas_label.nii.gz", predicted_side, shift)


def test_volumes_errors_and_slope(tmp_path: Path) -> None:
    (tmp_path / "truth").mkdir()
    _cube(tmp_path / "atlas.nii.gz", 4)  # 64 voxels
    _case(tmp_path, "small", 2, 2)
    _case(tmp_path, "large", 8, 8, shift=1)
    out = tmp_path / "bias.csv"
    result = subprocess.run([sys.executable, str(SCRIPT), "--pred", str(tmp_path / "pred"), "--truth",
                             str(tmp_path / "truth"), "--atlas-label", str(tmp_path / "atlas.nii.gz"), "--out", str(out)],
                            capture_output=True, text=True, check=True)
    rows = {row["case"]: row for row in csv.DictReader(out.open())}
    # large: truth 8^3 = 512 voxels; prediction shifted by one slice keeps 7*8*8 = 448 of them.
    assert float(rows["large"]["true_ml"]) == pytest.approx(0.512)
    assert float(rows["large"]["segmentation_false_positive_ml"]) == pytest.approx(0.064)
    assert float(rows["large"]["segmentation_false_negative_ml"]) == pytest.approx(0.064)
    assert float(rows["large"]["segmentation_dice"]) == pytest.approx(448 / 512, abs=1e-4)
    assert float(rows["small"]["segmentation_dice"]) == pytest.approx(1.0)
    # Both volumes predicted exactly (the shift moves voxels, not volume): the log-volume slope is 1.
    assert "segmentation: 0.01 to 0.51 ml; log-volume slope 1.00" in result.stdout


def test_atlas_volume_for_every_scan_gives_slope_zero(tmp_path: Path) -> None:
    (tmp_path / "truth").mkdir()
    _cube(tmp_path / "atlas.nii.gz", 4)
    _case(tmp_path, "a", 2, 4)
    _case(tmp_path, "b", 6, 4)
    result = subprocess.run([sys.executable, str(SCRIPT), "--pred", str(tmp_path / "pred"), "--truth",
                             str(tmp_path / "truth"), "--atlas-label", str(tmp_path / "atlas.nii.gz")],
                            capture_output=True, text=True, check=True)
    assert "log-volume slope 0.00" in result.stdout
    assert "predicted/true 8.00 on the 1 scans smaller than the atlas" in result.stdout
    assert (tmp_path / "volume_bias.csv").is_file()


def test_too_few_scans_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "truth").mkdir()
    _cube(tmp_path / "atlas.nii.gz", 4)
    _case(tmp_path, "only", 2, 2)
    result = subprocess.run([sys.executable, str(SCRIPT), "--pred", str(tmp_path / "pred"), "--truth",
                             str(tmp_path / "truth"), "--atlas-label", str(tmp_path / "atlas.nii.gz")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "need at least 2 scans with true labels, found 1" in result.stderr
    assert "Traceback" not in result.stderr
