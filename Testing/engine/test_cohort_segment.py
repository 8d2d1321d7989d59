"""Cohort segmentation with real processes: torchrun and --shard K/N share a list, each scan is done once,
a rerun skips what is finished, cohort.csv is complete; bad lists and shards stop before writing anything."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPO, assert_clean_error, run_cli
from guard_helpers import engine_env, start_engine

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.inference.cohort import REQUIRED_RESULTS

FAST = ("--refinement-steps", "0", "--label-smoothing-mm", "0")


@pytest.fixture(scope="module")
def cohort(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A list file of 4 tiny scans (relative paths, a comment, a blank line): two scans and renamed copies."""
    folder = tmp_path_factory.mktemp("cohort")
    scans = folder / "scans"
    scans.mkdir()
    for name, source in (("s1", "scan_a"), ("s2", "scan_b"), ("s3", "scan_a"), ("s4", "scan_b")):
        shutil.copy(tiny_case[source], scans / f"{name}.nii.gz")
    listing = folder / "cohort.txt"
    listing.write_text("# four tiny scans\nscans/s1.nii.gz\n\nscans/s2.nii.gz\nscans/s3.nii.gz\nscans/s4.nii.gz\n")
    return listing


def _env() -> dict[str, str]:
    return engine_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RRLMEDSAM_SHARD_WAIT_S="240")


def _torchrun(run: Path, listing: Path, out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "RRLMedSAMLib", "segment", "--model", str(run), "--image-list", str(listing), "--out", str(out), *FAST]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=400)


def _table(out: Path) -> dict[str, dict]:
    with (out / "cohort" / "cohort.csv").open() as handle:
        return {row["scan"]: row for row in csv.DictReader(handle)}


def _rows_by_shard(out: Path, count: int) -> dict[str, list[str]]:
    """Scan -> the statuses recorded for it across the summaries of ``count`` shards."""
    seen: dict[str, list[str]] = {}
    for index in range(1, count + 1):
        summary = json.loads((out / "cohort" / f"shard-{index}-of-{count}.json").read_text())
        assert summary["finished"]
        for row in summary["rows"]:
            seen.setdefault(row["scan"], []).append(row["status"])
    return seen


def _qc_times(out: Path) -> dict[str, int]:
    return {name: (out / name / "qc.json").stat().st_mtime_ns for name in ("s1", "s2", "s3", "s4")}


def test_torchrun_two_processes_then_a_rerun_redoes_only_the_incomplete_scan(
    tiny_run: Path, cohort: Path, tmp_path: Path
) -> None:
    out = tmp_path / "seg"
    result = _torchrun(tiny_run, cohort, out)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    assert _rows_by_shard(out, 2) == {name: ["segmented"] for name in ("s1", "s2", "s3", "s4")}
    for name in ("s1", "s2", "s3", "s4"):
        assert {p.name for p in (out / name).iterdir()} >= set(REQUIRED_RESULTS)
    table = _table(out)
    assert sorted(table) == ["s1", "s2", "s3", "s4"] and {r["status"] for r in table.values()} == {"segmented"}
    assert all(float(table[name][column]) > 0 for name in table for column in table[name] if column.endswith("(ml)"))
    times = _qc_times(out)
    (out / "s3" / "qc.json").unlink()  # as if the process had been killed while writing s3
    again = _torchrun(tiny_run, cohort, out)
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = {name: row["status"] for name, row in _table(out).items()}
    assert statuses == {"s1": "skipped", "s2": "skipped", "s3": "segmented", "s4": "skipped"}
    assert {k: v for k, v in _qc_times(out).items() if k != "s3"} == {k: v for k, v in times.items() if k != "s3"}


def test_job_array_shards_run_concurrently_and_summarize(
    tiny_run: Path, cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "seg"
    processes = [start_engine("segment", "--model", tiny_run, "--image-list", cohort, "--out", out, "--shard", shard,
                              *FAST, env=_env()) for shard in ("1/2", "2/2")]
    for process in processes:
        stdout, stderr = process.communicate(timeout=400)
        assert process.returncode == 0, stderr[-3000:]
    assert _rows_by_shard(out, 2) == {name: ["segmented"] for name in ("s1", "s2", "s3", "s4")}
    assert set(_table(out)) == {"s1", "s2", "s3", "s4"}  # assembled by the shard that finished last
    (out / "cohort" / "cohort.csv").unlink()
    assert main(["summarize", str(out)]) == 0
    assert "4 segmented, 0 skipped, 0 failed" in capsys.readouterr().out
    times = _qc_times(out)
    assert main(["segment", "--model", str(tiny_run), "--image-list", str(cohort), "--out", str(out), "--shard", "2/2",
                 *FAST]) == 0
    printed = capsys.readouterr().out
    assert "s2: skipped" in printed and "s4: skipped" in printed
    assert _qc_times(out) == times
    assert {r["status"] for r in _table(out).values()} == {"segmented", "skipped"}


def test_a_failing_scan_is_recorded_and_the_cohort_goes_on(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image at all")
    listing = tmp_path / "list.txt"
    listing.write_text(f"broken.nii.gz\n{tiny_case['scan_a']}\n")
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(tiny_run), "--image-list", str(listing), "--out", str(out), *FAST]) == 3
    table = _table(out)
    assert table["broken"]["status"] == "failed" and table["broken"]["qc_flags"] == "failed"
    assert "broken.nii.gz" in table["broken"]["message"]
    assert table["scan_a_image"]["status"] == "segmented"
    assert not (out / "broken").exists()
    assert "broken: failed" in capsys.readouterr().out
    # The cohort path runs the same steps as a plain segment: same qc.json keys, same segmentation.
    plain = tmp_path / "plain"
    assert main(["segment", "--model", str(tiny_run), "--images", str(tiny_case["scan_a"]), "--out", str(plain), *FAST]) == 0
    cohort_qc, plain_qc = (json.loads((folder / "scan_a_image" / "qc.json").read_text()) for folder in (out, plain))
    assert cohort_qc.keys() == plain_qc.keys() and cohort_qc["timings_s"].keys() == plain_qc["timings_s"].keys()
    assert cohort_qc["label_volumes_ml"] == plain_qc["label_volumes_ml"]
    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "scan_a_image" / "segmentation.nii.gz")))
              for folder in (out, plain)]
    assert (arrays[0] == arrays[1]).all()


@pytest.mark.parametrize("extra, env, fragment", [
    (("--shard", "3/2"), {}, "--shard 3/2"),
    (("--shard", "two"), {}, "not of the form K/N"),
    (("--shard", "1/2"), {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "cannot be combined"),
    (("--overwrite",), {}, "--overwrite does not apply"),
])
def test_bad_shard_options_write_nothing(
    tiny_run: Path, cohort: Path, tmp_path: Path, extra: tuple[str, ...], env: dict[str, str], fragment: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(tiny_run), "--image-list", str(cohort), "--out", str(out), *extra]) == 2
    error = capsys.readouterr().err
    assert fragment in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("content, fragment", [
    ("# only a comment\n\n", "names no scan"),
    ("scans/s1.nii.gz\nscans/missing.nii.gz\n", "missing.nii.gz is not a file"),
    ("scans/s1.nii.gz\nscans/s1.nii.gz\n", "share the name 's1'"),
])
def test_bad_lists_write_nothing(
    tiny_run: Path, cohort: Path, tmp_path: Path, content: str, fragment: str, capsys: pytest.CaptureFixture
) -> None:
    listing = cohort.parent / f"bad-{abs(hash(content))}.txt"
    listing.write_text(content)
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(tiny_run), "--image-list", str(listing), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert fragment in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not out.exists()
    os.remove(listing)


def test_bad_list_in_a_real_process(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg"
    result = run_cli("segment", "--model", str(tiny_run), "--image-list", str(tmp_path / "nope.txt"), "--out", str(out),
                     "--shard", "1/2")
    assert_clean_error(result, "nope.txt does not exist")
    assert not out.exists()
