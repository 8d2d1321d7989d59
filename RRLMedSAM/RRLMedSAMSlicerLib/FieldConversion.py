"""Qt-free handling of the engine's deformation field in the MRML scene.

``deformation.nrrd`` is an ITK displacement field in LPS millimetres with the resampling convention
(a scan point x maps to the atlas point x + u(x)). Slicer reads such a file as a grid transform
whose FromParent is that mapping, so placing the atlas volume under the transform shows the atlas
warped onto the scan. Interpolation is set to linear to match ITK's (and the engine's) resampling.
"""

from __future__ import annotations

import os

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from RRLMedSAMSlicerLib.SceneConversion import SceneConversionError

#: Node reference roles on the deformation: the scan it was computed for and the atlas it moves.
FIXED_REFERENCE_ROLE = "fixedVolume"
MOVING_REFERENCE_ROLE = "movingVolume"
FIELD_DISPLAY_MODES = ("grid", "glyph", "contour", "off")
FIELD_OVERLAYS = ("none", "magnitude", "jacobian")
_GRID_LINES_ACROSS = 16


def load_deformation(
    path: str | os.PathLike,
    scan_node: slicer.vtkMRMLVolumeNode,
    name: str,
    atlas_node: slicer.vtkMRMLVolumeNode | None = None,
) -> slicer.vtkMRMLGridTransformNode:
    """Read ``deformation.nrrd`` as a grid transform (FromParent) with fixed/moving references."""
    _check_nrrd_is_vector_field(path)
    scene = scan_node.GetScene()
    transform_node = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", name)
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(transform_node):
        scene.RemoveNode(transform_node)
        raise SceneConversionError(f"Could not read the deformation field {path} as a displacement-field transform.")
    grid = transform_node.GetTransformFromParent()
    vectors = grid.GetDisplacementGrid() if isinstance(grid, slicer.vtkOrientedGridTransform) else None
    if vectors is None or vectors.GetNumberOfScalarComponents() != 3:
        scene.RemoveNode(transform_node)
        raise SceneConversionError(f"{path} is not a 3-component displacement field; segment the scan again.")
    grid.SetInterpolationModeToLinear()
    transform_node.SetNodeReferenceID(FIXED_REFERENCE_ROLE, scan_node.GetID())
    if atlas_node is not None:
        transform_node.SetNodeReferenceID(MOVING_REFERENCE_ROLE, atlas_node.GetID())
    transform_node.CreateDefaultDisplayNodes()
    set_field_display(transform_node, "grid", scan_node)
    return transform_node


def _check_nrrd_is_vector_field(path: str | os.PathLike) -> None:
    """Reject a NRRD whose header is not a 3-vector per voxel over a 3-D grid (Slicer would read it anyway)."""
    if not str(path).lower().endswith((".nrrd", ".nhdr")):
        return
    try:
        with open(path, "rb") as handle:
            header = handle.read(4096).split(b"\n\n", 1)[0].decode("latin-1")
    except OSError as error:
        raise SceneConversionError(f"Cannot read the deformation field {path}: {error.strerror}.") from None
    fields = dict(line.split(":", 1) for line in header.splitlines()[1:] if ":" in line and not line.startswith("#"))
    sizes = fields.get("sizes", "").split()
    if fields.get("dimension", "").strip() != "4" or not sizes or sizes[0] != "3":
        raise SceneConversionError(
            f"{path} is not a 3-D displacement field (NRRD sizes: {' '.join(sizes) or 'missing'}); segment the scan again."
        )


def set_field_display(
    transform_node: slicer.vtkMRMLTransformNode, mode: str, region_node: slicer.vtkMRMLNode | None = None
) -> None:
    """Show the field in slice views as ``grid``, ``glyph`` or ``contour`` within the scan, or ``off``."""
    if mode not in FIELD_DISPLAY_MODES:
        raise ValueError(f"Field display mode must be one of {', '.join(FIELD_DISPLAY_MODES)}, not {mode!r}.")
    display = transform_node.GetDisplayNode()
    if display is None:
        transform_node.CreateDefaultDisplayNodes()
        display = transform_node.GetDisplayNode()
    if region_node is None:
        region_node = transform_node.GetNodeReference(FIXED_REFERENCE_ROLE)
    was_modifying = display.StartModify()
    try:
        if region_node is not None:
            display.SetAndObserveRegionNode(region_node)
            spacing = _grid_spacing_mm(region_node)
            display.SetGridSpacingMm(spacing)
            display.SetGlyphSpacingMm(spacing)
            display.SetGridResolutionMm(max(spacing / 4.0, 0.5))
        if mode == "grid":
            display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
        elif mode == "glyph":
            display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH)
        elif mode == "contour":
            display.SetVisualizationMode(slicer.vtkMRMLTransformDisplayNode.VIS_MODE_CONTOUR)
            levels = _contour_levels_mm(transform_node)
            display.SetContourLevelsMmFromString(" ".join(f"{level:g}" for level in levels))
        visible = mode != "off"
        display.SetVisibility(visible)
        display.SetVisibility2D(visible)
        display.SetVisibility3D(False)
    finally:
        display.EndModify(was_modifying)


def _grid_spacing_mm(volume_node: slicer.vtkMRMLNode) -> float:
    """About ``_GRID_LINES_ACROSS`` grid lines across the longest side of the volume, at least 2 mm."""
    if not hasattr(volume_node, "GetImageData") or volume_node.GetImageData() is None:
        return 10.0
    dims = np.array(volume_node.GetImageData().GetDimensions(), dtype=float)
    extent = float(np.max(dims * np.array(volume_node.GetSpacing())))
    return float(max(round(extent / _GRID_LINES_ACROSS), 2.0))


def _contour_levels_mm(transform_node: slicer.vtkMRMLTransformNode) -> list[float]:
    """Five evenly spaced displacement-magnitude levels up to the field's maximum."""
    magnitude, _ = displacement_vectors(transform_node)
    top = float(np.percentile(np.linalg.norm(magnitude, axis=-1), 99)) if magnitude.size else 0.0
    if top <= 0:
        return [1.0]
    return [round(top * fraction, 2) for fraction in (0.2, 0.4, 0.6, 0.8, 1.0)]


def displacement_vectors(transform_node: slicer.vtkMRMLTransformNode) -> tuple[np.ndarray, np.ndarray]:
    """Displacements (k, j, i, 3) in RAS mm of the FromParent grid, and the grid's 4x4 IJK-to-RAS matrix."""
    grid = transform_node.GetTransformFromParent()
    if not isinstance(grid, slicer.vtkOrientedGridTransform):
        raise SceneConversionError(f"Transform '{transform_node.GetName()}' is not a displacement field.")
    image = grid.GetDisplacementGrid()
    dims = image.GetDimensions()
    vectors = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).astype(np.float64)
    vectors = vectors.reshape(dims[2], dims[1], dims[0], 3) * grid.GetDisplacementScale() + grid.GetDisplacementShift()
    direction = slicer.util.arrayFromVTKMatrix(grid.GetGridDirectionMatrix())[:3, :3]
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = direction @ np.diag(image.GetSpacing())
    ijk_to_ras[:3, 3] = image.GetOrigin()
    return vectors, ijk_to_ras


def displacement_magnitude(transform_node: slicer.vtkMRMLTransformNode) -> tuple[np.ndarray, np.ndarray]:
    """|u| in mm on the field's grid, with the grid's IJK-to-RAS matrix."""
    vectors, ijk_to_ras = displacement_vectors(transform_node)
    return np.linalg.norm(vectors, axis=-1).astype(np.float32), ijk_to_ras


def jacobian_determinant(transform_node: slicer.vtkMRMLTransformNode) -> tuple[np.ndarray, np.ndarray]:
    """det(I + du/dx) on the field's grid: < 0 where the field folds, 1 where volume is kept."""
    vectors, ijk_to_ras = displacement_vectors(transform_node)
    # d u_c / d index along (k, j, i) for each component c, then chain rule to d/dx (RAS).
    d_index = np.stack([np.stack(np.gradient(vectors[..., c]), axis=-1) for c in range(3)], axis=-2)
    d_ijk = d_index[..., ::-1]  # columns in i, j, k order
    jacobian = np.eye(3) + d_ijk @ np.linalg.inv(ijk_to_ras[:3, :3])
    return np.linalg.det(jacobian).astype(np.float32), ijk_to_ras


def field_overlay_volume(
    transform_node: slicer.vtkMRMLTransformNode, kind: str, name: str
) -> slicer.vtkMRMLScalarVolumeNode:
    """A scalar volume of the field's ``magnitude`` (mm) or ``jacobian`` determinant."""
    if kind == "magnitude":
        values, ijk_to_ras = displacement_magnitude(transform_node)
    elif kind == "jacobian":
        values, ijk_to_ras = jacobian_determinant(transform_node)
    else:
        raise ValueError(f"Field overlay must be 'magnitude' or 'jacobian', not {kind!r}.")
    scene = transform_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(values.shape[::-1])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(values.ravel(), deep=True, array_type=vtk.VTK_FLOAT))
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    color_id = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"
    if scene.GetNodeByID(color_id) is not None:
        display.SetAndObserveColorNodeID(color_id)
    display.SetAutoWindowLevel(False)
    if kind == "jacobian":
        display.SetWindowLevelMinMax(0.0, 2.0)
    else:
        display.SetWindowLevelMinMax(0.0, max(float(np.percentile(values, 99)), 1e-3))
    return node
