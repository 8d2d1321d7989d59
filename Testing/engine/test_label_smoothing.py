"""Volume-keeping label smoothing (:mod:`RRLMedSAMLib.inference.label_smoothing`) on small real images."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from RRLMedSAMLib.inference.label_smoothing import (
    AUTO,
    SIGMA_LADDER_MM,
    apply_label_smoothing,
    atlas_roughness,
    boundary_roughness,
    smooth_labels_keeping_volumes,
    smooth_labels_matching_atlas,
)

SPACING_XYZ = (0.5, 0.8, 2.0)


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((10.0, -4.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def _boundary_faces(mask: np.ndarray) -> int:
    """Faces between a voxel inside and one outside: a ragged boundary has more of them."""
    return int(sum(np.count_nonzero(np.diff(mask.astype(np.int8), axis=axis)) for axis in range(3)))


def _ragged_blob() -> np.ndarray:
    """A box (z, y, x) = 8 x 24 x 36 voxels (16 x 19.2 x 18 mm) with a random one-voxel fringe on every face."""
    rng = np.random.default_rng(3)
    array = np.zeros((16, 40, 56), np.uint8)
    array[4:12, 8:32, 10:46] = 2
    fringe = rng.random(array.shape) < 0.5
    grown = np.zeros_like(fringe)
    grown[3:13, 7:33, 9:47] = True
    array[grown & fringe & (array == 0)] = 2
    return array


def test_smoothing_keeps_volume_ids_and_geometry_and_removes_the_fringe() -> None:
    labelmap = _image(_ragged_blob())
    smoothed = smooth_labels_keeping_volumes(labelmap, 1.5)
    before, after = sitk.GetArrayFromImage(labelmap), sitk.GetArrayFromImage(smoothed)
    assert set(np.unique(after)) == {0, 2}
    assert abs(int((after == 2).sum()) - int((before == 2).sum())) <= 0.01 * (before == 2).sum()
    assert _boundary_faces(after == 2) < 0.8 * _boundary_faces(before == 2)
    assert smoothed.GetSpacing() == labelmap.GetSpacing() and smoothed.GetOrigin() == labelmap.GetOrigin()
    assert smoothed.GetDirection() == labelmap.GetDirection()
    assert smoothed.GetPixelID() == labelmap.GetPixelID()


def test_neighbouring_structures_keep_their_volumes_and_do_not_swap() -> None:
    array = np.zeros((12, 30, 30), np.uint16)
    array[2:10, 5:15, 5:25] = 1
    array[2:10, 15:25, 5:25] = 7
    smoothed = sitk.GetArrayFromImage(smooth_labels_keeping_volumes(_image(array), 1.0))
    for label in (1, 7):
        assert abs(int((smoothed == label).sum()) - int((array == label).sum())) <= 0.05 * (array == label).sum()
    # The two halves stay on their own sides of the shared face.
    assert not (smoothed[:, 17:, :] == 1).any() and not (smoothed[:, :13, :] == 7).any()


def test_zero_sigma_returns_the_labelmap_unchanged() -> None:
    labelmap = _image(_ragged_blob())
    assert smooth_labels_keeping_volumes(labelmap, 0.0) is labelmap


def test_tiny_structures_and_thin_scans_do_not_fail() -> None:
    array = np.zeros((3, 20, 20), np.uint8)  # a slab only 3 voxels thick: kept as it is
    array[1, 5:9, 5:9] = 4
    assert np.array_equal(sitk.GetArrayFromImage(smooth_labels_keeping_volumes(_image(array), 0.1)), array)
    single = np.zeros((12, 12, 12), np.uint8)
    single[6, 6, 6] = 5  # one voxel, at a sigma far below the voxel size
    assert int((sitk.GetArrayFromImage(smooth_labels_keeping_volumes(_image(single), 0.05)) == 5).sum()) == 1


def _ellipsoid(shape: tuple[int, int, int], radii_voxels: tuple[float, float, float], label: int) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    centre = [(n - 1) / 2 for n in shape]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii_voxels)) <= 1.0
    return np.where(inside, label, 0).astype(np.uint8)


def _with_fringe(array: np.ndarray, label: int, seed: int) -> np.ndarray:
    """``array`` with a random one-voxel fringe around ``label``: about half its outer shell added."""
    rng = np.random.default_rng(seed)
    shell = ndimage.binary_dilation(array == label) & (array == 0)
    ragged = array.copy()
    ragged[shell & (rng.random(array.shape) < 0.5)] = label
    return ragged


def test_boundary_roughness_of_simple_shapes() -> None:
    cube = np.zeros((12, 12, 12), bool)
    cube[2:10, 2:10, 2:10] = True
    assert boundary_roughness(cube, (1.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert boundary_roughness(cube, (2.0, 2.0, 2.0)) == pytest.approx(6.0)  # no unit: the same at any voxel size
    slab = np.zeros((12, 12, 12), bool)
    slab[2:4, 2:10, 2:10] = True
    assert boundary_roughness(slab, (1.0, 1.0, 1.0)) > 6.0
    ellipsoid = _ellipsoid((24, 30, 30), (8, 11, 11), 1) == 1
    ragged = _with_fringe(ellipsoid.astype(np.uint8), 1, seed=0) == 1
    assert boundary_roughness(ragged, (1.0, 1.0, 1.0)) > 1.2 * boundary_roughness(ellipsoid, (1.0, 1.0, 1.0))
    assert boundary_roughness(np.zeros((4, 4, 4), bool), (1.0, 1.0, 1.0)) == 0.0


def test_auto_smooths_a_ragged_structure_until_it_is_as_smooth_as_the_atlas() -> None:
    atlas = _ellipsoid((24, 40, 40), (7, 14, 12), 2)
    ragged = _with_fringe(atlas, 2, seed=1)
    roughness = atlas_roughness(_image(atlas))
    smoothed, sigmas = smooth_labels_matching_atlas(_image(ragged), roughness)
    after = sitk.GetArrayFromImage(smoothed)
    assert SIGMA_LADDER_MM[0] <= sigmas[2] < SIGMA_LADDER_MM[-1]
    assert boundary_roughness(after == 2, SPACING_XYZ[::-1]) <= roughness[2]
    assert abs(int((after == 2).sum()) - int((ragged == 2).sum())) <= 0.01 * (ragged == 2).sum()
    assert smoothed.GetDirection() == _image(ragged).GetDirection()


def test_auto_leaves_smooth_structures_and_ones_the_atlas_lacks_alone() -> None:
    atlas = _ellipsoid((24, 40, 40), (7, 14, 12), 2)
    labelmap = atlas.copy()
    labelmap[:3, :4, :4] = 9  # not in the atlas
    smoothed, sigmas = smooth_labels_matching_atlas(_image(labelmap), atlas_roughness(_image(atlas)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(smoothed), labelmap)
    assert sigmas == {2: 0.0, 9: 0.0}


def test_auto_stops_at_the_top_of_the_ladder_and_apply_dispatches() -> None:
    ragged = _image(_with_fringe(_ellipsoid((24, 40, 40), (7, 14, 12), 2), 2, seed=2))
    _, sigmas = smooth_labels_matching_atlas(ragged, {2: 1.0})  # smoother than any shape can be
    assert sigmas == {2: SIGMA_LADDER_MM[-1]}
    assert apply_label_smoothing(ragged, 0.0, None) == (ragged, {})
    fixed, sigmas = apply_label_smoothing(ragged, 1.5, None)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(fixed), sitk.GetArrayFromImage(smooth_labels_keeping_volumes(ragged, 1.5)))
    assert sigmas == {2: 1.5}
    with pytest.raises(ValueError, match="roughness"):
        apply_label_smoothing(ragged, AUTO, None)


def test_a_structure_one_voxel_thick_is_smoothed_when_its_surroundings_are_not() -> None:
    array = np.zeros((12, 40, 40), np.uint8)
    array[6, 8:32, 8:32] = 3  # a plate one slice thick, in a scan 12 slices thick
    ragged = _with_fringe(array, 3, seed=4)
    ragged[5] = ragged[7] = 0  # the fringe stays in the plate's own slice
    smoothed = sitk.GetArrayFromImage(smooth_labels_keeping_volumes(_image(ragged), 1.0))
    assert _boundary_faces(smoothed == 3) < _boundary_faces(ragged == 3)
    assert abs(int((smoothed == 3).sum()) - int((ragged == 3).sum())) <= 0.02 * (ragged == 3).sum()
