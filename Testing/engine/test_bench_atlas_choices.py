"""Several atlas choices pooled: the aggregation on hand-made tables, and ``bench/atlas_choices.py`` end to end."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bench_fixtures import make_tiny_dataset
from tiny_case import REPO

from RRLMedSAMLib.bench import atlas_choices as pool
from RRLMedSAMLib.bench.atlas_choices import Pair

SCRIPT = REPO / "bench" / "atlas_choices.py"


def _pairs(method: str, dice: dict[tuple[str, str], float], folding: float = 0.0) -> list[Pair]:
    return [Pair(a, s, method, d, folding_fraction=folding, segment_s=2.0) for (a, s), d in dice.items()]


def test_worst_pair_per_atlas_means_and_below_affine_with_ties() -> None:
    keys = [("A", "s1"), ("A", "s2"), ("B", "s1"), ("B", "A")]
    affine = _pairs("affine", dict(zip(keys, [0.70, 0.70, 0.60, 0.80])))
    # ties within 5e-4 are not below; a difference of 1e-3 is
    method = _pairs("ants-syn", dict(zip(keys, [0.90, 0.6996, 0.599, 0.50])), folding=0.002)
    rows = {r["method"]: r for r in pool.method_summary(affine + method, ["A", "B"], reference="affine")}
    syn = rows["ants-syn"]
    assert syn["pairs"] == 4 and syn["mean_dice"] == pytest.approx(np.mean([0.90, 0.6996, 0.599, 0.50]))
    assert syn["per_atlas"] == {"A": pytest.approx(0.7998), "B": pytest.approx(0.5495)}
    assert (syn["worst_dice"], syn["worst_pair"]) == (0.50, "B -> A")
    assert (syn["below_affine"], syn["compared_with_affine"]) == (2, 4)
    assert syn["below_affine_fraction"] == pytest.approx(0.5)
    assert syn["dice_diff_vs_ref"] == pytest.approx(np.mean([0.20, -0.0004, -0.001, -0.30]))
    assert syn["mean_folding_pct"] == pytest.approx(0.2) and syn["max_folding_pct"] == pytest.approx(0.2)
    assert rows["affine"]["below_affine"] == 0 and rows["affine"]["dice_diff_vs_ref"] is None
    flags = {(r["method"], r["atlas"], r["scan"]): r["below_affine"] for r in pool.pair_rows(affine + method)}
    assert flags[("ants-syn", "A", "s2")] == 0 and flags[("ants-syn", "B", "s1")] == 1


def test_pairs_without_affine_and_missing_dice_are_not_compared() -> None:
    pairs = [*_pairs("affine", {("A", "s1"): 0.7}), Pair("A", "s1", "plain", None), *_pairs("plain", {("A", "s2"): 0.1})]
    plain = next(r for r in pool.method_summary(pairs, ["A", "B"]) if r["method"] == "plain")
    assert plain["pairs"] == 1 and plain["worst_pair"] == "A -> s2"
    assert plain["below_affine_fraction"] is None and plain["per_atlas"]["B"] is None


def test_selection_scans_and_the_atlas_itself_are_never_reported() -> None:
    pairs = _pairs("affine", {("A", "s1"): 0.5, ("A", "sel"): 0.1, ("B", "A"): 0.6, ("B", "B"): 1.0})
    kept = pool.reported(pairs, ["sel"])
    assert [(p.atlas, p.scan) for p in kept] == [("A", "s1"), ("B", "A")]
    structures = [{"atlas": "A", "case": c, "method": "affine", "label": 3, "name": "x", "dice": 0.5} for c in ("s1", "sel")]
    assert [r["case"] for r in pool.reported(structures, ["sel"])] == ["s1"]


def test_structure_volumes_and_per_structure_means_sorted_by_volume(tmp_path: Path) -> None:
    labels = {}
    for atlas, big in (("A", 8), ("B", 4)):
        array = np.zeros((10, 10, 10), np.uint16)
        array[:big, :5, :5] = 7
        array[0, 0, 9] = 2
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((2.0, 2.0, 2.0))
        labels[atlas] = tmp_path / f"{atlas}.nii.gz"
        sitk.WriteImage(image, str(labels[atlas]))
    volumes = pool.structure_volumes_ml(labels)
    assert volumes == {2: pytest.approx(0.008), 7: pytest.approx(6 * 25 * 0.008)}
    rows = [{"method": "m", "case": "s", "atlas": "A", "label": lab, "name": f"L{lab}", "dice": d}
            for lab, d in ((7, 0.9), (7, 0.7), (2, 0.2), (2, None))]
    summary = pool.structure_summary(rows, volumes)
    assert [r["label"] for r in summary] == [2, 7]
    assert summary[0]["pairs"] == 1 and summary[1]["mean_dice"] == pytest.approx(0.8)
    assert summary[1]["worst_dice"] == pytest.approx(0.7)


def test_a_results_folder_of_another_atlas_is_refused(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"settings": {"atlas": "B"}, "per_scan": []}))
    with pytest.raises(ValueError, match="atlas 'B'"):
        pool.read_atlas_run(tmp_path, "A")


def _script():
    spec = importlib.util.spec_from_file_location("atlas_choices_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_summary_names_ants_settings_only_when_an_ants_method_ran() -> None:
    settings = {"ants": {"type_of_transform": "SyN"}}
    engine_only = [{"method": "affine"}, {"method": "plain"}]
    assert _script().ants_settings(engine_only, settings) == "no ANTs method ran"
    assert '"SyN"' in _script().ants_settings([*engine_only, {"method": "ants-synquick"}], settings)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("atlas_choices_dataset"))


@pytest.mark.parametrize("args, fragment", [
    (["--atlases", "atlas", "nobody"], "nobody"),
    (["--atlases", "atlas", "scan_a", "--selection", "scan_a"], "both as atlas"),
    (["--atlases", "atlas"], "at least 2"),
    (["--atlases", "atlas", "scan_a", "--methods", "magic"], "magic"),
    (["--atlases", "atlas", "scan_a", "--dataset", "/nonexistent/folder"], "not found"),
])
def test_bad_arguments_exit_2_and_write_nothing(dataset: Path, tmp_path: Path, capsys, args, fragment) -> None:
    out = tmp_path / "out"
    code = _script().main(["--dataset", str(dataset), "--out", str(out), *args])
    error = capsys.readouterr().err
    assert code == 2 and fragment in error and len(error.strip().splitlines()) == 1, error
    assert not out.exists()


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_atlases_end_to_end_then_resumed(dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("ants")
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--dataset", str(dataset), "--atlases", "atlas", "scan_a",
               "--selection", "scan_b", "--out", str(out), "--methods", "ants-synquick", "registration-only",
               "--quick", "--device", "cpu", "--threads", "1"]
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("summary.md", "per_pair.csv", "per_structure.csv"):
        assert (out / name).is_file(), name
    assert (out / "per_structure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = _read(out / "per_pair.csv")
    assert {(r["atlas"], r["scan"]) for r in rows} == {("atlas", "scan_a"), ("scan_a", "atlas")}
    assert {r["method"] for r in rows} == {"affine", "ants-synquick", "plain", "registration-only"}
    for atlas in ("atlas", "scan_a"):  # each pair's Dice is the one its own bench run scored
        bench = {(r["method"], r["case"]): r for r in _read(out / f"atlas-{atlas}" / "per_scan.csv")}
        assert ("affine", "scan_b") in bench, "the selection scan is segmented, only not reported"
        for row in (r for r in rows if r["atlas"] == atlas):
            assert float(row["dice"]) == pytest.approx(float(bench[(row["method"], row["scan"])]["mean_dice"]), abs=1e-5)
            assert 0.5 < float(row["dice"]) <= 1.0 and row["below_affine"] in {"0", "1"}
        job = json.loads((out / f"atlas-{atlas}" / "methods" / "ants-synquick" / "job_classical.json").read_text())
        assert job["ants"]["type_of_transform"] == "antsRegistrationSyNQuick[s]"
    structures = _read(out / "per_structure.csv")
    assert {r["label"] for r in structures} == {"5", "9", "12"} and all(r["pairs"] == "2" for r in structures)
    affine = [r for r in structures if r["method"] == "affine"]
    assert [float(r["atlas_volume_ml"]) for r in affine] == sorted(float(r["atlas_volume_ml"]) for r in affine)
    summary = (out / "summary.md").read_text()
    assert "scan_b" not in summary.replace("`scan_b`", "") and "-> scan_b" not in summary
    mean_affine = np.mean([float(r["dice"]) for r in rows if r["method"] == "affine"])
    assert f"| affine | 2 | {mean_affine:.3f} ±" in summary

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("atlas-*/results.json")}
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # --pool-only: the finished folders pooled again elsewhere, nothing run; an atlas without results is named
    pooled = tmp_path / "pooled"
    for atlas in ("atlas", "scan_a"):
        shutil.copytree(out / f"atlas-{atlas}", pooled / f"atlas-{atlas}")
    only = subprocess.run([*command[:command.index("--out") + 1], str(pooled), "--pool-only"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert only.returncode == 0, only.stderr[-3000:]
    assert "atlas-choices] atlas" not in only.stdout
    assert _read(pooled / "per_pair.csv") == rows
    text = (pooled / "summary.md").read_text()
    assert "## Atlas runs" in text and text.count("`rrlmedsam bench --atlas ") == 2 and "--quick" in text
    shutil.rmtree(pooled / "atlas-scan_a")
    missing = subprocess.run([*command[:command.index("--out") + 1], str(pooled), "--pool-only"], capture_output=True,
                             text=True, cwd=REPO, timeout=300)
    assert missing.returncode == 1 and not (pooled / "atlas-scan_a").exists()
    assert "atlas `scan_a`: no results (not run here" in (pooled / "summary.md").read_text()
