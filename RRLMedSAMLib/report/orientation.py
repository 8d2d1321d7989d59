"""Patient orientation of displayed slices, from ITK direction cosines (LPS physical space).

SimpleITK's ``GetDirection()`` is the 3x3 direction matrix, row-major; its column ``c`` is the unit
vector, in LPS space (x towards patient Left, y Posterior, z Superior), along which index axis ``c``
(i, j, k) grows. Arrays of ``sitk.GetArrayFromImage`` are ``(k, j, i)``: array axis ``a`` is index
axis ``2 - a``.

Figures show a volume in *display order*: its array axes permuted and flipped so that display axes
0, 1, 2 grow towards Superior, Posterior and Left (the nearest patient axis for oblique images),
which puts axial and coronal views in radiological convention (patient left on the screen's right).
The letters at the panel edges are computed from the true direction of each screen axis, so an
oblique image gets two-letter labels (e.g. "LA") where the screen axis is between patient axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes

#: Letters of the negative and positive LPS directions along x, y, z.
AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
#: A screen axis's secondary patient direction is named when its cosine reaches this (about 17 degrees).
SECONDARY_COMPONENT = 0.3
SIDES = ("left", "right", "top", "bottom")


def display_axes(direction: Sequence[float] | None) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Array permutation and flips that bring ``(z, y, x)`` arrays to (superior, posterior, left) order.

    ``perm[t]`` is the array axis shown as display axis ``t``; ``flips[t]`` whether it is reversed.
    Each array axis is matched to its closest patient axis, so oblique images show the nearest plane.
    """
    if direction is None:
        return (0, 1, 2), (False, False, False)
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    perm, flips = [0, 0, 0], [False, False, False]
    for array_axis in range(3):
        column = matrix[:, 2 - array_axis]
        physical = int(np.argmax(np.abs(column)))
        target = 2 - physical  # physical z (S) -> 0, y (P) -> 1, x (L) -> 2
        perm[target] = array_axis
        flips[target] = bool(column[physical] < 0)
    if sorted(perm) != [0, 1, 2]:
        return (0, 1, 2), (False, False, False)
    return tuple(perm), tuple(flips)  # type: ignore[return-value]


def reorient(
    volume: np.ndarray, spacing: Sequence[float], direction: Sequence[float] | None
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Volume and spacing in display order (see :func:`display_axes`)."""
    perm, flips = display_axes(direction)
    out = np.transpose(volume, perm)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis)
    return out, tuple(float(spacing[a]) for a in perm)


def reorient_vectors(field: np.ndarray, direction: Sequence[float] | None) -> np.ndarray:
    """``(3, D, H, W)`` vector field moved to display order: voxels and components permuted, flipped ones negated."""
    perm, flips = display_axes(direction)
    out = np.transpose(field, (0, *[p + 1 for p in perm]))[list(perm)]
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis + 1)
            out[axis] = -out[axis]
    return out


def to_display_index(index: Sequence[int], shape: Sequence[int], direction: Sequence[float] | None) -> tuple[int, ...]:
    """Array voxel ``index`` ``(z, y, x)`` of an array of ``shape`` -> its display-order index."""
    perm, flips = display_axes(direction)
    return tuple(int(shape[p] - 1 - index[p]) if f else int(index[p]) for p, f in zip(perm, flips))


def to_array_index(shown: Sequence[int], shape: Sequence[int], direction: Sequence[float] | None) -> tuple[int, ...]:
    """Inverse of :func:`to_display_index` (``shape`` is the array's own shape)."""
    perm, flips = display_axes(direction)
    index = [0, 0, 0]
    for t, (p, f) in enumerate(zip(perm, flips)):
        index[p] = int(shape[p] - 1 - shown[t]) if f else int(shown[t])
    return tuple(index)


def display_vectors(direction: Sequence[float] | None) -> np.ndarray:
    """``(3, 3)``: row ``t`` is the LPS unit vector along which display axis ``t`` grows (identity without direction)."""
    matrix = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    perm, flips = display_axes(direction)
    return np.array([(-1.0 if flips[t] else 1.0) * matrix[:, 2 - perm[t]] for t in range(3)])


def direction_letters(vector: Sequence[float], secondary: float = SECONDARY_COMPONENT) -> str:
    """Patient-direction letters of an LPS vector: the dominant one first, then any with cosine >= ``secondary``.

    ``(1, 0, 0)`` -> "L", ``(0, -1, 0)`` -> "A", ``(0.87, -0.5, 0)`` -> "LA".
    """
    v = np.asarray(vector, dtype=float)
    v = v / np.linalg.norm(v)
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(AXIS_LETTERS[a][int(v[a] > 0)] for i, a in enumerate(order) if i == 0 or abs(v[a]) >= secondary)


def panel_letters(direction: Sequence[float] | None, plane: int) -> dict[str, str]:
    """Letters at the ``left``, ``right``, ``top`` and ``bottom`` edges of a display-order slice of ``plane``.

    Plane 0 (axial) is drawn with the row index growing downwards, planes 1 and 2 upwards
    (:func:`RRLMedSAMLib.report.canvas.origin_of`); columns always grow to the right.
    """
    vectors = display_vectors(direction)
    rows, cols = ((1, 2), (0, 2), (0, 1))[plane]
    down = vectors[rows] if plane == 0 else -vectors[rows]
    right = vectors[cols]
    return {"left": direction_letters(-right), "right": direction_letters(right),
            "top": direction_letters(-down), "bottom": direction_letters(down)}


def draw_orientation(ax: Axes, letters: dict[str, str], fontsize: float = 9) -> None:
    """Write ``letters`` (see :func:`panel_letters`) inside the panel's edges; each text's gid is ``orientation-<side>``."""
    places = {"left": (0.015, 0.5, "left", "center"), "right": (0.985, 0.5, "right", "center"),
              "top": (0.5, 0.985, "center", "top"), "bottom": (0.5, 0.015, "center", "bottom")}
    outline = [patheffects.withStroke(linewidth=2.0, foreground="black")]
    for side in SIDES:
        x, y, ha, va = places[side]
        ax.text(x, y, letters[side], transform=ax.transAxes, ha=ha, va=va, fontsize=fontsize, color="#ffeb3b",
                fontweight="bold", path_effects=outline, gid=f"orientation-{side}")
