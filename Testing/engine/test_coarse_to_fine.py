"""Coarse-to-fine instance optimisation from the affine start: it reaches misalignments one level cannot, and the better candidate is kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from pipeline_fixtures import unrefined_segmenter

from RRLMedSAMLib.inference.segment_steps import segment_scan
from RRLMedSAMLib.registration.coarse_to_fine import coarse_to_fine_displacement, level_shape, resize_displacement
from RRLMedSAMLib.registration.instance_optimization import refine_displacement
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.registration.register import COARSE_STEP, NETWORK_STEP, REGISTRATION_COARSE
from RRLMedSAMLib.registration.step_checks import StepJudge


def test_a_displacement_keeps_its_physical_length_when_resized_between_levels() -> None:
    assert level_shape((64, 60, 9), 4) == (16, 15, 4)
    ddf = torch.zeros(1, 3, 9, 17, 33)
    ddf[0, 0], ddf[0, 1], ddf[0, 2] = 2.0, -4.0, 8.0
    coarse = resize_displacement(ddf, (5, 9, 17))
    assert torch.allclose(coarse[0, :, 2, 4, 8], torch.tensor([1.0, -2.0, 4.0]))
    assert torch.allclose(resize_displacement(coarse, (9, 17, 33)), ddf)


def test_coarse_to_fine_reaches_a_shift_that_one_level_of_instance_optimisation_cannot() -> None:
    """A blob 8 voxels (twice its radius) from its place: one level stalls, three levels align it."""
    z, y, x = torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij")

    def blob(centre_x: float) -> torch.Tensor:
        return torch.exp(-((z - 16) ** 2 + (y - 16) ** 2 + (x - centre_x) ** 2) / 8.0)[None, None]

    atlas, scan = blob(12), blob(20)
    objective = RegistrationObjective(5, 1.0)
    judge = StepJudge(5, atlas, scan, (atlas > 0.3).float())

    def dice(ddf: torch.Tensor) -> float:
        warped = judge.warp(atlas, ddf) > 0.3
        return float(2 * (warped & (scan > 0.3)).sum() / (warped.sum() + (scan > 0.3).sum()))

    one_level = refine_displacement(objective, atlas, scan, torch.zeros(1, 3, 32, 32, 32), 50)
    levels = coarse_to_fine_displacement(objective, atlas, scan, 2, 50)
    assert dice(one_level) < 0.3 < 0.8 < dice(levels)
    assert abs(float(levels[0, 2, 16, 16, 20]) + 8.0) < 1.0  # atlas point = scan point - 8 voxels along x
    assert judge.measure(levels).ncc > judge.measure(one_level).ncc


def test_the_candidate_that_matches_better_is_kept_and_qc_says_which(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    segmenter = unrefined_segmenter(tiny_run, tmp_path / "run", coarse_start_levels=2)
    registration = segmenter.registration
    assert registration is not None and registration.preset.coarse_start_levels == 2
    sane = json.loads((segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "sane") / "qc.json").read_text())
    network, coarse = sane["registration_checks"][:2]
    assert network["step"] == NETWORK_STEP and coarse["step"].startswith(COARSE_STEP)
    assert network["kept"] != coarse["kept"]  # exactly one candidate is kept, the one with the higher similarity
    kept, other = (network, coarse) if network["kept"] else (coarse, network)
    assert kept["ncc_after"] >= other["ncc_after"] and "matched better" in other["reason"]

    with torch.no_grad():  # the flow head now pushes every voxel far along one axis
        registration.network.decoder.flow.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
    broken = json.loads((segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "broken") / "qc.json").read_text())
    network, coarse = broken["registration_checks"][:2]
    assert network["kept"] is False and coarse["kept"] is True and broken["registration"] == REGISTRATION_COARSE
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "broken" / "scan_a_image" / "warped_atlas_label.nii.gz"))) > 0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_case["scan_a_label"]))) > 0
    assert 2 * (label & truth).sum() / (label.sum() + truth.sum()) > 0.5 and np.isfinite(broken["folding_fraction"])
