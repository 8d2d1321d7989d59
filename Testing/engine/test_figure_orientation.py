"""Orientation letters of report figures (ITK direction cosines, LPS) and the atlas slice matching the scan's."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RRLMedSAMLib.report import atlas_scan_rows, overlay_figure
from RRLMedSAMLib.report.orientation import direction_letters, panel_letters, to_array_index, to_display_index
from RRLMedSAMLib.report.overlays import matching_atlas_index

IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FLIPPED = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # i towards patient right, j towards anterior (RAS storage)


def _rotation_z(degrees: float) -> tuple[float, ...]:
    a = np.deg2rad(degrees)
    return tuple(np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]).ravel())


def test_direction_letters() -> None:
    assert [direction_letters(v) for v in np.eye(3)] == ["L", "P", "S"]
    assert [direction_letters(-v) for v in np.eye(3)] == ["R", "A", "I"]
    assert direction_letters((0.87, -0.5, 0.0)) == "LA" and direction_letters((0.98, 0.17, 0.0)) == "L"


@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED])
def test_letters_of_straight_scans_are_radiological(direction: tuple[int, ...]) -> None:
    assert panel_letters(direction, 0) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert panel_letters(direction, 1) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}
    assert panel_letters(direction, 2) == {"left": "A", "right": "P", "top": "S", "bottom": "I"}


def test_letters_of_an_oblique_scan_name_both_directions() -> None:
    # 30 degrees about z: index axis i points to (0.87, 0.5, 0) = left and posterior, j to (-0.5, 0.87, 0)
    assert panel_letters(_rotation_z(30), 0) == {"left": "RA", "right": "LP", "top": "AL", "bottom": "PR"}
    assert panel_letters(_rotation_z(30), 2) == {"left": "AL", "right": "PR", "top": "S", "bottom": "I"}


@pytest.mark.parametrize("direction", [IDENTITY, FLIPPED, _rotation_z(30)])
def test_the_patients_left_is_drawn_under_the_letter_L(direction: tuple[float, ...]) -> None:
    """A bright block on the patient's left (largest LPS x) ends up on the side of the axial panel labelled L."""
    size = 24
    image = sitk.Image([size, size, 6], sitk.sitkFloat32)
    image.SetDirection(direction)
    image.SetOrigin((5.0, -3.0, 2.0))
    array = np.zeros((6, size, size), np.float32)
    x = np.array([[image.TransformIndexToPhysicalPoint((i, j, 0))[0] for i in range(size)] for j in range(size)])
    array[:, x > np.percentile(x, 80)] = 1.0
    volume = sitk.GetImageFromArray(array)
    volume.CopyInformation(image)
    rows = atlas_scan_rows(volume, volume > 2, volume, volume > 2)
    fig = overlay_figure(rows[1:2], None)
    axial = fig.axes[0]
    letters = {t.get_gid(): t.get_text() for t in axial.texts}
    assert letters["orientation-right"][0] == "L" and letters["orientation-left"][0] == "R"
    shown = np.asarray(axial.images[0].get_array())
    columns = np.nonzero(shown.max(axis=0) > 0.5)[0]
    assert columns.min() > shown.shape[1] / 2  # the block is in the right half of the panel


def test_display_index_round_trip() -> None:
    shape = (5, 6, 7)
    for direction in (IDENTITY, FLIPPED, (1, 0, 0, 0, 0, -1, 0, -1, 0)):
        shown = to_display_index((1, 2, 3), shape, direction)
        assert to_array_index(shown, shape, direction) == (1, 2, 3)


def _volume(direction: tuple[float, ...], origin: tuple[float, ...], spacing: tuple[float, ...], size: int = 20) -> sitk.Image:
    image = sitk.Image([size, size, size], sitk.sitkFloat32)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    return image


def test_the_atlas_is_cut_at_the_scan_slice_physical_position() -> None:
    atlas = _volume(IDENTITY, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size=40)
    scan = _volume(FLIPPED, (30.0, 32.0, 4.0), (1.5, 1.5, 2.0))
    scan_index = (3, 4, 5)  # (z, y, x)
    point = np.array(scan.TransformIndexToPhysicalPoint(scan_index[::-1]))
    atlas_index = matching_atlas_index(scan, scan_index, atlas)
    assert np.allclose(atlas.TransformIndexToPhysicalPoint(atlas_index[::-1]), point, atol=0.5)
    assert atlas_index != scan_index
    moved = matching_atlas_index(scan, scan_index, atlas, sitk.TranslationTransform(3, (4.0, -2.0, 3.0)))
    assert np.subtract(moved, atlas_index).tolist() == [3, -2, 4]  # (z, y, x) voxels of 1 mm


def test_atlas_rows_go_through_the_atlas_point_of_the_scan_centre() -> None:
    atlas = _volume(IDENTITY, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), size=40)
    scan = _volume(FLIPPED, (30.0, 32.0, 4.0), (1.5, 1.5, 2.0))
    segmentation = sitk.Image(scan.GetSize(), sitk.sitkUInt8)
    segmentation.CopyInformation(scan)
    segmentation[4:8, 12:16, 2:5] = 1  # off-centre, so the scan slices are not the middle ones
    shift = sitk.TranslationTransform(3, (2.0, 1.0, -1.0))
    atlas_row, scan_row, segmentation_row = atlas_scan_rows(atlas, atlas > 1, scan, segmentation, shift)
    assert scan_row.center == segmentation_row.center
    scan_index = to_array_index(scan_row.center, sitk.GetArrayViewFromImage(scan).shape, FLIPPED)
    expected = np.array(shift.TransformPoint(scan.TransformIndexToPhysicalPoint(scan_index[::-1])))
    atlas_index = to_array_index(atlas_row.center, sitk.GetArrayViewFromImage(atlas).shape, IDENTITY)
    assert np.allclose(atlas.TransformIndexToPhysicalPoint(atlas_index[::-1]), expected, atol=0.5)
