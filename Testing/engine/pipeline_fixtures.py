"""Session fixtures for pipeline tests: one tiny case, trained and segmented once through the real command line.

Imported by ``conftest.py`` so that every engine test module can use them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_case import engine, make_case, train_args

from RRLMedSAMLib.geometry.deformation import compose_scan_displacement
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segmenter import Segmenter, open_segmenter
from RRLMedSAMLib.registration.register import Field, Registration, register


@pytest.fixture(scope="session")
def tiny_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_case(tmp_path_factory.mktemp("tiny_case"))


@pytest.fixture(scope="session")
def tiny_run(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training with a volume calibration (real subprocess)."""
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    result = engine(*train_args(tiny_case, out, "--set", "registration_steps=30", "--set", "segmentation_steps=30",
                                "--volume-calibration", "on"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_results(tiny_case: dict[str, Path], tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``segment`` output folder of both scans (real subprocess)."""
    out = tmp_path_factory.mktemp("tiny_results")
    result = engine("segment", "--model", tiny_run, "--image", tiny_case["scan_a"], tiny_case["scan_b"], "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def copy_run_with_preset(run: Path, destination: Path, **changes: object) -> Path:
    """A copy of the finished ``run`` at ``destination`` whose stored preset has ``changes`` applied."""
    shutil.copytree(run, destination)
    config = json.loads((destination / "config.json").read_text())
    config["preset"].update(changes)
    (destination / "config.json").write_text(json.dumps(config))
    return destination


def unrefined_segmenter(run: Path, destination: Path, **changes: object) -> Segmenter:
    """A CPU segmenter of a copy of ``run`` (its preset with ``changes``) whose registration ends on the working grid."""
    return open_segmenter(copy_run_with_preset(run, destination, **changes), torch.device("cpu"),
                          SegmentOptions(refinement_steps=0))


def assert_registered_field_reuses_its_composition(registration: Registration, scan_path: Path) -> tuple[sitk.Image, sitk.Transform, Field]:
    """Register ``scan_path`` from the identity start; the field must hand on its composition onto the scan's grid.

    Returns the scan, the start and the field.
    """
    scan = sitk.ReadImage(str(scan_path), sitk.sitkFloat32)
    start = sitk.Transform(3, sitk.sitkIdentity)
    field = register(registration, scan, start)
    assert field.scan_displacement is not None
    again = compose_scan_displacement(scan, start, field.grid, field.ddf)
    assert np.allclose(sitk.GetArrayViewFromImage(field.scan_displacement), sitk.GetArrayViewFromImage(again))
    return scan, start, field


def copy_run_with_fine_grid_pass(run: Path, destination: Path, steps: int, **changes: object) -> Path:
    """A copy of ``run`` refined by the fine-grid NCC pass (48-voxel grid, ``steps`` iterations, MIND stage off), plus ``changes``."""
    return copy_run_with_preset(run, destination, refinement_steps=0, fine_grid_size=48, fine_grid_steps=steps,
                                refinement_coarse_steps=2, **changes)
