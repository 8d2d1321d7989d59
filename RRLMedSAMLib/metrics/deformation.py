"""Regularity of a displacement field: Jacobian determinant and folding fraction.

Field layout used here: ``(3, D, H, W)`` numpy array, components in array-axis order ``(z, y, x)``,
in millimetres, on a grid of ``spacing`` = ``(sz, sy, sx)`` mm. A field stored the ITK way
(``(D, H, W, 3)``, physical ``(x, y, z)`` components) is converted by
:func:`physical_to_array_displacement`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def physical_to_array_displacement(field_xyz: np.ndarray, direction: Sequence[float] | None = None) -> np.ndarray:
    """ITK displacement ``(D, H, W, 3)`` with physical (x, y, z) mm components -> ``(3, D, H, W)`` (z, y, x).

    ``direction`` is the image's 9 direction cosines (``sitk.Image.GetDirection()``, row-major);
    the components are projected onto the image's index axes so that spatial derivatives along
    the array axes are consistent. Identity when omitted.
    """
    field_xyz = np.asarray(field_xyz, dtype=np.float64)
    if field_xyz.ndim != 4 or field_xyz.shape[-1] != 3:
        raise ValueError(f"expected a (D, H, W, 3) displacement field, got shape {field_xyz.shape}")
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    along_index_xyz = field_xyz @ matrix  # row vector u^T D = (D^T u)^T: components along index axes i, j, k
    return np.moveaxis(along_index_xyz[..., ::-1], -1, 0)


def jacobian_determinant(displacement_zyx_mm: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """det(I + grad u) per voxel, shape ``(D, H, W)``, for ``u`` of shape ``(3, D, H, W)`` in mm.

    ``spacing`` is ``(sz, sy, sx)`` in mm; derivatives are central differences (``np.gradient``).
    """
    u = np.asarray(displacement_zyx_mm, dtype=np.float64)
    if u.ndim != 4 or u.shape[0] != 3:
        raise ValueError(f"expected a (3, D, H, W) displacement field, got shape {u.shape}")
    if min(u.shape[1:]) < 2:
        raise ValueError(f"every spatial axis needs at least 2 voxels, got {u.shape[1:]}")
    grads = np.empty((3, 3) + u.shape[1:], dtype=np.float64)
    for component in range(3):
        for axis, derivative in enumerate(np.gradient(u[component], *[float(s) for s in spacing])):
            grads[component, axis] = derivative
    jac = grads + np.eye(3)[:, :, None, None, None]
    return (
        jac[0, 0] * (jac[1, 1] * jac[2, 2] - jac[1, 2] * jac[2, 1])
        - jac[0, 1] * (jac[1, 0] * jac[2, 2] - jac[1, 2] * jac[2, 0])
        + jac[0, 2] * (jac[1, 0] * jac[2, 1] - jac[1, 1] * jac[2, 0])
    )


def folding_fraction(jacobian_det: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Fraction (0..1) of voxels (inside ``mask`` if given) where the Jacobian determinant is <= 0."""
    det = np.asarray(jacobian_det)
    if mask is not None:
        det = det[np.asarray(mask, bool)]
    if det.size == 0:
        return float("nan")
    return float(np.count_nonzero(det <= 0) / det.size)
