"""Folding penalty and the safety checks between registration steps: a step that makes the match worse is undone, and qc.json says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from pipeline_fixtures import assert_registered_field_reuses_its_composition, copy_run_with_fine_grid_pass, unrefined_segmenter

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.inference.segment_steps import segment_scan
from RRLMedSAMLib.inference.segmenter import open_segmenter
from RRLMedSAMLib.registration.fine_refinement import FineRefinement
from RRLMedSAMLib.registration.losses import (
    FOLDING_MARGIN,
    RegistrationObjective,
    cell_corner_jacobians,
    folded_cell_fraction,
    folding_penalty,
    jacobian_determinant_voxels,
)
from RRLMedSAMLib.registration.register import REGISTRATION_DEFORMABLE, register_on_grid
from RRLMedSAMLib.registration.scan_folding import ScanGridFolding
from RRLMedSAMLib.registration.step_checks import StepJudge


def _blob_pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth blob (atlas), the same blob moved by 2 voxels along x (scan), and the atlas's region."""
    z, y, x = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")
    atlas = torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - 11) ** 2) / 18.0)[None, None]
    scan = torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - 13) ** 2) / 18.0)[None, None]
    return atlas, scan, (atlas > 0.3).float()


def test_the_folding_penalty_sees_what_central_differences_miss_and_unfolds_a_field() -> None:
    z, y, x = torch.meshgrid(*[torch.arange(10.0)] * 3, indexing="ij")
    checkerboard = torch.zeros(1, 3, 10, 10, 10)
    checkerboard[0, 0] = ((z + y + x) % 2 * 2 - 1) * 0.8
    assert (jacobian_determinant_voxels(checkerboard) <= 0).sum() == 0
    assert folding_penalty(checkerboard) > 0.1 and folded_cell_fraction(checkerboard) == 1.0
    linear = torch.stack([0.1 * z, -0.05 * y, 0.2 * x])[None]
    assert float(folding_penalty(linear)) == 0.0

    field = (torch.randn(1, 3, 12, 12, 12, generator=torch.Generator().manual_seed(0)) * 0.7).requires_grad_(True)
    folded = folded_cell_fraction(field.detach())
    optimizer = torch.optim.Adam([field], lr=0.02)
    for _ in range(200):
        optimizer.zero_grad()
        folding_penalty(field).backward()
        optimizer.step()
    assert folded > 0.3 and folded_cell_fraction(field.detach()) < 0.02


def test_the_folding_penalty_has_the_value_and_gradient_of_its_dense_formula() -> None:
    field = torch.randn(2, 3, 9, 10, 11, generator=torch.Generator().manual_seed(3)) * 0.4
    sparse, dense = field.clone().requires_grad_(True), field.clone().requires_grad_(True)
    folding_penalty(sparse).backward()
    torch.relu(FOLDING_MARGIN - cell_corner_jacobians(dense)).mean().backward()
    assert sparse.grad is not None and dense.grad is not None
    assert torch.allclose(sparse.grad, dense.grad, atol=1e-8) and float(sparse.grad.abs().sum()) > 0
    smooth = torch.zeros(1, 3, 6, 6, 6, requires_grad=True)
    folding_penalty(smooth).backward()
    assert smooth.grad is not None and float(smooth.grad.abs().sum()) == 0.0


def test_the_objective_adds_the_folding_term_only_when_weighted() -> None:
    atlas, scan, _ = _blob_pair()
    ddf = torch.randn(1, 3, 24, 24, 24, generator=torch.Generator().manual_seed(1)) * 2
    plain_loss, plain_parts = RegistrationObjective(5, 0.5)(atlas, scan, ddf)
    loss, parts = RegistrationObjective(5, 0.5, folding_weight=2.0)(atlas, scan, ddf)
    assert "folding" not in plain_parts and parts["folding"] > 0
    assert abs(float(loss - plain_loss) - 2.0 * parts["folding"]) < 1e-5


def test_the_judge_keeps_a_better_step_and_undoes_worse_implausible_or_folding_ones() -> None:
    atlas, scan, mask = _blob_pair()
    judge = StepJudge(5, atlas, scan, mask)
    start = torch.zeros(1, 3, 24, 24, 24)
    toward = start.clone()
    toward[:, 2] = -2.0  # samples the atlas 2 voxels to the left: the blob moves onto the scan's
    good = judge.check("good", start, toward)
    assert good.kept and good.ncc_after > good.ncc_before and abs(good.volume_ratio - 1) < 0.05 and good.reason == ""

    away = start.clone()
    away[:, 2] = 3.0
    worse = judge.check("worse", start, away)
    assert not worse.kept and "similarity fell" in worse.reason

    z, y, x = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")
    shrink = torch.stack([(z - 12) * 3.0, (y - 12) * 3.0, (x - 11) * 3.0])[None]  # samples 4x further out: the blob shrinks
    small = StepJudge(5, atlas, atlas, mask).check("shrink", start, shrink)
    assert not small.kept and "labelled volume changed" in small.reason and small.volume_ratio < 1 / 3

    noisy = toward + torch.randn(1, 3, 24, 24, 24, generator=torch.Generator().manual_seed(2)) * 3
    folding = judge.check("folding", start, noisy)
    assert not folding.kept and "fold" in folding.reason and folding.folding_after > 0.005
    assert json.dumps(folding.to_dict())


def test_the_similarity_ignores_flat_backgrounds_where_monai_local_ncc_is_noise() -> None:
    """A flat non-zero background (air in a CT) drives MONAI's local NCC above 1; the judge measures the textured voxels."""
    z, y, x = torch.meshgrid(*[torch.arange(24.0)] * 3, indexing="ij")

    def blob(centre_x: float, background: float) -> torch.Tensor:
        return (background + 0.15 * torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - centre_x) ** 2) / 8.0))[None, None]

    monai_ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=7)
    shift = torch.zeros(1, 3, 24, 24, 24)
    shift[0, 2] = -4.0  # atlas point = grid point - 4 voxels along x: puts the atlas's blob on the scan's
    raw, measured = [], []
    for atlas_level, scan_level in ((0.824, 0.838), (0.0, 0.0), (0.5, 0.5)):
        atlas, scan = blob(10, atlas_level), blob(14, scan_level)
        judge = StepJudge(7, atlas, scan, (atlas > atlas_level + 0.05).float())
        raw.append(float(-monai_ncc(atlas, scan)))
        measured.append(judge.similarity(atlas))
        aligned = judge.similarity(judge.warp(atlas, shift))
        assert 0.0 <= measured[-1] < 0.5 < 0.99 < aligned <= 1.0
        assert judge.check("align", torch.zeros_like(shift), shift).kept
    assert raw[0] > 1.0 and max(raw) - min(raw) > 0.5  # the flat background decides MONAI's mean
    assert max(measured) - min(measured) < 0.02  # not the judge's


def test_a_registration_network_gone_wrong_falls_back_to_the_affine_start_and_qc_says_so(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    segmenter = unrefined_segmenter(tiny_run, tmp_path / "run")
    registration = segmenter.registration
    assert registration is not None
    work = segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "sane")
    sane = json.loads((work / "qc.json").read_text())
    assert sane["registration"] == REGISTRATION_DEFORMABLE and sane["registration_checks"][0]["kept"] is True

    with torch.no_grad():  # the flow head now pushes every voxel far along one axis
        registration.network.decoder.flow.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
    broken = segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "broken")
    qc = json.loads((broken / "qc.json").read_text())
    first = qc["registration_checks"][0]
    assert first["kept"] is False and first["ncc_after"] < first["ncc_before"] and first["reason"]
    assert qc["registration_checks"][1]["step"] == "instance optimisation from the affine start"
    assert "lost to" in qc["registration"]
    assert qc["folding_fraction"] <= 0.005
    label = sitk.ReadImage(str(broken / "warped_atlas_label.nii.gz"))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny_case["scan_a_label"]))) > 0
    warped = sitk.GetArrayFromImage(label) > 0
    assert 2 * (warped & truth).sum() / (warped.sum() + truth.sum()) > 0.5


def test_a_folding_fine_grid_pass_is_shortened_or_undone_and_the_default_penalty_keeps_it(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    """Without smoothness or folding penalties the per-voxel pass folds; the check shortens the step, or undoes the
    pass, until it does not. With the preset's folding penalty the same 60-iteration pass is kept (whole or at 3/4)."""
    default_weight = json.loads((tiny_run / "config.json").read_text())["preset"]["fine_grid_folding_weight"]
    assert default_weight > 0
    results = {}
    for name, steps, folding_weight in (("short", 4, 0.0), ("long", 60, 0.0), ("penalised", 60, default_weight)):
        run = copy_run_with_fine_grid_pass(tiny_run, tmp_path / f"run-{name}", steps, fine_grid_smoothness_weight=0.0,
                                           fine_grid_folding_weight=folding_weight)
        segmenter = open_segmenter(run, torch.device("cpu"))
        results[name] = json.loads((segment_scan(segmenter, tiny_case["scan_a"], tmp_path / name) / "qc.json").read_text())

    short = results["short"]["fine_registration"]
    assert short["kept"] is True and 0 < short["step_fraction"] < 1 and short["folding_fraction"] <= 0.005
    assert short["rejected_steps"][0]["step_fraction"] == 1.0 and "cells fold" in short["rejected_steps"][0]["reason"]
    long = results["long"]
    assert long["fine_registration"]["kept"] is False and long["fine_registration"]["step_fraction"] == 0.0
    assert [step["step_fraction"] for step in long["fine_registration"]["rejected_steps"]] == [1.0, 0.75, 0.5, 0.25]
    assert long["registration_checks"][-1]["step"] == "fine-grid refinement" and long["registration_checks"][-1]["kept"] is False
    field = sitk.ReadImage(str(tmp_path / "long" / "scan_a_image" / "deformation.nrrd"))
    assert long["folding_fraction"] <= 0.005 and np.isfinite(sitk.GetArrayViewFromImage(field)).all()
    penalised = results["penalised"]["fine_registration"]
    assert penalised["kept"] is True and penalised["step_fraction"] >= 0.75 and penalised["folding_fraction"] <= 0.005


def test_the_fine_pass_is_judged_by_folding_on_the_scan_grid_and_its_composed_field_is_reused(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    """The scan-grid measure can reject a step the fine grid's cells accept; the kept field's composition is handed on."""
    run = copy_run_with_fine_grid_pass(tiny_run, tmp_path / "run", steps=4)
    registration = open_segmenter(run, torch.device("cpu")).registration
    assert registration is not None and isinstance(registration.refinement, FineRefinement)
    scan, start, _ = assert_registered_field_reuses_its_composition(registration, tiny_case["scan_a"])

    measured = ScanGridFolding(scan, start)
    working = register_on_grid(registration.network, registration.atlas_working,
                               normalize_intensity(resample_to_grid(scan, registration.grid, start)), registration.preset,
                               registration.device)[0].numpy()
    kept_grid, kept, kept_details = registration.refinement.register(scan, start, registration.grid, working)
    assert kept_details["kept"] and kept_grid != registration.grid
    kept_size = np.abs(kept).max()

    def strict(grid: WorkingGrid, ddf_zyx: np.ndarray) -> float:
        """The real scan-grid measure, plus 1 % for any fine-grid field that moves as far as the step kept without it."""
        return measured(grid, ddf_zyx) + (0.01 if grid != registration.grid and np.abs(ddf_zyx).max() >= 0.99 * kept_size else 0.0)

    grid, ddf, details = registration.refinement.register(scan, start, registration.grid, working, strict)
    reasons = [step["reason"] for step in details["rejected_steps"]]
    assert details["step_fraction"] < kept_details["step_fraction"] and any("of the scan's voxels fold" in r for r in reasons)
    assert strict(grid, ddf) <= 0.005
