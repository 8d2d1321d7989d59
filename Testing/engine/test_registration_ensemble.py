"""The registration ensemble: perturbed starts, majority vote, and ``segment --registration-ensemble``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_case import LABEL_IDS, engine

from RRLMedSAMLib.geometry.affine import affine_from_dict
from RRLMedSAMLib.inference.segment_options import BARE
from RRLMedSAMLib.inference.segment_steps import perturbed_registration_labels, segment_scan
from RRLMedSAMLib.inference.segmenter import open_segmenter, prepare_segmenter
from RRLMedSAMLib.io.file_hash import sha256_file
from RRLMedSAMLib.io.volumes import read_label, read_scan
from RRLMedSAMLib.progress import parse_progress_line
from RRLMedSAMLib.registration.ensemble import (
    ROTATION_SD_DEG,
    SHIFT_SD_MM,
    anatomy_centre,
    perturbed_prealignments,
    vote,
)

CENTRE = (10.0, -4.0, 7.0)


def _prealignment() -> sitk.AffineTransform:
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([1.1, 0.05, 0.0, -0.03, 0.95, 0.1, 0.0, 0.02, 1.05])
    affine.SetTranslation((2.0, -3.0, 1.5))
    affine.SetCenter((5.0, 5.0, 5.0))
    return affine


def _points(count: int = 20) -> np.ndarray:
    return np.random.default_rng(3).uniform(-40, 40, (count, 3))


def _mapped(transform: sitk.Transform, points: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint(tuple(p)) for p in points])


def test_first_start_is_the_prealignment_and_the_others_are_rigid_moves_before_it() -> None:
    prealignment = _prealignment()
    starts = perturbed_prealignments(prealignment, CENTRE, 6, seed=4)
    assert len(starts) == 6
    points = _mapped(prealignment.GetInverse(), _points())
    np.testing.assert_allclose(_mapped(starts[0], points), _mapped(prealignment, points), atol=1e-9)
    inverse = prealignment.GetInverse()
    for start in starts[1:]:
        moved = _mapped(inverse, _mapped(start, points))  # the atlas-side motion alone
        pairwise = np.linalg.norm(points[:, None] - points[None], axis=-1)
        np.testing.assert_allclose(np.linalg.norm(moved[:, None] - moved[None], axis=-1), pairwise, atol=1e-6)
        centre_shift = np.linalg.norm(_mapped(inverse, _mapped(start, np.array([CENTRE])))[0] - CENTRE)
        assert 0 < centre_shift < 6 * SHIFT_SD_MM
        assert not np.allclose(moved, points, atol=1e-3)


def test_starts_are_reproducible_and_depend_on_the_seed() -> None:
    first = perturbed_prealignments(_prealignment(), CENTRE, 4, seed=1)
    again = perturbed_prealignments(_prealignment(), CENTRE, 4, seed=1)
    other = perturbed_prealignments(_prealignment(), CENTRE, 4, seed=2)
    points = _points(5)
    for a, b, c in zip(first[1:], again[1:], other[1:]):
        np.testing.assert_array_equal(_mapped(a, points), _mapped(b, points))
        assert not np.allclose(_mapped(a, points), _mapped(c, points))
    assert ROTATION_SD_DEG > 0
    with pytest.raises(ValueError, match="at least one member"):
        perturbed_prealignments(_prealignment(), CENTRE, 0, seed=1)


def _labelmap(values: list[int], spacing: tuple[float, float, float] = (0.5, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.array(values, np.uint8).reshape(1, 1, -1))
    image.SetSpacing(spacing)
    image.SetOrigin((3.0, 2.0, 1.0))
    return image


def test_vote_takes_the_majority_and_the_first_label_on_ties() -> None:
    members = [_labelmap([1, 2, 0, 3, 7]), _labelmap([1, 0, 2, 3, 0]), _labelmap([0, 2, 5, 4, 6])]
    voted = vote(members)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(voted).ravel(), [1, 2, 0, 3, 7])
    assert voted.GetPixelID() == members[0].GetPixelID()
    assert voted.GetSpacing() == members[0].GetSpacing() and voted.GetOrigin() == members[0].GetOrigin()
    assert vote(members[:1]) is members[0]


def test_vote_keeps_a_label_the_first_member_lacks() -> None:
    members = [_labelmap([1, 1, 0]), _labelmap([2, 1, 2]), _labelmap([2, 1, 2])]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vote(members)).ravel(), [2, 1, 2])


def test_anatomy_centre_is_the_labelled_voxels_centroid() -> None:
    label = _labelmap([0, 4, 0, 9, 0])
    expected = np.mean([label.TransformIndexToPhysicalPoint((i, 0, 0)) for i in (1, 3)], axis=0)
    np.testing.assert_allclose(anatomy_centre(label), expected)


def _dice(prediction: sitk.Image, truth: sitk.Image) -> float:
    a, b = sitk.GetArrayFromImage(prediction) > 0, sitk.GetArrayFromImage(truth) > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_each_perturbed_registration_still_finds_the_anatomy(tiny_case: dict[str, Path], tiny_run: Path) -> None:
    segmenter = open_segmenter(tiny_run, torch.device("cpu"), replace(BARE, refinement_steps=0, registration_ensemble=3))
    scan = read_scan(tiny_case["scan_a"], "Image")
    truth = read_label(tiny_case["scan_a_label"], "Label")
    prealignment = affine_from_dict(segmenter.model.training_affines[sha256_file(tiny_case["scan_a"])]["affine"])
    members = perturbed_registration_labels(segmenter, scan, prealignment)
    assert len(members) == 2
    for member in members:
        assert member.GetSize() == scan.GetSize() and member.GetSpacing() == scan.GetSpacing()
        assert set(np.unique(sitk.GetArrayFromImage(member))) <= {0, *LABEL_IDS}
        assert _dice(member, truth) > 0.6


def test_segment_votes_the_ensemble_and_keeps_the_single_registration_outputs(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path
) -> None:
    common = ("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--refinement-steps", "0")
    assert engine(*common, "--out", tmp_path / "single").returncode == 0
    result = engine(*common, "--out", tmp_path / "ensemble", "--registration-ensemble", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    single, ensemble = tmp_path / "single" / "scan_a_image", tmp_path / "ensemble" / "scan_a_image"
    report = json.loads((ensemble / "qc.json").read_text())
    assert report["registration_ensemble"] == 3 and report["timings_s"]["registration_ensemble_s"] > 0
    events = [e for e in map(parse_progress_line, result.stdout.splitlines()) if e and e["stage"] == "segment"]
    assert events[0]["event"] == "stage_start" and events[0]["total"] == 3
    assert "3 registrations each" in events[0]["message"]
    assert [e["step"] for e in events if e["event"] == "progress"][-1] == 3
    assert json.loads((single / "qc.json").read_text())["registration_ensemble"] == 1
    for name in ("warped_atlas_label.nii.gz", "deformation.nrrd"):
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(ensemble / name))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(str(single / name))))
    truth = sitk.ReadImage(str(tiny_case["scan_a_label"]))
    segmentation = sitk.ReadImage(str(ensemble / "segmentation.nii.gz"))
    assert _dice(segmentation, truth) > _dice(sitk.ReadImage(str(single / "segmentation.nii.gz")), truth) - 0.05


def test_segment_scan_reports_each_registration_of_the_ensemble(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path
) -> None:
    options = replace(BARE, refinement_steps=0, registration_ensemble=3)
    segmenter = open_segmenter(tiny_run, torch.device("cpu"), options)
    single = prepare_segmenter(segmenter.model, replace(options, registration_ensemble=1))
    calls: dict[str, list[int]] = {"ensemble": [], "single": []}
    segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "ensemble", calls["ensemble"].append)
    segment_scan(single, tiny_case["scan_a"], tmp_path / "single", calls["single"].append)
    assert calls == {"ensemble": [1, 2, 3], "single": [1]}


def test_runs_without_the_atlas_prior_register_once(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path) -> None:
    options = replace(BARE, refinement_steps=0, registration_ensemble=3)
    segmenter = open_segmenter(tiny_run, torch.device("cpu"), options)
    assert segmenter.model.ensemble_applies and segmenter.ensemble_members == 3
    model = segmenter.model
    without_prior = prepare_segmenter(replace(model, preset=replace(model.preset, atlas_prior=False)), options)
    assert not without_prior.model.ensemble_applies and without_prior.ensemble_members == 1
    folder = segment_scan(without_prior, tiny_case["scan_a"], tmp_path)
    report = json.loads((folder / "qc.json").read_text())
    assert report["registration_ensemble"] == 1 and "registration_ensemble_s" not in report["timings_s"]
    with pytest.raises(ValueError, match="at least one member"):
        prepare_segmenter(model, replace(BARE, registration_ensemble=0))
