"""``bench/segment_settings.py``: segment-time settings compared on a trained atlas run, resumable, bad arguments refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench_fixtures import make_tiny_dataset
from tiny_case import REPO

SCRIPT = REPO / "bench" / "segment_settings.py"


def test_settings_are_compared_on_copies_of_the_run_and_a_killed_comparison_continues(tiny_run: Path, tmp_path: Path) -> None:
    dataset = make_tiny_dataset(tmp_path / "data")
    runs = tmp_path / "atlas-choices"
    shutil.copytree(tiny_run, runs / "atlas-atlas" / "methods" / "plain" / "run")
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    out = tmp_path / "compare"
    command = [sys.executable, str(SCRIPT), "--dataset", str(dataset), "--runs", str(runs), "--atlases", "atlas",
               "--scans", "atlas", "scan_a", "--setting", "own", "--setting", "network-only",
               "instance_optimization_steps=0", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"atlas/own", "atlas/network-only"} and set(results["atlas/own"]) == {"scan_a"}  # not the atlas itself
    own, network_only = results["atlas/own"]["scan_a"], results["atlas/network-only"]["scan_a"]
    assert 0.3 < own["dice"] <= 1.0 and 0.0 <= network_only["dice"] <= 1.0 and own["folding"] <= 0.005
    assert own["registration_s"] > 0 and "instance_optimization_steps=0" in (out / "summary.md").read_text()
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before  # the trained run is only copied

    results["atlas/network-only"]["scan_a"]["dice"] = -1.0  # a finished entry is kept, not run again
    (out / "results.json").write_text(json.dumps(results))
    again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "mean Dice" not in again.stdout
    assert json.loads((out / "results.json").read_text())["atlas/network-only"]["scan_a"]["dice"] == -1.0

    for bad in (["--setting", "x", "no_such_value=1"], ["--atlases", "nobody"], ["--setting", "own"]):
        wrong = [*command[:command.index("--out")], *bad, "--out", str(tmp_path / "bad")]
        refused = subprocess.run(wrong, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
        assert not (tmp_path / "bad").exists()
