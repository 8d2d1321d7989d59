"""The fine-grid refinement of segment: displacement resampling between grids, the optimiser, the plan."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.deformation import mm_to_voxel_ddf, resample_voxel_ddf, voxel_ddf_to_mm
from RRLMedSAMLib.geometry.working_grid import make_working_grid
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segmenter import open_segmenter
from RRLMedSAMLib.registration.fine_refinement import plan_fine_refinement
from RRLMedSAMLib.registration.instance_optimization import refine_displacement
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.run.presets import get_preset


def _oblique_label(spacing: tuple[float, float, float] = (0.8, 1.2, 2.0)) -> sitk.Image:
    array = np.zeros((16, 20, 24), dtype=np.uint16)
    array[4:12, 5:15, 6:18] = 1
    label = sitk.GetImageFromArray(array)
    label.SetSpacing(spacing)
    label.SetDirection(sitk.VersorTransform((0.2, 0.7, 0.1), 0.5).GetMatrix())
    label.SetOrigin((3.0, -7.0, 11.0))
    return label


def _centres_mm(grid) -> np.ndarray:
    """Physical LPS positions ``(D, H, W, 3)`` of the grid's voxel centres."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid.shape_zyx], indexing="ij")
    index = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (index @ grid.index_to_physical_matrix().T)[..., :3]


def test_millimetres_and_voxels_convert_back_and_forth() -> None:
    grid = make_working_grid(_oblique_label(), 16)
    ddf = np.random.default_rng(0).normal(size=(3, *grid.shape_zyx)).astype(np.float32)
    assert np.allclose(mm_to_voxel_ddf(voxel_ddf_to_mm(ddf, grid), grid), ddf, atol=1e-5)


def test_resampled_displacement_keeps_a_linear_field_in_millimetres() -> None:
    """A field linear in physical position is reproduced exactly (trilinear) inside the coarse grid."""
    label = _oblique_label()
    coarse, fine = make_working_grid(label, 16), make_working_grid(label, 32, divisor=2)
    assert fine.spacing_mm < coarse.spacing_mm
    matrix, offset = np.array([[0.02, -0.01, 0.03], [0.0, 0.04, -0.02], [0.01, 0.0, -0.03]]), np.array([1.5, -0.5, 2.0])
    coarse_ddf = mm_to_voxel_ddf(_centres_mm(coarse) @ matrix.T + offset, coarse)
    fine_mm = voxel_ddf_to_mm(resample_voxel_ddf(coarse_ddf, coarse, fine), fine)
    centres = _centres_mm(fine)
    inverse = np.linalg.inv(coarse.index_to_physical_matrix())
    index = centres @ inverse[:3, :3].T + inverse[:3, 3]
    inside = np.all((index >= 0) & (index <= np.array(coarse.size_xyz) - 1), axis=-1)
    assert inside.sum() > 0.5 * inside.size
    assert np.allclose(fine_mm[inside], centres[inside] @ matrix.T + offset, atol=1e-4)


def _blob(shift: float) -> torch.Tensor:
    z, y, x = torch.meshgrid(*[torch.arange(20.0)] * 3, indexing="ij")
    return torch.exp(-((x - 10 - shift) ** 2 + (y - 10) ** 2 + (z - 10) ** 2) / 18.0)[None, None]


def test_refinement_moves_the_moving_image_onto_the_fixed_one() -> None:
    moving, fixed, start = _blob(0.0), _blob(2.0), torch.zeros((1, 3, 20, 20, 20))
    objective = RegistrationObjective(ncc_kernel=5, smoothness_weight=0.1)
    assert torch.equal(refine_displacement(objective, moving, fixed, start, steps=0), start)
    refined = refine_displacement(objective, moving, fixed, start, steps=40)
    before, _ = objective(moving, fixed, start)
    after, _ = objective(moving, fixed, refined)
    assert float(after) < float(before) - 0.05
    # the fixed blob sits 2 voxels further along x: the atlas is sampled 2 voxels back (dx < 0)
    assert float(refined[0, 2, 8:13, 8:13, 10:15].mean()) < -0.5


def test_refinement_plan_is_finer_than_the_working_grid_or_absent() -> None:
    atlas_image = sitk.Cast(_oblique_label(spacing=(0.5, 0.5, 0.5)), sitk.sitkFloat32)
    atlas_label = _oblique_label(spacing=(0.5, 0.5, 0.5))
    preset = get_preset("tiny", grid_size=16, refinement_grid_size=32, refinement_steps=2)
    working = make_working_grid(atlas_label, preset.grid_size)
    plan = plan_fine_refinement(atlas_image, atlas_label, working, preset)
    assert plan is not None and plan.steps == 2 and plan.grid.spacing_mm <= 0.9 * working.spacing_mm
    assert plan.atlas.shape == plan.grid.shape_zyx and 0.0 <= plan.atlas.min() and plan.atlas.max() <= 1.0
    assert plan_fine_refinement(atlas_image, atlas_label, working, preset, steps=0) is None
    assert plan_fine_refinement(atlas_image, atlas_label, working, get_preset("tiny", refinement_grid_size=0)) is None
    coarse_atlas = sitk.Cast(_oblique_label(spacing=(working.spacing_mm,) * 3), sitk.sitkFloat32)
    assert plan_fine_refinement(coarse_atlas, atlas_label, working, preset) is None  # never finer than the atlas


def test_a_loaded_run_shortens_the_working_grid_pass_only_when_the_finer_pass_follows(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["preset"]["refinement_coarse_steps"] = 2
    (run / "config.json").write_text(json.dumps(config))
    segmenter = open_segmenter(run, torch.device("cpu"))
    model, registration = segmenter.model, segmenter.registration
    assert registration is not None and registration.refinement is not None
    assert registration.refinement.steps == model.preset.refinement_steps == 3
    assert registration.preset.instance_optimization_steps == 2
    unrefined = open_segmenter(run, torch.device("cpu"), SegmentOptions(refinement_steps=0)).registration
    assert unrefined is not None and unrefined.refinement is None
    assert unrefined.preset.instance_optimization_steps == model.preset.instance_optimization_steps == 5
