"""Displacement-field file -> Slicer grid transform, checked against SimpleITK as the independent reader."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_test_helpers import add_volume, require_slicer, slicer, volume_array

require_slicer()

from RRLMedSAMSlicerLib import FieldConversion as fc  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402

SIZE = (9, 8, 7)  # x, y, z voxels
SPACING = (1.2, 2.0, 3.1)
ORIGIN = (5.0, -7.0, 11.0)


def oblique_direction() -> tuple[float, ...]:
    return sitk.VersorTransform((0.3, 0.5, 0.8), 0.6).GetMatrix()


def write_field(path, vectors_zyx3: np.ndarray) -> sitk.Image:
    """Write an LPS displacement field NRRD the way the engine does (float, explicit space)."""
    field = sitk.GetImageFromArray(vectors_zyx3.astype(np.float32), isVector=True)
    field.SetSpacing(SPACING)
    field.SetOrigin(ORIGIN)
    field.SetDirection(oblique_direction())
    sitk.WriteImage(field, str(path))
    assert b"space: left-posterior-superior" in path.read_bytes()[:400]
    return field


def lps_to_ras(point) -> list[float]:
    return [-point[0], -point[1], point[2]]


@pytest.fixture
def scan(scene):
    """A scan on the field's grid (RAS geometry from the same LPS description)."""
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.array(oblique_direction()).reshape(3, 3) @ np.diag(SPACING)
    ijk_to_lps[:3, 3] = ORIGIN
    ijk_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps
    return add_volume(scene, np.zeros(SIZE[::-1], np.float32), "scan", ijk_to_ras)


def test_transform_node_agrees_with_simpleitk_on_oblique_anisotropic_field(scene, scan, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(0.0, 1.5, SIZE[::-1] + (3,))  # rough on purpose: interpolation must match too
    field = write_field(tmp_path / "deformation.nrrd", vectors)
    reference = sitk.DisplacementFieldTransform(sitk.Cast(sitk.ReadImage(str(tmp_path / "deformation.nrrd")), sitk.sitkVectorFloat64))

    atlas = add_volume(scene, np.zeros((2, 2, 2), np.float32), "atlas", np.eye(4))
    node = fc.load_deformation(tmp_path / "deformation.nrrd", scan, "field", atlas_node=atlas)
    from_parent = node.GetTransformFromParent()

    worst = 0.0
    for _ in range(300):
        index = rng.uniform(0.0, np.array(SIZE) - 1.0)
        point_lps = field.TransformContinuousIndexToPhysicalPoint(index.tolist())
        expected_lps = np.array(reference.TransformPoint(point_lps))
        got_lps = np.array(lps_to_ras(from_parent.TransformPoint(lps_to_ras(point_lps))))
        worst = max(worst, float(np.abs(got_lps - expected_lps).max()))
    assert worst <= 0.1, f"Slicer and SimpleITK disagree by {worst:.3f} mm"
    assert worst < 1e-3

    assert node.GetNodeReference(fc.FIXED_REFERENCE_ROLE) is scan
    assert node.GetNodeReference(fc.MOVING_REFERENCE_ROLE) is atlas
    display = node.GetDisplayNode()
    assert display.GetVisualizationMode() == slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID
    assert display.GetVisibility() and display.GetVisibility2D()
    assert display.GetRegionNode() is scan


def test_display_modes_switch_and_turn_off(scene, scan, tmp_path):
    write_field(tmp_path / "d.nrrd", np.ones(SIZE[::-1] + (3,)))
    node = fc.load_deformation(tmp_path / "d.nrrd", scan, "field")
    display = node.GetDisplayNode()
    fc.set_field_display(node, "glyph")
    assert display.GetVisualizationMode() == slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH
    fc.set_field_display(node, "contour")
    assert display.GetVisualizationMode() == slicer.vtkMRMLTransformDisplayNode.VIS_MODE_CONTOUR
    assert display.GetNumberOfContourLevels() == 5
    fc.set_field_display(node, "off")
    assert not display.GetVisibility()
    with pytest.raises(ValueError, match="grid, glyph, contour, off"):
        fc.set_field_display(node, "wireframe")


def test_magnitude_and_jacobian_of_a_linear_field(scene, scan, tmp_path):
    # u(x) = A x (LPS): the Jacobian determinant is det(I + A) everywhere, also in RAS.
    a = np.array([[0.10, 0.02, 0.0], [0.0, -0.05, 0.03], [0.01, 0.0, 0.20]])
    probe = sitk.Image(SIZE, sitk.sitkUInt8)
    probe.SetSpacing(SPACING)
    probe.SetOrigin(ORIGIN)
    probe.SetDirection(oblique_direction())
    points = np.array(
        [[[probe.TransformIndexToPhysicalPoint((i, j, k)) for i in range(SIZE[0])] for j in range(SIZE[1])] for k in range(SIZE[2])]
    )
    vectors = points @ a.T
    write_field(tmp_path / "linear.nrrd", vectors)
    node = fc.load_deformation(tmp_path / "linear.nrrd", scan, "field")

    jacobian = fc.field_overlay_volume(node, "jacobian", "jac")
    np.testing.assert_allclose(volume_array(jacobian), np.linalg.det(np.eye(3) + a), rtol=1e-4)
    magnitude = fc.field_overlay_volume(node, "magnitude", "mag")
    np.testing.assert_allclose(volume_array(magnitude), np.linalg.norm(vectors, axis=-1), rtol=1e-4, atol=1e-4)
    ras_corner = jacobian.GetOrigin()
    np.testing.assert_allclose(ras_corner, lps_to_ras(ORIGIN), atol=1e-4)
    with pytest.raises(ValueError):
        fc.field_overlay_volume(node, "curl", "x")


def test_non_field_file_is_rejected(scene, scan, tmp_path):
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkFloat32), str(tmp_path / "scalar.nrrd"))
    with pytest.raises(sc.SceneConversionError):
        fc.load_deformation(tmp_path / "scalar.nrrd", scan, "field")
    assert scene.GetNodesByClass("vtkMRMLGridTransformNode").GetNumberOfItems() == 0
