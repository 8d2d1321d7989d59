"""The fine stage and the fine-grid pass as segment runs them: displacement resampling between grids, nested level grids, a loaded run's plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from pipeline_fixtures import copy_run_with_fine_grid_pass, copy_run_with_preset

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.geometry.deformation import mm_to_voxel_ddf, resample_voxel_ddf, voxel_ddf_to_mm
from RRLMedSAMLib.geometry.working_grid import make_working_grid
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segmenter import open_segmenter
from RRLMedSAMLib.registration.fine_plan import coarsen
from RRLMedSAMLib.registration.fine_refinement import FineRefinement
from RRLMedSAMLib.registration.fine_stage import FineStage


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


def test_coarser_levels_cover_the_same_region_so_fields_move_between_them_exactly() -> None:
    """A level and the next coarser one share the outer corner: ``align_corners=False`` upsampling matches the physical resampling."""
    fine = make_working_grid(_oblique_label(), 32, divisor=4)
    coarse = coarsen(fine, 2)
    assert coarse.spacing_mm == 2 * fine.spacing_mm and tuple(2 * s for s in coarse.size_xyz) == fine.size_xyz
    corner = [np.asarray(g.origin_xyz) - np.asarray(g.direction).reshape(3, 3) @ np.full(3, g.spacing_mm / 2)
              for g in (fine, coarse)]
    assert np.allclose(corner[0], corner[1])
    ddf = np.random.default_rng(1).normal(size=(3, *coarse.shape_zyx)).astype(np.float32)
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(ddf)[None], scale_factor=2, mode="trilinear",
                                                align_corners=False)[0].numpy() * 2
    physical = resample_voxel_ddf(ddf, coarse, fine)
    assert np.allclose(upsampled[:, 2:-2, 2:-2, 2:-2], physical[:, 2:-2, 2:-2, 2:-2], atol=1e-4)


def test_a_loaded_run_shortens_the_working_grid_pass_only_when_the_fine_stage_follows(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run_with_preset(tiny_run, tmp_path / "run", refinement_coarse_steps=2)
    segmenter = open_segmenter(run, torch.device("cpu"))
    model, registration = segmenter.model, segmenter.registration
    assert registration is not None and isinstance(registration.refinement, FineStage)
    assert registration.refinement.plan.levels[-1].iterations <= model.preset.refinement_steps == 3
    assert registration.preset.instance_optimization_steps == 2
    unrefined = open_segmenter(run, torch.device("cpu"), SegmentOptions(refinement_steps=0)).registration
    assert unrefined is not None and unrefined.refinement is None
    assert unrefined.preset.instance_optimization_steps == model.preset.instance_optimization_steps == 5
    longer = open_segmenter(run, torch.device("cpu"), SegmentOptions(refinement_steps=5)).registration
    assert longer is not None and longer.refinement is not None
    assert all(level.iterations <= 5 for level in longer.refinement.plan.levels)
    assert longer.refinement.plan.levels[0].iterations == 5


def test_the_fine_grid_pass_runs_when_the_fine_stage_is_off_and_gives_way_to_it(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    run = copy_run_with_fine_grid_pass(tiny_run, tmp_path / "run", steps=3)
    registration = open_segmenter(run, torch.device("cpu")).registration
    assert registration is not None and isinstance(registration.refinement, FineRefinement)
    assert registration.refinement.grid.spacing_mm < 0.9 * registration.grid.spacing_mm
    assert registration.preset.instance_optimization_steps == 2
    assert open_segmenter(run, torch.device("cpu"), SegmentOptions(refinement_steps=0)).registration.refinement is None
    mind = open_segmenter(run, torch.device("cpu"), SegmentOptions(refinement_steps=4)).registration
    assert isinstance(mind.refinement, FineStage)

    assert main(["segment", "--model", str(run), "--images", str(tiny_case["scan_a"]), "--out", str(tmp_path / "seg")]) == 0
    qc = json.loads((tmp_path / "seg" / "scan_a_image" / "qc.json").read_text())
    assert "fine-grid refinement (3 steps" in qc["registration"]
    assert qc["fine_registration"]["stage"] == "fine-grid NCC refinement"
    assert qc["fine_registration"]["iterations"] == 3 and 0 <= qc["fine_registration"]["folding_fraction"] < 0.05
    field = sitk.ReadImage(str(tmp_path / "seg" / "scan_a_image" / "deformation.nrrd"))
    assert field.GetNumberOfComponentsPerPixel() == 3
    assert np.isfinite(sitk.GetArrayViewFromImage(field)).all()
