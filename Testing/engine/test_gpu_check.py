"""bench/gpu_check.sh: runs end to end on CPU with --quick, and refuses CUDA where there is none."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO, SHARED_DATA, assert_clean_error

SCRIPT = REPO / "bench" / "gpu_check.sh"


def _check(*args: str, out: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OUT=str(out))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)


@pytest.mark.skipif(not (SHARED_DATA / "prostate_mr").is_dir(), reason="needs the shared prostate data")
def test_quick_cpu_check_writes_json_and_table(tmp_path: Path) -> None:
    result = _check("--device", "cpu", "--quick", out=tmp_path / "check")
    assert result.returncode == 0, (result.stdout, result.stderr[-3000:])
    report = json.loads((tmp_path / "check" / "gpu_check.json").read_text())
    steps = report["steps"]
    assert [steps[name]["status"] for name in ("tiny_train", "fast_prostate", "segment_160x192x224")] == ["ok"] * 3
    assert steps["torchrun_2gpu"]["status"] == "skipped"
    assert steps["segment_160x192x224"]["scan_size_xyz"] == [40, 48, 56]
    assert "networks_s" in steps["segment_160x192x224"]["stage_timings_s"]
    assert all(steps[name]["wall_s"] > 0 and steps[name]["peak_gpu_mb"] is None for name in ("tiny_train", "fast_prostate"))
    assert report["machine"]["cores"] >= 1 and report["device"] == "cpu"
    table = (tmp_path / "check" / "gpu_check.md").read_text()
    assert "| fast_prostate | ok |" in table and "| torchrun_2gpu | skipped |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_requested_without_gpu_is_one_clear_error(tmp_path: Path) -> None:
    result = _check(out=tmp_path / "check")
    result.stderr = result.stderr.replace("gpu_check: error:", "rrlmedsam: error:")
    assert_clean_error(result, "--device cuda was requested", "no CUDA GPU")
    assert not (tmp_path / "check").exists()
