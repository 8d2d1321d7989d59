"""Shared drawing helpers of the report figures: resolution, grey window, slices, atomic PNG writing.

Volumes are numpy ``(z, y, x)`` arrays in display order (see :mod:`RRLMedSAMLib.report.orientation`)
with ``spacing`` ``(sz, sy, sx)`` in mm. Axial slices are drawn with ``origin="upper"`` (the row
index grows downwards), coronal and sagittal ones with ``origin="lower"`` (it grows upwards).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from RRLMedSAMLib.io.atomic import atomic_path

DPI = 100
PLANE_NAMES = ("axial", "coronal", "sagittal")
ARRAY_PLANE_NAMES = ("array axis 0", "array axis 1", "array axis 2")


def window(image: np.ndarray) -> tuple[float, float]:
    """Grey window (1st to 99.5th percentile of the finite values)."""
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [1.0, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def origin_of(plane: int) -> str:
    """``imshow`` origin of a slice of ``plane`` (0 axial: "upper", else "lower")."""
    return "upper" if plane == 0 else "lower"


def planes(volume: np.ndarray, spacing: Sequence[float], center: Sequence[int]) -> list[tuple[np.ndarray, list[float]]]:
    """Three slices through ``center`` (display order), each with its mm extent for ``imshow``."""
    sz, sy, sx = spacing
    d, h, w = volume.shape
    return [
        (volume[center[0]], [0, w * sx, h * sy, 0]),
        (volume[:, center[1], :], [0, w * sx, 0, d * sz]),
        (volume[:, :, center[2]], [0, h * sy, 0, d * sz]),
    ]


def draw_slice(
    ax: Axes, image: np.ndarray, extent: list[float], grey: tuple[float, float], plane: int, dim: float = 1.0
) -> None:
    """Grey slice without ticks; ``dim`` < 1 darkens it so that coloured marks stand out."""
    low, high = grey
    ax.imshow(image, cmap="gray", vmin=low, vmax=low + (high - low) / dim, extent=extent, origin=origin_of(plane),
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically (exact size, no tight cropping) and return the path."""
    path = Path(path)
    with atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=DPI)
    return path
