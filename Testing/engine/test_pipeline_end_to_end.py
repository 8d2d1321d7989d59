"""Train -> segment -> evaluate on the tiny case, through the real command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tiny_case import LABEL_IDS, engine

from RRLMedSAMLib.inference.label_smoothing import (
    apply_label_smoothing,
    atlas_roughness,
    smooth_labels_keeping_volumes,
    smooth_labels_matching_atlas,
)
from RRLMedSAMLib.progress import PROGRESS_MARKER
from RRLMedSAMLib.registration.volume_calibration import (
    RECOVERY_RANGE,
    calibrated_voxel_counts,
    label_volumes_mm3,
    read_volume_calibration,
)

OUTPUTS = ("segmentation.nii.gz", "labels.csv", "warped_atlas_label.nii.gz", "warped_atlas_image.nii.gz",
           "deformation.nrrd", "qc.json")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_run_folder_contents(tiny_run: Path) -> None:
    for name in ("config.json", "labels.csv", "model.safetensors", "model_card.json", "progress.jsonl",
                 "atlas/atlas_image.nii.gz", "atlas/atlas_label.nii.gz"):
        assert (tiny_run / name).is_file(), name
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["parameters"]["registration"] > 0 and card["parameters"]["segmentation"] > 0
    assert card["parameters"]["total"] == card["parameters"]["registration"] + card["parameters"]["segmentation"]
    assert card["engine_version"] and card["configuration_hash"] and card["data"]["label_ids"] == list(LABEL_IDS)
    stages = {json.loads(line)["stage"] for line in (tiny_run / "progress.jsonl").read_text().splitlines()}
    assert {"prealign", "registration", "medical_pretrain", "pseudo_labels", "joint_stage2"} <= stages  # default method: rrl


def test_segment_outputs_on_native_grid(tiny_case: dict[str, Path], tiny_results: Path) -> None:
    for scan in ("scan_a", "scan_b"):
        folder = tiny_results / f"{scan}_image"
        for name in OUTPUTS:
            assert (folder / name).is_file(), (scan, name)
        reference = sitk.ReadImage(str(tiny_case[scan]))
        for name in ("segmentation.nii.gz", "warped_atlas_label.nii.gz", "warped_atlas_image.nii.gz", "deformation.nrrd"):
            output = sitk.ReadImage(str(folder / name))
            assert output.GetSize() == reference.GetSize(), name
            assert np.allclose(output.GetSpacing(), reference.GetSpacing(), atol=1e-5), name
            assert np.allclose(output.GetOrigin(), reference.GetOrigin(), atol=1e-4), name
            assert np.allclose(output.GetDirection(), reference.GetDirection(), atol=1e-6), name
        ids = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.nii.gz"))))) - {0}
        assert ids <= set(LABEL_IDS)
        with open(folder / "labels.csv", newline="") as handle:
            assert [int(row["id"]) for row in csv.DictReader(handle)] == list(LABEL_IDS)
        qc = json.loads((folder / "qc.json").read_text())
        assert 0.0 <= qc["folding_fraction"] < 0.05
        assert set(qc["label_volumes_ml"]) == {str(i) for i in LABEL_IDS}


def test_registration_recovers_the_phantom(tiny_case: dict[str, Path], tiny_results: Path) -> None:
    """The warped atlas label overlaps the scan's true label far better than no alignment at all."""
    for scan in ("scan_a", "scan_b"):
        truth = sitk.ReadImage(str(tiny_case[f"{scan}_label"]))
        warped = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_results / f"{scan}_image" / "warped_atlas_label.nii.gz")))
        unaligned = sitk.GetArrayFromImage(
            sitk.Resample(sitk.ReadImage(str(tiny_case["atlas_label"])), truth, sitk.Transform(), sitk.sitkNearestNeighbor)
        )
        truth_array = sitk.GetArrayFromImage(truth)
        big = LABEL_IDS[0]
        assert dice(warped >= big, truth_array >= big) > 0.85
        assert dice(warped >= big, truth_array >= big) > dice(unaligned >= big, truth_array >= big)


def test_training_scans_reuse_their_prealignment(tiny_case: dict[str, Path], tiny_run: Path, tiny_results: Path,
                                                 tmp_path: Path) -> None:
    for scan in ("scan_a", "scan_b"):
        assert json.loads((tiny_results / f"{scan}_image" / "qc.json").read_text())["prealignment"] == "reused from training"
    unseen = tmp_path / "unseen.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(tiny_case["scan_a"])), str(unseen))
    result = engine("segment", "--model", tiny_run, "--image", unseen, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "unseen" / "qc.json").read_text())["prealignment"] == "computed"
    fresh = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "unseen" / "warped_atlas_label.nii.gz")))
    reused = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_results / "scan_a_image" / "warped_atlas_label.nii.gz")))
    big = LABEL_IDS[0]
    assert dice(fresh >= big, reused >= big) > 0.95


def test_evaluate_scores_the_segment_folder(tiny_case: dict[str, Path], tiny_results: Path, tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    truth.mkdir()
    for scan in ("scan_a", "scan_b"):
        (truth / f"{scan}_image.nii.gz").write_bytes(tiny_case[f"{scan}_label"].read_bytes())
    result = engine("evaluate", "--pred", tiny_results, "--truth", truth, "--out", tmp_path / "metrics")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "metrics" / "metrics.json").read_text())
    assert {case["name"] for case in summary["cases"]} == {"scan_a_image", "scan_b_image"}
    assert 0.0 <= summary["mean_dice"] <= 1.0
    assert (tmp_path / "metrics" / "metrics.md").read_text().count("|") > 10


def test_progress_lines_on_a_pipe(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path) -> None:
    """With stdout not a terminal, every progress event is a marker line carrying the contract's keys."""
    result = engine("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--out", tmp_path)
    events = [json.loads(line[len(PROGRESS_MARKER):]) for line in result.stdout.splitlines() if line.startswith(PROGRESS_MARKER)]
    assert result.returncode == 0 and events
    for key in ("event", "stage", "step", "total", "losses", "dice", "eta_s", "elapsed_s"):
        assert all(key in event for event in events), key
    assert events[-1]["event"] == "done"


def test_fine_registration_runs_by_default_and_can_be_switched_off(
    tiny_case: dict[str, Path], tiny_run: Path, tiny_results: Path, tmp_path: Path
) -> None:
    refined = json.loads((tiny_results / "scan_a_image" / "qc.json").read_text())
    assert "fine MIND-SSC stage (" in refined["registration"] and refined["timings_s"]["fine_registration_s"] > 0
    details = refined["fine_registration"]
    assert details["levels"] and details["iterations"] > 0 and details["seconds"] > 0
    assert {"resolution_mm", "final_similarity", "folding_fraction", "fallbacks", "budget_s"} <= set(details)
    result = engine("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--out", tmp_path, "--refinement-steps", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    plain = json.loads((tmp_path / "scan_a_image" / "qc.json").read_text())
    assert plain["registration"] == "affine + deformable network + instance optimisation"
    assert "fine_registration_s" not in plain["timings_s"] and plain["fine_registration"] is None


def _labels(folder: Path, name: str) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))


def test_label_smoothing_applies_to_the_segmentation_only(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path) -> None:
    common = ("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--refinement-steps", "0",
              "--volume-calibration", "off")
    assert engine(*common, "--out", tmp_path / "plain", "--label-smoothing-mm", "0").returncode == 0
    result = engine(*common, "--out", tmp_path / "smoothed", "--label-smoothing-mm", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    plain, smoothed = tmp_path / "plain" / "scan_a_image", tmp_path / "smoothed" / "scan_a_image"
    assert json.loads((smoothed / "qc.json").read_text())["label_smoothing_mm"] == 3.0
    assert json.loads((plain / "qc.json").read_text())["label_smoothing_mm"] == 0.0
    assert json.loads((plain / "qc.json").read_text())["label_smoothing_sigmas_mm"] == {}
    assert set(json.loads((smoothed / "qc.json").read_text())["label_smoothing_sigmas_mm"].values()) == {3.0}
    np.testing.assert_array_equal(_labels(smoothed, "warped_atlas_label.nii.gz"), _labels(plain, "warped_atlas_label.nii.gz"))
    expected = smooth_labels_keeping_volumes(sitk.ReadImage(str(plain / "segmentation.nii.gz")), 3.0)
    np.testing.assert_array_equal(_labels(smoothed, "segmentation.nii.gz"), sitk.GetArrayFromImage(expected))
    assert (_labels(smoothed, "segmentation.nii.gz") != _labels(plain, "segmentation.nii.gz")).any()

    result = engine(*common, "--out", tmp_path / "auto")  # auto is the default
    assert result.returncode == 0, result.stderr[-2000:]
    auto = tmp_path / "auto" / "scan_a_image"
    roughness = atlas_roughness(sitk.ReadImage(str(tiny_run / "atlas" / "atlas_label.nii.gz")))
    expected, sigmas = smooth_labels_matching_atlas(sitk.ReadImage(str(plain / "segmentation.nii.gz")), roughness)
    np.testing.assert_array_equal(_labels(auto, "segmentation.nii.gz"), sitk.GetArrayFromImage(expected))
    report = json.loads((auto / "qc.json").read_text())
    assert report["label_smoothing_mm"] == "auto"
    assert report["label_smoothing_sigmas_mm"] == {str(label): round(sigma, 3) for label, sigma in sigmas.items()}


def test_training_measures_a_volume_calibration_that_segment_applies(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path
) -> None:
    calibration = read_volume_calibration(tiny_run)
    assert calibration is not None and set(calibration.recovery) == set(LABEL_IDS)
    assert all(RECOVERY_RANGE[0] <= s <= RECOVERY_RANGE[1] for s in calibration.recovery.values())
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["volume_calibration"]["applied"] is True
    assert card["volume_calibration"]["recovery"] == {str(k): round(v, 3) for k, v in calibration.recovery.items()}
    stages = {json.loads(line)["stage"] for line in (tiny_run / "progress.jsonl").read_text().splitlines()}
    assert "volume_calibration" in stages

    common = ("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--refinement-steps", "0",
              "--label-smoothing-mm", "0")
    assert engine(*common, "--out", tmp_path / "off", "--volume-calibration", "off").returncode == 0
    assert json.loads((tmp_path / "off" / "scan_a_image" / "qc.json").read_text())["volume_calibration"] is None
    result = engine(*common, "--out", tmp_path / "on", "--volume-calibration", "on")
    assert result.returncode == 0, result.stderr[-2000:]
    off, on = tmp_path / "off" / "scan_a_image", tmp_path / "on" / "scan_a_image"
    assert json.loads((off / "qc.json").read_text())["volume_calibration"] is None
    report = json.loads((on / "qc.json").read_text())["volume_calibration"]
    assert set(report["recovery"]) == {str(label) for label in LABEL_IDS}
    assert set(report["volume_target_ml"]) <= set(report["volume_before_ml"]) <= set(report["recovery"])
    uncalibrated = sitk.ReadImage(str(off / "segmentation.nii.gz"))
    atlas = sitk.ReadImage(str(tiny_run / "atlas" / "atlas_label.nii.gz"))
    targets = calibrated_voxel_counts(uncalibrated, label_volumes_mm3(atlas), calibration.recovery)
    expected, _ = apply_label_smoothing(uncalibrated, 0.0, None, targets)
    np.testing.assert_array_equal(_labels(on, "segmentation.nii.gz"), sitk.GetArrayFromImage(expected))
    assert (_labels(on, "segmentation.nii.gz") != _labels(off, "segmentation.nii.gz")).any()
    np.testing.assert_array_equal(_labels(on, "warped_atlas_label.nii.gz"), _labels(off, "warped_atlas_label.nii.gz"))
