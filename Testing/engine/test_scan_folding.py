"""Folding on the scan's own grid: a working-grid step that folds too many scan voxels is shortened, and qc.json says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from pipeline_fixtures import assert_registered_field_reuses_its_composition, unrefined_segmenter

from RRLMedSAMLib.geometry.deformation import folding_fraction
from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.inference.segment_steps import segment_scan
from RRLMedSAMLib.registration.register import (
    REGISTRATION_AFFINE_UNFOLDED,
    REGISTRATION_DEFORMABLE,
    describe_working_registration,
)
from RRLMedSAMLib.registration.scan_folding import SCAN_GRID_STEP, ScanGridFolding, shorten_until_unfolded
from RRLMedSAMLib.registration.step_checks import FOLDING_LIMIT, StepJudge

SIZE = 24


def _scan_and_grid() -> tuple[sitk.Image, WorkingGrid]:
    """A working grid of 24^3 1-mm voxels, and a scan on the same voxels that reaches 8 mm further along x."""
    scan = sitk.Image([SIZE + 8, SIZE, SIZE], sitk.sitkFloat32)
    return scan, WorkingGrid((SIZE,) * 3, 1.0, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def _blob_pair_and_folding_step() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Atlas and scan blobs 2 voxels apart along x, the atlas's region, and a step that aligns them but folds on the scan.

    The step is the aligning shift plus, on the grid's last x layer (flat, far from the blobs,
    ``z < 6``), a ripple ``a sin(k y)`` of ``dy`` with ``a k = 1.5`` and ``k = 2 pi / 8``. Its
    Jacobian folds there at the whole step and at 3/4 of it, not from half of it on. The grid's
    cells see one folded layer; the scan, where the field is extended beyond the grid by its
    nearest value, sees it in every layer beyond: more than the folding limit.
    """
    z, y, x = torch.meshgrid(*[torch.arange(float(SIZE))] * 3, indexing="ij")
    atlas = torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - 11) ** 2) / 18.0)[None, None]
    scan = torch.exp(-((z - 12) ** 2 + (y - 12) ** 2 + (x - 13) ** 2) / 18.0)[None, None]
    step = torch.zeros(1, 3, SIZE, SIZE, SIZE)
    step[0, 2] = -2.0
    k = 2 * np.pi / 8
    step[0, 1] = torch.where((x == SIZE - 1) & (z < 6), (1.5 / k) * torch.sin(k * y), torch.zeros_like(y))
    return atlas, scan, (atlas > 0.3).float(), step


def test_a_step_that_folds_the_scans_voxels_is_shortened_to_the_longest_fraction_that_does_not() -> None:
    atlas, scan_array, mask, step = _blob_pair_and_folding_step()
    judge = StepJudge(7, atlas, scan_array, mask)
    affine_start = judge.measure(torch.zeros_like(step))
    cells = judge.compare("step", affine_start, judge.measure(step))
    assert cells.kept and 0 < cells.folding_after <= FOLDING_LIMIT  # the grid's cells alone would keep it
    scan, grid = _scan_and_grid()
    on_scan = ScanGridFolding(scan, sitk.Transform(3, sitk.sitkIdentity))
    whole = on_scan(grid, step[0].numpy())
    assert whole > FOLDING_LIMIT

    kept, checks = shorten_until_unfolded(judge, affine_start, step, on_scan.of_tensor(grid))
    assert torch.equal(kept, 0.5 * step)
    assert [check.kept for check in checks] == [False, False, True]
    assert checks[0].step == SCAN_GRID_STEP and checks[0].folding_after == whole
    assert "of the scan's voxels fold" in checks[0].reason and checks[-1].folding_after <= FOLDING_LIMIT
    assert checks[-1].ncc_after > checks[-1].ncc_before  # still better matched than the affine start
    composed = on_scan.displacement_of(grid, kept[0].numpy())  # the kept field's composition is handed on
    assert composed is not None and folding_fraction(composed) == checks[-1].folding_after
    assert describe_working_registration([judge.compare("deformable registration (working grid)", affine_start,
                                                        judge.measure(step)), *checks]) == (
        f"{REGISTRATION_DEFORMABLE}, 50 % of the step ({checks[0].reason} at the whole step)")

    # a step that folds at every length is undone to the affine start
    everywhere = step.clone()
    everywhere[0, 2] += 40.0 * torch.sin(2 * np.pi * torch.arange(float(SIZE)) / 4)[None, None, :] / (2 * np.pi)
    undone, checks = shorten_until_unfolded(judge, affine_start, everywhere, on_scan.of_tensor(grid))
    assert not undone.any() and len(checks) == 4 and not any(check.kept for check in checks)
    assert describe_working_registration([judge.compare("deformable registration (working grid)", affine_start,
                                                        judge.measure(step)), *checks]) == REGISTRATION_AFFINE_UNFOLDED

    # a step that folds little enough is kept as it is, with no check added
    unfolded, checks = shorten_until_unfolded(judge, affine_start, 0.5 * step, on_scan.of_tensor(grid))
    assert checks == [] and torch.equal(unfolded, 0.5 * step)


def test_without_a_fine_pass_the_working_field_is_judged_on_the_scan_grid_and_its_composition_reused(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    segmenter = unrefined_segmenter(tiny_run, tmp_path / "run")
    registration = segmenter.registration
    assert registration is not None and registration.refinement is None
    assert_registered_field_reuses_its_composition(registration, tiny_case["scan_a"])
    qc = json.loads((segment_scan(segmenter, tiny_case["scan_a"], tmp_path / "out") / "qc.json").read_text())
    assert qc["folding_fraction"] <= FOLDING_LIMIT
    assert qc["registration"] == REGISTRATION_DEFORMABLE
    assert not any(check["step"].startswith(SCAN_GRID_STEP) for check in qc["registration_checks"])
