"""The atlas prior: perturbed training priors, fusion, and how segment combines network and registration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_image

from RRLMedSAMLib.geometry.deformation import fuse_correction_on_scan
from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.inference.segment_options import BARE
from RRLMedSAMLib.inference.segment_steps import segment_scan
from RRLMedSAMLib.inference.segmenter import prepare_segmenter
from RRLMedSAMLib.inference.trained_model import load_trained_model
from RRLMedSAMLib.models.atlas_prior import (
    PRIOR_FLOOR,
    fuse_with_prior,
    one_hot,
    perturbed_prior,
    restore_vanished_structures,
    torch_generator,
)
from RRLMedSAMLib.run.presets import PRESETS, Preset


def _classes() -> torch.Tensor:
    classes = torch.zeros((2, 1, 16, 16, 16), dtype=torch.long)
    classes[:, :, 4:12, 4:12, 4:12] = 1
    classes[:, :, 6:10, 6:10, 6:10] = 2
    return classes


def test_unperturbed_prior_is_the_one_hot_target() -> None:
    prior = perturbed_prior(_classes(), 3, torch_generator(0), max_voxels=0.0)
    assert torch.equal(prior.argmax(dim=1, keepdim=True), _classes())
    assert torch.equal(prior, one_hot(_classes(), 3))


def test_perturbed_prior_is_a_deterministic_soft_distribution_that_moves_boundaries() -> None:
    first = perturbed_prior(_classes(), 3, torch_generator(7), max_voxels=2.0)
    again = perturbed_prior(_classes(), 3, torch_generator(7), max_voxels=2.0)
    other = perturbed_prior(_classes(), 3, torch_generator(8), max_voxels=2.0)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.allclose(first.sum(dim=1), torch.ones(2, 16, 16, 16), atol=1e-5)
    assert (first.argmax(dim=1, keepdim=True) != _classes()).any()


def test_fusion_keeps_the_prior_unless_the_logits_outweigh_the_floor() -> None:
    prior = one_hot(_classes(), 3)
    assert torch.equal(fuse_with_prior(torch.zeros_like(prior), prior).argmax(dim=1, keepdim=True), _classes())
    margin = float(np.log((1.0 + PRIOR_FLOOR) / PRIOR_FLOOR))
    weak = torch.zeros_like(prior)
    weak[:, 0] = 0.9 * margin
    assert torch.equal(fuse_with_prior(weak, prior).argmax(dim=1, keepdim=True), _classes())
    strong = torch.zeros_like(prior)
    strong[:, 0] = 1.1 * margin
    assert (fuse_with_prior(strong, prior).argmax(dim=1) == 0).all()


def test_a_stored_preset_reads_back_as_written() -> None:
    stored = PRESETS["tiny"].to_dict()
    assert Preset.from_dict(stored) == PRESETS["tiny"] and Preset.from_dict(stored).atlas_prior
    assert not Preset.from_dict(stored | {"atlas_prior": False}).atlas_prior


def _segmentation_head(model) -> torch.nn.Conv3d:
    """The last 1x1x1 convolution producing the final segmentation logits."""
    network = model.networks["ap_decoder" if model.method.family == "rrl" else "segmentation"]
    heads = [m for m in network.modules() if isinstance(m, torch.nn.Conv3d) and m.out_channels == len(model.label_ids) + 1]
    return heads[-1]


@pytest.mark.parametrize("bias", [None, +50.0, -50.0])
def test_segment_keeps_registration_where_the_network_is_silent(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, bias: float | None
) -> None:
    """Zero logits give exactly ``warped_atlas_label``; a logit far above the floor overrules it, but
    no structure is deleted: one pushed out (by a rival or by its own logit far below) comes back."""
    model = load_trained_model(tiny_run, torch.device("cpu"))
    assert model.preset.atlas_prior
    head = _segmentation_head(model)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        if bias is not None:
            head.bias[1] = bias
    folder = segment_scan(prepare_segmenter(model, BARE), tiny_case["scan_a"], tmp_path)
    segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "segmentation.nii.gz")))
    registration = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "warped_atlas_label.nii.gz")))
    qc = json.loads((folder / "qc.json").read_text())
    assert qc["atlas_prior"] is True
    assert qc["voxels_differing_from_registration"] == int((segmentation != registration).sum())
    first, others = model.label_ids[0], model.label_ids[1:]
    if bias is None:
        np.testing.assert_array_equal(segmentation, registration)
        assert qc["structures_restored_from_registration"] == []
    elif bias > 0:
        assert (segmentation == first).sum() > (registration == first).sum()
        assert (segmentation == first).sum() > 0.3 * segmentation.size
        assert qc["structures_restored_from_registration"] == list(others)
        for label in others:
            np.testing.assert_array_equal(segmentation[registration == label], label)
    else:
        assert qc["structures_restored_from_registration"] == [first]
        np.testing.assert_array_equal(segmentation, registration)


def test_restore_vanished_structures_brings_back_only_what_fell_below_the_fraction() -> None:
    registration = np.zeros((4, 10, 10), np.int64)
    registration[:, :5, :5] = 1   # 100 voxels
    registration[:, 5:, 5:] = 2   # 100 voxels
    registration[0, 0, 9] = 3     # 1 voxel
    fused = registration.copy()
    fused[:, :5, :3] = 0          # class 1 keeps 40 of 100 -> restored
    fused[:, 5:, 5:7] = 0         # class 2 keeps 60 of 100 -> left as fused
    fused[:, 9, 0] = 2            # class 2 grows elsewhere: not affected
    repaired, restored = restore_vanished_structures(fused, registration, 0.5)
    assert restored == [1]        # class 3 keeps its single voxel
    np.testing.assert_array_equal(repaired[registration == 1], 1)
    np.testing.assert_array_equal(repaired[registration != 1], fused[registration != 1])
    unchanged, none = restore_vanished_structures(registration, registration)
    assert none == [] and unchanged is registration


def test_fusion_on_the_scan_grid_keeps_registration_and_applies_strong_corrections() -> None:
    """Native-resolution fusion: zero correction = registration classes; a strong one wins inside its region only."""
    grid = WorkingGrid(size_xyz=(16, 16, 16), spacing_mm=2.0, origin_xyz=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    scan = make_image(np.zeros((24, 28, 20), np.float32))
    registration = np.zeros((24, 28, 20), np.int64)
    registration[8:16, 8:20, 6:14] = 1
    shift = sitk.AffineTransform(3)
    shift.SetTranslation((1.5, -2.0, 0.5))
    zero = np.zeros((3, 16, 16, 16), np.float32)
    unchanged = fuse_correction_on_scan(zero, registration, grid, scan, shift, PRIOR_FLOOR)
    np.testing.assert_array_equal(unchanged, registration)

    strong = zero.copy()
    strong[2, :, :, :8] = 10.0  # class 2 wherever the working grid's x < 16 mm
    fused = fuse_correction_on_scan(strong, registration, grid, scan, shift, PRIOR_FLOOR)
    atlas_mm = np.zeros((*registration.shape, 3))
    for z, y, x in np.ndindex(*registration.shape):
        atlas_mm[z, y, x] = shift.GetInverse().TransformPoint(scan.TransformIndexToPhysicalPoint((x, y, z)))
    well_inside = ((atlas_mm >= 1) & (atlas_mm <= 29)).all(axis=-1)
    far_outside = ((atlas_mm < -2) | (atlas_mm > 32)).any(axis=-1)
    assert (fused[(atlas_mm[..., 0] < 13) & well_inside] == 2).all()
    kept = (atlas_mm[..., 0] > 17) | far_outside
    assert kept.any() and (atlas_mm[..., 0] < 13).any()
    np.testing.assert_array_equal(fused[kept], registration[kept])
