"""Helpers for the Slicer-side tests: import path, tiny volumes with oblique geometry, engine probe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "RRLMedSAM"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

try:  # the slicer-core wheel; tests that need it skip themselves with require_slicer()
    import slicer
    import vtk
    from vtk.util import numpy_support
except ImportError:
    slicer = vtk = numpy_support = None


def require_slicer() -> None:
    """Skip the calling test module when the ``slicer-core`` wheel is not installed."""
    if slicer is None:
        pytest.skip("the slicer-core wheel (pip install slicer-core) is needed", allow_module_level=True)


def oblique_ijk_to_ras(spacing=(1.0, 1.5, 2.5), origin=(10.0, -5.0, 3.0), angle=0.5) -> np.ndarray:
    """A 4x4 IJK-to-RAS matrix with rotated axes and anisotropic voxels."""
    c, s = np.cos(angle), np.sin(angle)
    rot_z = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rot_x = np.array([[1, 0, 0], [0, np.cos(0.3), -np.sin(0.3)], [0, np.sin(0.3), np.cos(0.3)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rot_z @ rot_x @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def add_volume(scene, array: np.ndarray, name: str, ijk_to_ras: np.ndarray, labelmap: bool = False):
    """A volume node holding ``array`` (k, j, i) with the given geometry."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[::-1])
    vtk_type = vtk.VTK_SHORT if labelmap else vtk.VTK_FLOAT
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True, array_type=vtk_type))
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    return node


def volume_array(node) -> np.ndarray:
    """Voxels of a volume node as (k, j, i)."""
    image = node.GetImageData()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])
