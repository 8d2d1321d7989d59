"""``bench/rrl_decomposition.py``: the two parts of a method's difference to registration-only, from real files."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "rrl_decomposition.py"


def _labelmap(path: Path, boxes: dict[int, tuple[slice, slice, slice]]) -> None:
    """A 10x10x10 labelmap with each id filling its box."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((10, 10, 10), np.uint8)
    for label, box in boxes.items():
        array[box] = label
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def _box(start: int, stop: int) -> tuple[slice, slice, slice]:
    return slice(start, stop), slice(0, 4), slice(0, 4)


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--method-pred", str(tmp_path / "rrl"), "--baseline-pred", str(tmp_path / "plain"),
         "--truth", str(tmp_path / "truth"), "--atlas-label", str(tmp_path / "atlas.nii.gz"), *extra],
        capture_output=True, text=True,
    )


def test_parts_add_up_to_the_difference(tmp_path: Path) -> None:
    # Label 1 (4 slices) is scored; label 2 is in the truth but not in the atlas, so it is not.
    _labelmap(tmp_path / "atlas.nii.gz", {1: _box(0, 4)})
    _labelmap(tmp_path / "truth" / "s1.nii.gz", {1: _box(0, 4), 2: _box(6, 8)})
    _labelmap(tmp_path / "plain" / "s1" / "warped_atlas_label.nii.gz", {1: _box(0, 4)})  # Dice 1
    _labelmap(tmp_path / "rrl" / "s1" / "warped_atlas_label.nii.gz", {1: _box(1, 5)})  # 3 of 4 slices: 0.75
    _labelmap(tmp_path / "rrl" / "s1" / "segmentation.nii.gz", {1: _box(1, 4)})  # 2*3/(3+4) = 6/7
    (tmp_path / "rrl" / "s1" / "qc.json").write_text(json.dumps({"voxels_differing_from_registration": 16}))
    out = tmp_path / "parts.csv"
    result = _run(tmp_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader(out.open()))
    assert float(row["registration_only"]) == pytest.approx(1.0)
    assert float(row["registration_part"]) == pytest.approx(-0.25, abs=1e-6)
    assert float(row["correction_part"]) == pytest.approx(6 / 7 - 0.75, abs=1e-6)
    assert float(row["method"]) - float(row["registration_only"]) == pytest.approx(
        float(row["registration_part"]) + float(row["correction_part"]), abs=1e-6)
    assert row["voxels_differing_from_registration"] == "16"
    assert "voxels the correction changed per scan: 16 to 16" in result.stdout


def test_no_matching_scans_is_a_clear_error(tmp_path: Path) -> None:
    _labelmap(tmp_path / "atlas.nii.gz", {1: _box(0, 4)})
    _labelmap(tmp_path / "truth" / "s1.nii.gz", {1: _box(0, 4)})
    _labelmap(tmp_path / "rrl" / "s1" / "segmentation.nii.gz", {1: _box(0, 4)})
    (tmp_path / "plain").mkdir()
    result = _run(tmp_path)
    assert result.returncode == 2
    assert "no scan has a result in both" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "decomposition.csv").exists()
