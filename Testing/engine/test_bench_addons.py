"""``bench/addons.py`` on a tiny dataset: the default training, three variants segmented, the table written.

The variants that need their own training (atlas prior, refinement) are the same code path with
stage sharing; the benchmark itself runs them, the test keeps to one training for time.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from bench_fixtures import make_tiny_dataset
from tiny_case import REPO

pytestmark = pytest.mark.slow
SCRIPT = REPO / "bench" / "addons.py"


def _run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=1200)


def test_each_add_on_is_scored_on_and_off_on_the_held_out_scans(tmp_path: Path) -> None:
    dataset = make_tiny_dataset(tmp_path / "dataset")
    out = tmp_path / "out"
    args = ("--dataset", dataset, "--atlas", "atlas", "--selection", "scan_a", "--out", out, "--preset", "tiny",
            "--ensemble", "2", "--variants", "no-label-smoothing", "no-volume-calibration", "ensemble-2")
    result = _run(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((out / "per_scan.csv").open()))
    assert [row["case"] for row in rows] == ["scan_b"], "the atlas and the selection scan are not reported"
    variants = {"all-on", "no-label-smoothing", "no-volume-calibration", "ensemble-2"}
    assert set(rows[0]) == {"case"} | variants
    assert all(0.2 < float(rows[0][name]) <= 1.0 for name in variants)
    table = (out / "summary.md").read_text()
    for addon in ("volume calibration", "label smoothing", "registration ensemble (2"):
        assert f"| {addon}" in table
    assert "atlas prior" not in table, "an add-on whose variant did not run gets no line"
    log = (out / "commands.log").read_text()
    assert log.count("-m RRLMedSAMLib train") == 1

    again = _run(*args)
    assert again.returncode == 0 and (out / "commands.log").read_text() == log, "a finished run is not redone"
