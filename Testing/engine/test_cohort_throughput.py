"""bench/cohort_throughput.py on a tiny case: every layout segments every scan once, the machine is named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_throughput_layouts_side_by_side(tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("scan_a", "scan_b"):
        shutil.copy(tiny_case[name], scans / f"{name}.nii.gz")
    result_path = tmp_path / "throughput.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "cohort_throughput.py"), "--model", str(tiny_run), "--scans", str(scans),
         "--count", "2", "--out", str(result_path), "--", "--refinement-steps", "0", "--label-smoothing-mm", "0"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=400,
    )
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    report = json.loads(result_path.read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    layouts = report["layouts"]
    assert set(layouts) == {"1 process x 2 threads", "1 process x 2 threads, overlap", "2 processes x 1 thread"}
    for entry in layouts.values():
        (run,) = entry["runs"]
        assert run["scans"] == 2 and run["errors"] == [] and entry["median_scans_per_minute"] > 0
    assert layouts["2 processes x 1 thread"]["runs"][0]["threads_per_process"] == 1
    assert "| 2 processes x 1 thread |" in result.stdout
