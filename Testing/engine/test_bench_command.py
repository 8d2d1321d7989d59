"""``rrlmedsam bench --quick`` end to end through the real command, and its bad-input messages."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from bench_fixtures import make_tiny_dataset
from conftest import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("bench_dataset"))


def test_quick_benchmark_writes_every_table_and_figure(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = run_cli("bench", "--dataset", str(dataset), "--atlas", "atlas", "--out", str(out), "--quick",
                     "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("summary.md", "results.json", "methods.csv", "per_scan.csv", "per_structure.csv",
                 "dice_boxplot.png", "dice_vs_time.png"):
        assert (out / name).is_file(), name
    document = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in document["methods"]}
    expected = {"affine", "registration-only", "plain"}
    if importlib.util.find_spec("ants") is not None:
        expected.add("ants-syn")
        assert rows["ants-syn"]["speed_ratio_vs_ref"] == pytest.approx(1.0)
        assert rows["plain"]["speed_ratio_vs_ref"] is not None
    assert set(rows) == expected
    for row in rows.values():
        assert row["status"] == "ok" and row["scans"] == 2
        assert 0.0 <= row["mean_dice"] <= 1.0
        assert row["peak_ram_segment_mb"] > 0 and row["segment_s_per_scan"] > 0
    assert rows["plain"]["train_s"] > 0 and rows["plain"]["parameters"] > 0
    assert rows["registration-only"]["mean_dice"] > 0.5
    with open(out / "per_structure.csv", newline="") as handle:
        structures = list(csv.DictReader(handle))
    assert {r["label"] for r in structures} == {"5", "9", "12"}
    assert document["machine"]["cores"] >= 1 and document["settings"]["preset"] == "tiny"

    again = run_cli("bench", "--dataset", str(dataset), "--atlas", "atlas", "--out", str(out), "--quick",
                    "--device", "cpu", "--methods", "affine", timeout=300)
    assert again.returncode == 0, again.stderr
    assert "affine" in again.stdout


def test_unknown_atlas_is_a_clean_error(dataset: Path, tmp_path: Path) -> None:
    result = run_cli("bench", "--dataset", str(dataset), "--atlas", "nobody", "--out", str(tmp_path / "o"), "--quick")
    assert_clean_error(result, "nobody", "atlas")


def test_unknown_method_is_a_clean_error(dataset: Path, tmp_path: Path) -> None:
    result = run_cli("bench", "--dataset", str(dataset), "--atlas", "atlas", "--out", str(tmp_path / "o"),
                     "--methods", "magic")
    assert_clean_error(result, "magic")


def test_missing_dataset_is_a_clean_error(tmp_path: Path) -> None:
    result = run_cli("bench", "--dataset", str(tmp_path / "none"), "--atlas", "a", "--out", str(tmp_path / "o"))
    assert_clean_error(result, "not found")


def test_cuda_request_without_gpu_is_a_clean_error(dataset: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    result = run_cli("bench", "--dataset", str(dataset), "--atlas", "atlas", "--out", str(tmp_path / "o"),
                     "--device", "cuda", "--quick")
    assert_clean_error(result, "cuda")


def test_gpu_measurements_are_absent_on_cpu() -> None:
    from RRLMedSAMLib.bench.machine import describe_machine, machine_slug
    from RRLMedSAMLib.bench.worker import _gpu_peak_mb, peak_rss_mb

    assert _gpu_peak_mb("cpu") is None
    assert peak_rss_mb() > 0
    info = describe_machine("cpu")
    assert info["gpu"] is None and machine_slug(info) == f"cpu-{info['cores']}cores"
    assert machine_slug({"gpu": "NVIDIA H100 80GB HBM3", "cores": 16}) == "gpu-nvidia-h100-80gb-hbm3"
