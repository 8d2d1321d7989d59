"""``bench/volume_calibration.py``: a real tiny run segmented with and without its calibration, scored."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

from tiny_case import REPO

SCRIPT = REPO / "bench" / "volume_calibration.py"


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def test_scores_both_ways_and_refuses_an_uncalibrated_run(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    truth.mkdir()
    for scan in ("scan_a", "scan_b"):  # segment names its folders after the image file
        shutil.copy(tiny_case[f"{scan}_label"], truth / f"{scan}_image.nii.gz")
    out = tmp_path / "out"
    result = _run("--model", tiny_run, "--images", tiny_case["scan_a"], tiny_case["scan_b"], "--truth", truth,
                  "--out", out, "--selection", "scan_a_image")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((out / "per_scan.csv").open()))
    assert [row["case"] for row in rows] == ["scan_a_image", "scan_b_image"]
    assert all(0.3 < float(row[mode]) <= 1.0 for row in rows for mode in ("calibrated", "uncalibrated"))
    table = (out / "summary.md").read_text()
    assert "| uncalibrated |" in table and "| calibrated |" in table and "Recovery: label 5" in table
    assert (out / "calibrated" / "scan_a_image" / "segmentation.nii.gz").is_file()

    bare = tmp_path / "bare"
    shutil.copytree(tiny_run, bare, ignore=shutil.ignore_patterns("volume_calibration.json"))
    refused = _run("--model", bare, "--images", tiny_case["scan_a"], "--truth", truth, "--out", tmp_path / "x")
    assert refused.returncode == 2 and "no volume_calibration.json" in refused.stderr
