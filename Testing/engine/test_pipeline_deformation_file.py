"""The saved deformation field, read by an independent reader, reproduces the engine's warp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tiny_case import LABEL_IDS

from RRLMedSAMLib.geometry.deformation import compose_scan_displacement, voxel_ddf_to_mm
from RRLMedSAMLib.geometry.working_grid import make_working_grid


def test_header_names_the_physical_frame(tiny_results: Path) -> None:
    header = (tiny_results / "scan_a_image" / "deformation.nrrd").read_bytes()[:2000].decode("latin-1")
    assert "space: left-posterior-superior" in header
    assert "kinds: vector domain domain domain" in header


def test_simpleitk_resampling_through_the_file_reproduces_the_warped_label(
    tiny_case: dict[str, Path], tiny_results: Path
) -> None:
    atlas_label = sitk.ReadImage(str(tiny_case["atlas_label"]))
    for scan in ("scan_a", "scan_b"):
        folder = tiny_results / f"{scan}_image"
        field = sitk.ReadImage(str(folder / "deformation.nrrd"), sitk.sitkVectorFloat64)
        resampled = sitk.GetArrayFromImage(
            sitk.Resample(atlas_label, field, sitk.DisplacementFieldTransform(sitk.Image(field)), sitk.sitkNearestNeighbor, 0)
        )
        engine_warp = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "warped_atlas_label.nii.gz")))
        scores = [
            2.0 * ((resampled == i) & (engine_warp == i)).sum() / ((resampled == i).sum() + (engine_warp == i).sum())
            for i in LABEL_IDS if (engine_warp == i).any()
        ]
        assert np.mean(scores) >= 0.95, scores


def _oblique_label() -> sitk.Image:
    label = sitk.Image([24, 20, 16], sitk.sitkUInt16)
    label.SetSpacing((0.8, 1.2, 2.0))
    label.SetDirection(sitk.VersorTransform((0.2, 0.7, 0.1), 0.5).GetMatrix())
    label.SetOrigin((3.0, -7.0, 11.0))
    array = sitk.GetArrayFromImage(label)
    array[4:12, 5:15, 6:18] = 1
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(label)
    return result


def test_composition_with_zero_network_displacement_is_the_inverse_affine() -> None:
    atlas = _oblique_label()
    grid = make_working_grid(atlas, 16)
    atlas_to_scan = sitk.AffineTransform(3)
    atlas_to_scan.SetMatrix((1.1, 0.05, 0.0, -0.03, 0.95, 0.02, 0.0, 0.04, 1.02))
    atlas_to_scan.SetTranslation((2.0, -1.0, 3.5))
    atlas_to_scan.SetCenter((5.0, 0.0, 10.0))
    scan = _oblique_label()
    field = compose_scan_displacement(scan, atlas_to_scan, grid, np.zeros((3, *grid.shape_zyx)))
    inverse = atlas_to_scan.GetInverse()
    transform = sitk.DisplacementFieldTransform(sitk.Image(field))
    for index in ((0, 0, 0), (5, 7, 3), (23, 19, 15)):
        point = scan.TransformIndexToPhysicalPoint(index)
        assert np.allclose(transform.TransformPoint(point), inverse.TransformPoint(point), atol=1e-6)


def test_voxel_displacement_converts_along_the_grid_axes() -> None:
    grid = make_working_grid(_oblique_label(), 16)
    ddf = np.zeros((3, *grid.shape_zyx))
    ddf[2] = 1.0  # one voxel along the grid's x (i) axis
    millimetres = voxel_ddf_to_mm(ddf, grid)[0, 0, 0]
    expected = np.asarray(grid.direction).reshape(3, 3)[:, 0] * grid.spacing_mm
    assert np.allclose(millimetres, expected)
