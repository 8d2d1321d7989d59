"""The networks' working grid: never finer than the atlas's voxels, recorded by training, read back by segment."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, make_working_grid
from RRLMedSAMLib.inference.trained_model import load_trained_model


def _label(size_xyz: tuple[int, int, int], spacing: tuple[float, float, float]) -> sitk.Image:
    """A box label filling the middle half of an image of ``size_xyz`` voxels."""
    array = np.zeros(size_xyz[::-1], dtype=np.uint16)
    z, y, x = (slice(n // 4, 3 * n // 4) for n in array.shape)
    array[z, y, x] = 1
    label = sitk.GetImageFromArray(array)
    label.SetSpacing(spacing)
    return label


def test_a_small_field_of_view_is_not_upsampled() -> None:
    """A prostate-like atlas (64 x 64 x 60 voxels of 0.4 mm) keeps 0.4 mm voxels on a 96-voxel preset."""
    label = _label((64, 64, 60), (0.4, 0.4, 0.4))
    assert make_working_grid(label, 96, divisor=16, min_voxel_mm=0.0).spacing_mm < 0.3
    grid = make_working_grid(label, 96, divisor=16)
    assert np.isclose(grid.spacing_mm, 0.4)
    assert all(side % 16 == 0 for side in grid.size_xyz) and max(grid.size_xyz) == 64


def test_the_floor_is_the_finest_axis_and_coarse_atlases_are_unchanged() -> None:
    anisotropic = _label((40, 40, 12), (0.5, 0.5, 3.0))
    assert np.isclose(make_working_grid(anisotropic, 96, divisor=16).spacing_mm, 0.5)
    coarse = _label((160, 160, 120), (1.0, 1.0, 1.0))
    assert make_working_grid(coarse, 64, divisor=16) == make_working_grid(coarse, 64, divisor=16, min_voxel_mm=0.0)


def test_training_records_the_grid_and_segment_uses_it(tiny_run: Path, tmp_path: Path) -> None:
    config = json.loads((tiny_run / "config.json").read_text())
    stored = WorkingGrid.from_dict(config["working_grid"])
    card = json.loads((tiny_run / "model_card.json").read_text())
    assert card["settings"]["working_grid"] == config["working_grid"]
    assert load_trained_model(tiny_run, torch.device("cpu")).grid == stored

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    moved = stored.to_dict() | {"origin_xyz": [v + 1.5 for v in stored.origin_xyz]}
    (run / "config.json").write_text(json.dumps(config | {"working_grid": moved}))
    assert load_trained_model(run, torch.device("cpu")).grid == WorkingGrid.from_dict(moved)
