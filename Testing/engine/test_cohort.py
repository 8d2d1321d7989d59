"""Cohort segmentation's decisions without a model: list file, shards, completeness, summaries, cohort.csv."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import pytest

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.cohort import (
    REQUIRED_RESULTS,
    Shard,
    assemble_cohort,
    choose_shard,
    cohort_id,
    complete_result,
    parse_shard,
    read_image_list,
    select_shard,
    shard_from_environment,
)
from RRLMedSAMLib.inference.cohort_run import finish_cohort, run_shard


def _scans(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"scan{index}.nii.gz"
        path.write_bytes(b"x")
        paths.append(path)
    return paths


def _fake_result(folder: Path, model: Path, prompt: bool = False, volumes: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in REQUIRED_RESULTS[:-1] + (("prompt_mask.nii.gz",) if prompt else ()):
        (folder / name).write_bytes(b"r")
    qc = {"model": str(model.resolve()), "folding_fraction": 0.01, "missing_labels": [9],
          "label_volumes_ml": volumes or {"5": 1.5, "9": 0.0}, "label_names": {"5": "outer", "9": "inner"},
          "prompt_mask": "prompt_mask.nii.gz" if prompt else None}
    (folder / "qc.json").write_text(json.dumps(qc))
    return folder


def test_image_list_comments_blank_lines_and_relative_paths(tmp_path: Path) -> None:
    scans = _scans(tmp_path / "data", 3)
    listing = tmp_path / "lists" / "cohort.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my cohort\n\n../data/scan0.nii.gz\n  {scans[1]}  \n   # indented comment\n../data/scan2.nii.gz\n")
    assert read_image_list(listing) == scans


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ("# nothing\n\n", "names no scan"),
    ("scan0.nii.gz\nnope.nii.gz\n", "nope.nii.gz is not a file"),
    ("scan0.nii.gz\nsub/scan0.nii.gz\n", "share the name 'scan0'"),
    (b"\xff\xfe\x00bad", "cannot be read"),
])
def test_bad_image_lists(tmp_path: Path, content: str | bytes | None, fragment: str) -> None:
    _scans(tmp_path, 1)
    _scans(tmp_path / "sub", 1)
    listing = tmp_path / "list.txt"
    if isinstance(content, bytes):
        listing.write_bytes(content)
    elif content is not None:
        listing.write_text(content)
    with pytest.raises(InputError, match=fragment):
        read_image_list(listing)


@pytest.mark.parametrize("text, expected", [("1/2", Shard(1, 2)), (" 3 / 3 ", Shard(3, 3)), ("1/1", Shard(1, 1))])
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "2", "1/2/3", "-1/2", ""])
def test_bad_shards(text: str) -> None:
    with pytest.raises(InputError, match="--shard"):
        parse_shard(text)


def test_shard_from_torchrun_environment_and_option() -> None:
    assert shard_from_environment({}) is None
    assert shard_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(2, 2)
    assert choose_shard(None, {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == (Shard(1, 4), True)
    assert choose_shard("2/3", {}) == (Shard(2, 3), False)
    assert choose_shard("2/3", {"RANK": "0", "WORLD_SIZE": "1"}) == (Shard(2, 3), False)
    assert choose_shard(None, {}) == (Shard(1, 1), False)
    with pytest.raises(InputError, match="cannot be combined"):
        choose_shard("1/2", {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(InputError, match="Inconsistent torchrun environment"):
        shard_from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(InputError, match="LOCAL_RANK is not"):
        shard_from_environment({"RANK": "1", "WORLD_SIZE": "2"})


def test_every_scan_in_exactly_one_shard() -> None:
    scans = [Path(f"s{i}") for i in range(11)]
    for count in (1, 2, 3, 5, 11, 13):
        parts = [select_shard(scans, Shard(k, count)) for k in range(1, count + 1)]
        assert sorted(p for part in parts for p in part) == sorted(scans)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert select_shard(scans, Shard(2, 3)) == [Path("s1"), Path("s4"), Path("s7"), Path("s10")]


def test_complete_result_needs_every_file_and_the_same_model(tmp_path: Path) -> None:
    model = tmp_path / "run"
    folder = _fake_result(tmp_path / "out" / "a", model)
    assert complete_result(folder, model) is not None
    assert complete_result(folder, tmp_path / "other_run") is None
    (folder / "deformation.nrrd").unlink()
    assert complete_result(folder, model) is None
    with_prompt = _fake_result(tmp_path / "out" / "b", model, prompt=True)
    assert complete_result(with_prompt, model) is not None
    (with_prompt / "prompt_mask.nii.gz").unlink()
    assert complete_result(with_prompt, model) is None
    (folder / "qc.json").write_text("{broken")
    assert complete_result(folder) is None


def test_run_shard_skips_records_failures_and_assembles(tmp_path: Path) -> None:
    scans, model, out = _scans(tmp_path / "data", 5), tmp_path / "run", tmp_path / "out"
    _fake_result(out / "scan0", model)
    calls: list[tuple[Path, object]] = []

    def segment_one(scan: Path, prepared: object) -> Path:
        calls.append((scan, prepared))
        if scan.name.startswith("scan3"):
            raise InputError("Image scan3 is empty.")
        if scan.name.startswith("scan4"):
            raise ZeroDivisionError("bug")
        return _fake_result(out / scan.name.split(".")[0], model)

    cohort = cohort_id(scans, model)
    outcome = run_shard(scans, Shard(1, 1), cohort, out, model, segment_one, prepare=lambda scan: f"ready {scan.name}")
    assert [r["status"] for r in outcome.rows] == ["skipped", "segmented", "segmented", "failed", "failed"]
    assert calls == [(s, f"ready {s.name}") for s in scans[1:]]
    assert "Image scan3 is empty." == outcome.rows[3]["message"]
    assert "ZeroDivisionError: bug" in outcome.rows[4]["message"]
    assert "ZeroDivisionError" in (out / "cohort" / "shard-1-of-1.errors.log").read_text()
    finish_cohort(out, outcome, cohort, torchrun=False)
    with outcome.cohort_csv.open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["scan"] for r in table] == [f"scan{i}" for i in range(5)]
    assert table[0]["status"] == "skipped" and table[0]["outer (ml)"] == "1.5"
    assert table[1]["qc_flags"] == "folding>0.5%; missing labels 9" and table[1]["folding_percent"] == "1.0"
    assert table[3]["qc_flags"] == "failed" and table[3]["outer (ml)"] == ""


def test_shards_assemble_only_when_all_finished(tmp_path: Path) -> None:
    scans, model, out = _scans(tmp_path / "data", 4), tmp_path / "run", tmp_path / "out"
    cohort = cohort_id(scans, model)

    def segment_one(scan: Path, prepared: object) -> Path:
        return _fake_result(out / scan.name.split(".")[0], model)

    first = run_shard(scans, Shard(1, 2), cohort, out, model, segment_one)
    finish_cohort(out, first, cohort, torchrun=False)
    assert first.cohort_csv is None and "2/2" in first.note
    with pytest.raises(InputError, match="2/2 have not finished"):
        assemble_cohort(out)
    assert not (out / "cohort" / "cohort.csv").exists()
    second = run_shard(scans, Shard(2, 2), cohort, out, model, segment_one)
    finish_cohort(out, second, cohort, torchrun=False)
    path, counts = assemble_cohort(out)
    assert path == second.cohort_csv and counts == {"segmented": 4, "skipped": 0, "failed": 0}
    # A later cohort with another list in the same OUT: the old, finished shard 2/2 does not count.
    time.sleep(0.01)
    other = cohort_id(scans[:3], model)
    again = run_shard(scans[:3], Shard(1, 2), other, out, model, segment_one)
    assert [r["status"] for r in again.rows] == ["skipped", "skipped"]
    os.utime(out / "cohort" / "shard-1-of-2.json")
    with pytest.raises(InputError, match="2/2 have not finished"):
        assemble_cohort(out)


def test_summarize_without_summaries_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no cohort summaries"):
        assemble_cohort(tmp_path)
