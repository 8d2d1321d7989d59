"""The fine registration stage: recovery of a known deformation, folding, fallback, budgets, scaling and squaring."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.deformation import compose_scan_displacement, folding_fraction
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, make_working_grid
from RRLMedSAMLib.registration.fine_objective import folding_fraction_voxels
from RRLMedSAMLib.registration.fine_plan import (
    MIN_ITERATIONS,
    FineLevel,
    FinePlan,
    coarsen,
    fit_to_budget,
    plan_fine_stage,
)
from RRLMedSAMLib.registration.fine_stage import FineStage
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer, VelocityIntegrator
from RRLMedSAMLib.run.presets import get_preset

SIDE = 24
FINEST = WorkingGrid((SIDE, SIDE, SIDE), 1.0, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _phantom() -> np.ndarray:
    """A ``(24, 24, 24)`` volume in [0, 1]: two overlapping blobs and a ring, smooth enough to register."""
    z, y, x = np.meshgrid(*[np.arange(SIDE, dtype=np.float32)] * 3, indexing="ij")
    blob = np.exp(-((x - 9) ** 2 + (y - 12) ** 2 + (z - 11) ** 2) / 12.0)
    second = 0.6 * np.exp(-((x - 15) ** 2 + (y - 10) ** 2 + (z - 13) ** 2) / 8.0)
    radius = np.sqrt((x - 12) ** 2 + (y - 12) ** 2)
    ring = 0.4 * np.exp(-((radius - 8) ** 2) / 3.0) * np.exp(-((z - 12) ** 2) / 30.0)
    return np.clip(blob + second + ring, 0, 1).astype(np.float32)


def _known_displacement() -> torch.Tensor:
    """A smooth displacement ``(1, 3, 24, 24, 24)`` of up to 1.5 voxels (a bump moving the centre along x and y)."""
    z, y, x = torch.meshgrid(*[torch.arange(float(SIDE))] * 3, indexing="ij")
    bump = torch.exp(-((x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2) / 40.0)
    return torch.stack([0.3 * bump, -1.0 * bump, 1.5 * bump])[None]


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


def _plan(levels: int = 2, iterations: int = 30, diffeomorphic: bool = False) -> FinePlan:
    grids = [coarsen(FINEST, 2 ** k) for k in reversed(range(levels))]
    return FinePlan(tuple(FineLevel(g, iterations) for g in grids), FINEST, 30.0, 1.0, smoothness_weight=0.3,
                    control_spacing=2, learning_rate=0.5, diffeomorphic=diffeomorphic, ncc_weight=0.0)


def _pair() -> tuple[sitk.Image, sitk.Image, torch.Tensor]:
    atlas = _phantom()
    known = _known_displacement()
    scan = SpatialTransformer()(torch.from_numpy(atlas)[None, None], known)[0, 0].numpy()
    return _image(atlas), _image(scan), known


def _run(plan: FinePlan, **kwargs) -> tuple[np.ndarray, dict, sitk.Image, torch.Tensor]:
    atlas, scan, known = _pair()
    working = coarsen(FINEST, 4)
    stage = FineStage(plan, atlas, torch.device("cpu"))
    grid, ddf, details = stage.register(scan, sitk.Transform(), working, np.zeros((3, *working.shape_zyx), np.float32),
                                        **kwargs)
    assert grid == plan.levels[-1].grid
    return ddf, details, scan, known


def _error(ddf: np.ndarray, known: torch.Tensor) -> float:
    """Mean distance (voxels) to the known displacement inside the region it moves."""
    inside = known[0].norm(dim=0) > 0.3
    return float((torch.from_numpy(ddf) - known[0]).norm(dim=0)[inside].mean())


def test_a_known_deformation_is_recovered_better_than_identity_without_folding() -> None:
    ddf, details, scan, known = _run(_plan())
    identity_error = _error(np.zeros_like(ddf), known)
    assert _error(ddf, known) < 0.6 * identity_error
    assert details["fallbacks"] == 0 and details["iterations"] == 60 and details["resolution_mm"] == 1.0
    assert [level["spacing_mm"] for level in details["levels"]] == [2.0, 1.0]
    assert all(level["similarity_after"] < level["similarity_before"] for level in details["levels"])
    assert details["folding_fraction"] <= 0.005
    field = compose_scan_displacement(scan, sitk.AffineTransform(3), FINEST, ddf)
    assert folding_fraction(field) <= 0.005


def test_the_velocity_option_also_recovers_the_deformation() -> None:
    ddf, details, _, known = _run(_plan(diffeomorphic=True))
    assert details["diffeomorphic"] and details["fallbacks"] == 0
    assert _error(ddf, known) < 0.6 * _error(np.zeros_like(ddf), known)
    assert details["folding_fraction"] == 0.0


def test_a_level_that_makes_things_worse_is_undone() -> None:
    def harmful(inputs, start, objective, iterations, plan, deadline):
        rough = torch.randn(start.shape, generator=torch.Generator().manual_seed(0)) * 3.0
        return start + rough, iterations

    ddf, details, _, _ = _run(_plan(), optimise=harmful)
    assert details["fallbacks"] == 2 and not any(level["accepted"] for level in details["levels"])
    assert details["levels"][0]["similarity_after"] > details["levels"][0]["similarity_before"]
    assert np.array_equal(ddf, np.zeros_like(ddf))  # the start (no displacement) is kept
    assert details["final_similarity"] == details["levels"][-1]["similarity_before"]


def test_the_network_field_is_dropped_when_the_affine_start_matches_better() -> None:
    atlas, scan, _ = _pair()
    working = coarsen(FINEST, 4)
    wrong = np.full((3, *working.shape_zyx), 4.0, dtype=np.float32)
    stage = FineStage(_plan(iterations=5), atlas, torch.device("cpu"))
    _, _, details = stage.register(scan, sitk.Transform(), working, wrong)
    assert details["start"] == "affine"
    assert details["start_similarity"]["affine"] < details["start_similarity"]["network"]


def test_levels_and_iterations_shrink_with_the_budget() -> None:
    finest = WorkingGrid((128, 128, 128), 1.0, (0.0, 0.0, 0.0), FINEST.direction)
    previous = (math.inf, math.inf)
    for budget in (1000.0, 60.0, 10.0, 2.0, 0.1):
        grids, steps, cost = fit_to_budget(finest, 3, 40, budget, "cpu")
        assert len(grids) >= 1 and all(s >= MIN_ITERATIONS for s in steps)
        work = (len(grids), sum(s * np.prod(g.size_xyz) for g, s in zip(grids, steps)))
        assert work <= previous
        previous = work
        if len(grids) > 1:
            assert cost <= budget
    assert fit_to_budget(finest, 3, 40, 1000.0, "cpu")[1] == [40, 40, 40]
    plain, velocity = fit_to_budget(finest, 3, 40, 60.0, "cpu"), fit_to_budget(finest, 3, 40, 60.0, "cpu", factor=2.5)
    assert (len(velocity[0]), velocity[1][-1]) < (len(plain[0]), plain[1][-1])  # velocities cost more: less fits
    assert len(fit_to_budget(finest, 3, 40, 0.1, "cpu")[0]) == 1


def test_the_plan_follows_the_preset_and_its_override() -> None:
    array = np.zeros((40, 40, 40), dtype=np.uint16)
    array[10:30, 12:28, 8:32] = 1
    label = sitk.GetImageFromArray(array)
    label.SetSpacing((0.5, 0.5, 0.5))
    image = sitk.Cast(label, sitk.sitkFloat32)
    preset = get_preset("tiny", grid_size=16, refinement_grid_size=64, refinement_steps=4, fine_levels=2)
    working = make_working_grid(label, preset.grid_size)
    plan = plan_fine_stage(image, label, working, preset, torch.device("cpu"))
    assert plan is not None and len(plan.levels) == 2 and plan.levels[-1].iterations == 4
    # finest: the atlas's 0.5 mm voxels, but no finer than 1 mm unless the working grid already is
    assert plan.levels[-1].grid.spacing_mm == max(0.5, min(1.0, working.spacing_mm))
    assert plan_fine_stage(image, label, working, preset, torch.device("cpu"), iterations=0) is None
    assert plan_fine_stage(image, label, working, get_preset("tiny", refinement_grid_size=0), torch.device("cpu")) is None


def test_scaling_and_squaring_unfolds_a_velocity_whose_direct_use_folds() -> None:
    z, y, x = torch.meshgrid(*[torch.arange(32.0)] * 3, indexing="ij")
    push = 10.0 * torch.exp(-((x - 16) ** 2) / 18.0) * torch.exp(-((y - 16) ** 2 + (z - 16) ** 2) / 60.0)
    velocity = torch.stack([torch.zeros_like(x), torch.zeros_like(x), push])[None]  # along x, steeper than 1 voxel/voxel
    assert folding_fraction_voxels(velocity) > 0.005  # used as a displacement, it folds
    assert folding_fraction_voxels(VelocityIntegrator()(velocity)) == 0.0
