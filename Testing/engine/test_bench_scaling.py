"""``bench/scaling.py`` end to end on the tiny phantom dataset: real child processes, real plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_fixtures import make_tiny_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scaling.py"


@pytest.mark.slow
def test_scaling_measures_every_size_and_scan_count(tmp_path: Path) -> None:
    dataset = make_tiny_dataset(tmp_path / "dataset")
    out = tmp_path / "scaling"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset", str(dataset), "--atlas", "atlas", "--out", str(out),
         "--sizes", "16", "24", "--scan-counts", "1", "2", "--steps", "2", "--methods", "affine", "plain",
         "--preset", "tiny", "--device", "cpu", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "scaling.json").read_text())
    assert report["sizes"] == [16, 24] and report["scan_counts"] == [1, 2]
    for method in ("affine", "plain"):
        assert len(report["volume"][method]["segment_s"]) == 2
        assert all(seconds > 0 for seconds in report["volume"][method]["segment_s"])
        assert all(mib > 100 for mib in report["volume"][method]["peak_ram_mb"])
    assert len(report["training"]["train_s"]) == 2
    for name in ("scaling_volume.png", "scaling_scans.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
