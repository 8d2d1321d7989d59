"""Volume calibration (:mod:`RRLMedSAMLib.registration.volume_calibration`) on small real images."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from RRLMedSAMLib.inference.label_smoothing import AUTO, apply_label_smoothing, atlas_roughness
from RRLMedSAMLib.registration.volume_calibration import (
    CALIBRATION_SCALES,
    MAX_CALIBRATED_STRUCTURES,
    RECOVERY_RANGE,
    VolumeCalibration,
    calibrated_voxel_counts,
    label_volumes_mm3,
    measure_volume_recovery,
    recovery_estimate,
    scaled_about,
    structure_sphere,
)
from RRLMedSAMLib.training.calibration_stage import calibration_skip_reason

SPACING_XYZ = (0.9, 1.1, 1.6)
SHAPE_ZYX = (28, 44, 48)


def _oblique(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-20.0, 7.0, 31.0))
    angle = np.deg2rad(25.0)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    return image


def _ball(radius_mm: float, label: int = 3) -> sitk.Image:
    """A labelled ball about the grid's centre, on the oblique anisotropic grid."""
    z, y, x = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE_ZYX, SPACING_XYZ[::-1])],
                          indexing="ij")
    return _oblique(np.where(x**2 + y**2 + z**2 < radius_mm**2, label, 0).astype(np.uint8))


def _scan_of(labelmap: sitk.Image) -> sitk.Image:
    """A float "scan" of a labelmap: bright inside, dark outside."""
    return sitk.Cast(labelmap > 0, sitk.sitkFloat32) * 100.0 + 10.0


def _voxels(image: sitk.Image, label: int) -> int:
    return int((sitk.GetArrayViewFromImage(image) == label).sum())


@pytest.mark.parametrize("scale", CALIBRATION_SCALES)
def test_scaling_a_sphere_scales_the_volume_inside_and_leaves_the_rest(scale: float) -> None:
    ball = _ball(8.0)
    centre, radius = structure_sphere(ball, 3)
    assert radius == pytest.approx(8.0, rel=0.05)
    scan = _scan_of(ball)
    scaled = scaled_about(scan, centre, scale, 1.3 * radius, 1.3 * radius + 4.0)
    inside = sitk.GetArrayFromImage(scaled) > 60.0
    before = sitk.GetArrayFromImage(scan) > 60.0
    assert inside.sum() / before.sum() == pytest.approx(scale**3, rel=0.06)
    assert scaled.GetDirection() == scan.GetDirection() and scaled.GetOrigin() == scan.GetOrigin()
    corner = np.s_[:3, :3, :3]  # further than 1.3 r + 4 mm from the centre
    np.testing.assert_allclose(sitk.GetArrayFromImage(scaled)[corner], sitk.GetArrayFromImage(scan)[corner], atol=1e-3)


def test_recovery_estimate_ignores_an_outlier_and_is_clipped() -> None:
    known = [3 * np.log(s) for s in CALIBRATION_SCALES] * 3
    registered = [0.6 * k for k in known]
    assert recovery_estimate(known, registered) == pytest.approx(0.6)
    registered[1] = -known[1]  # a registration that shrank an enlarged structure
    assert recovery_estimate(known, registered) == pytest.approx(0.6)
    assert recovery_estimate(known, [0.1 * k for k in known]) == RECOVERY_RANGE[0]
    assert recovery_estimate(known, [1.5 * k for k in known]) == RECOVERY_RANGE[1]


def test_a_registration_that_follows_size_fully_recovers_one_and_one_that_never_does_is_clipped() -> None:
    scans = [("small", _scan_of(_ball(7.0))), ("large", _scan_of(_ball(9.0)))]
    calls = []

    def follows(scan: sitk.Image) -> sitk.Image:
        calls.append(1)
        return sitk.Cast(scan > 60.0, sitk.sitkUInt8) * 3

    full = measure_volume_recovery(follows, scans, [3])
    assert full.recovery[3] == pytest.approx(1.0, abs=0.08)
    assert len(calls) == len(scans) * (1 + len(CALIBRATION_SCALES))
    assert {(m["scan"], m["scale"]) for m in full.measurements} == {
        (name, scale) for name, _ in scans for scale in CALIBRATION_SCALES}

    fixed_label = _ball(8.0)
    ignores = measure_volume_recovery(lambda scan: fixed_label, scans, [3])
    assert ignores.recovery[3] == RECOVERY_RANGE[0]
    assert VolumeCalibration.from_dict(full.to_dict()).recovery == full.recovery


def test_calibrated_counts_extrapolate_the_change_from_the_atlas() -> None:
    segmentation = _ball(6.0)
    voxel_mm3 = float(np.prod(SPACING_XYZ))
    voxels = _voxels(segmentation, 3)
    atlas_mm3 = 1.25 * voxels * voxel_mm3  # the scan's structure is 0.8 of the atlas's
    targets = calibrated_voxel_counts(segmentation, {3: atlas_mm3}, {3: 0.5})
    assert targets[3] == pytest.approx(atlas_mm3 * 0.8**2 / voxel_mm3, rel=1e-3)
    assert calibrated_voxel_counts(segmentation, {3: atlas_mm3}, {3: 1.0})[3] == voxels
    assert calibrated_voxel_counts(segmentation, {}, {3: 0.5}) == {}
    assert label_volumes_mm3(segmentation) == pytest.approx({3: voxels * voxel_mm3})


@pytest.mark.parametrize("setting", [0.0, 1.5, AUTO])
@pytest.mark.parametrize("factor", [0.7, 1.4])
def test_label_smoothing_resizes_to_the_requested_counts(setting, factor: float) -> None:
    labels = sitk.GetArrayFromImage(_ball(7.0))
    labels[labels.shape[0] // 2, :4, :4] = 5  # a second structure the request leaves alone
    labelmap = _oblique(labels)
    target = int(round(factor * _voxels(labelmap, 3)))
    resized, _ = apply_label_smoothing(labelmap, setting, atlas_roughness(labelmap), {3: target})
    unrequested, _ = apply_label_smoothing(labelmap, setting, atlas_roughness(labelmap))
    assert _voxels(resized, 3) == target
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(resized) == 5, sitk.GetArrayViewFromImage(unrequested) == 5)
    assert resized.GetSpacing() == labelmap.GetSpacing() and resized.GetDirection() == labelmap.GetDirection()
    centre_before, _ = structure_sphere(labelmap, 3)
    centre_after, _ = structure_sphere(resized, 3)
    np.testing.assert_allclose(centre_after, centre_before, atol=1.0)


def test_which_runs_are_calibrated() -> None:
    assert calibration_skip_reason("plain", 1) is None
    assert calibration_skip_reason("rrl", MAX_CALIBRATED_STRUCTURES) is None
    assert "more than" in calibration_skip_reason("plain", MAX_CALIBRATED_STRUCTURES + 1)
    assert "AutoSAM" in calibration_skip_reason("autosam", 1)
