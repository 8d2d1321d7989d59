"""Report figures (PNG, matplotlib Agg): label overlays, deformation grids, loss curves.

Array conventions: volumes are numpy ``(z, y, x)`` (``sitk.GetArrayFromImage`` order) with
``spacing`` ``(sz, sy, sx)`` in mm. Displacement fields are ``(3, D, H, W)`` with components along
the array axes ``(z, y, x)``, in mm (``units="mm"``) or voxels (``units="voxel"``); see
:func:`RRLMedSAMLib.metrics.physical_to_array_displacement` for ITK fields.

Pass ``direction`` (the 9 cosines of ``sitk.Image.GetDirection()``) to show true axial / coronal /
sagittal planes in radiological convention (patient left on the right, superior up, anterior up
in axial views); without it the planes are the array's own axes. Figures use matplotlib's
object-oriented API (no pyplot, no GUI; PNGs are rendered by Agg) and have exact sizes
(``figsize`` x ``DPI`` pixels, no tight cropping) so that callers can rely on them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.io.label_table import LabelEntry, default_entry

DPI = 100
PLANE_NAMES = ("axial", "coronal", "sagittal")
ARRAY_PLANE_NAMES = ("array axis 0", "array axis 1", "array axis 2")


@dataclass
class OverlayRow:
    """One row of an overlay figure: a grey image with an optional labelmap on top of it."""

    title: str
    image: np.ndarray
    spacing: Sequence[float]
    label: np.ndarray | None = None
    direction: Sequence[float] | None = None
    center: Sequence[int] | None = None


def display_axes(direction: Sequence[float] | None) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Array permutation and flips that bring ``(z, y, x)`` arrays to (superior, posterior, left) order.

    ``direction`` holds ITK's row-major cosines (columns = index axes i, j, k in LPS). Each array axis
    is matched to its closest patient axis, so oblique images are shown in the nearest plane.
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


def label_colors(table: Sequence[LabelEntry] | None, max_id: int) -> np.ndarray:
    """RGBA lookup (``max_id + 1``, 4) in 0..1: table colours, FreeSurfer/palette for others, 0 transparent."""
    lut = np.zeros((max_id + 1, 4), dtype=float)
    known = {e.id: e.color for e in table or []}
    for i in range(1, max_id + 1):
        lut[i, :3] = np.array(known.get(i, default_entry(i).color)) / 255.0
        lut[i, 3] = 1.0
    return lut


def _window(image: np.ndarray) -> tuple[float, float]:
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [1.0, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def _center(row: OverlayRow, shape: tuple[int, ...]) -> tuple[int, ...]:
    if row.center is not None:
        return tuple(int(c) for c in row.center)
    mask = row.label > 0 if row.label is not None and np.any(row.label) else row.image > np.percentile(row.image, 50)
    if not mask.any():
        return tuple(s // 2 for s in shape)
    return tuple(int(round(float(np.mean(ix)))) for ix in np.nonzero(mask))


def _planes(volume: np.ndarray, spacing: Sequence[float], center: Sequence[int]) -> list[tuple[np.ndarray, list[float]]]:
    """Three slices through ``center`` (display order), each with its mm extent for ``imshow``."""
    sz, sy, sx = spacing
    d, h, w = volume.shape
    return [
        (volume[center[0]], [0, w * sx, h * sy, 0]),
        (volume[:, center[1], :], [0, w * sx, 0, d * sz]),
        (volume[:, :, center[2]], [0, h * sy, 0, d * sz]),
    ]


def _draw_slice(ax: Axes, image: np.ndarray, extent: list[float], window: tuple[float, float], plane: int) -> None:
    origin = "upper" if plane == 0 else "lower"
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=extent, origin=origin, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_overlay_rows(
    rows: Sequence[OverlayRow],
    table: Sequence[LabelEntry] | None,
    path: str | os.PathLike,
    alpha: float = 0.45,
    panel_inches: float = 3.0,
    title: str | None = None,
) -> Path:
    """One row per :class:`OverlayRow`, three orthogonal slices through the row's label centre; write ``path``.

    The PNG is ``3 * panel_inches * DPI`` wide and ``(len(rows) * panel_inches + 0.3) * DPI`` high (plus
    0.4 in for a title). Slices go through ``row.center`` (display-order voxel index) or the label's centre of
    mass, else the bright part of the image.
    """
    if not rows:
        raise ValueError("plot_overlay_rows needs at least one row")
    header = 0.3 + (0.4 if title else 0.0)
    height = len(rows) * panel_inches + header
    fig = Figure(figsize=(3 * panel_inches, height), dpi=DPI)
    plane_names = PLANE_NAMES if all(r.direction is not None for r in rows) else ARRAY_PLANE_NAMES
    for r, row in enumerate(rows):
        image, spacing = reorient(np.asarray(row.image, dtype=float), row.spacing, row.direction)
        label = reorient(np.asarray(row.label), row.spacing, row.direction)[0] if row.label is not None else None
        if label is not None and label.shape != image.shape:
            raise ValueError(f"row {row.title!r}: label shape {label.shape} differs from image shape {image.shape}")
        center = _center(OverlayRow(row.title, image, spacing, label, None, row.center), image.shape)
        window = _window(image)
        lut = label_colors(table, int(label.max())) if label is not None and label.size else None
        image_planes = _planes(image, spacing, center)
        label_planes = _planes(label, spacing, center) if label is not None else [None] * 3
        for p, ((img, extent), lab) in enumerate(zip(image_planes, label_planes)):
            ax = fig.add_subplot(len(rows), 3, r * 3 + p + 1)
            _draw_slice(ax, img, extent, window, p)
            if lab is not None and lut is not None:
                rgba = lut[lab[0].astype(np.int64)]
                rgba[..., 3] *= alpha
                ax.imshow(rgba, extent=extent, origin="upper" if p == 0 else "lower", interpolation="nearest")
            if r == 0:
                ax.set_title(plane_names[p], fontsize=9)
            if p == 0:
                ax.set_ylabel(row.title, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=1 - header / height, wspace=0.02, hspace=0.04)
    return save_figure(fig, path)


def plot_atlas_scan_segmentation(
    atlas_image: np.ndarray,
    atlas_label: np.ndarray,
    atlas_spacing: Sequence[float],
    scan: np.ndarray,
    segmentation: np.ndarray,
    scan_spacing: Sequence[float],
    table: Sequence[LabelEntry] | None,
    path: str | os.PathLike,
    atlas_direction: Sequence[float] | None = None,
    scan_direction: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Rows: atlas with its label, the scan alone, the scan with its segmentation (slices at the segmentation's centre)."""
    shown_scan, shown_spacing = reorient(np.asarray(scan, dtype=float), scan_spacing, scan_direction)
    shown_seg = reorient(np.asarray(segmentation), scan_spacing, scan_direction)[0]
    center = _center(OverlayRow("", shown_scan, shown_spacing, shown_seg), shown_scan.shape)
    rows = [
        OverlayRow("atlas + label", atlas_image, atlas_spacing, atlas_label, atlas_direction),
        OverlayRow("scan", scan, scan_spacing, None, scan_direction, center),
        OverlayRow("scan + segmentation", scan, scan_spacing, segmentation, scan_direction, center),
    ]
    return plot_overlay_rows(rows, table, path, title=title)


def grid_lines(positions: np.ndarray, step: float, width: float = 0.6) -> np.ndarray:
    """Line intensity (0..1) of a regular grid with period ``step`` sampled at ``positions`` (2, H, W), voxel units."""
    distance = np.abs(np.mod(positions + step / 2.0, step) - step / 2.0)
    return np.max(np.exp(-0.5 * (distance / width) ** 2), axis=0)


def plot_deformation_grid(
    scan: np.ndarray,
    spacing: Sequence[float],
    displacement: np.ndarray,
    path: str | os.PathLike,
    units: str = "mm",
    step: int = 4,
    direction: Sequence[float] | None = None,
    plane: int = 0,
    index: int | None = None,
    panel_inches: float = 5.0,
    title: str | None = None,
) -> Path:
    """Scan slice with the atlas's regular grid drawn where the field puts it; write ``path``.

    ``displacement`` is ``(3, D, H, W)`` on the scan grid, components along array axes (z, y, x), in
    ``units`` "mm" or "voxel", resampling convention (scan point x matches atlas point x + u(x)). A
    grid with lines every ``step`` atlas voxels is sampled at x + u(x) using the in-plane components
    only, so straight lines mean no in-plane deformation. ``plane`` 0/1/2 = axial/coronal/sagittal
    (with ``direction``) or array axis; ``index`` defaults to the middle slice. PNG is
    ``panel_inches * DPI`` pixels square.
    """
    scan = np.asarray(scan, dtype=float)
    field = np.asarray(displacement, dtype=float)
    if field.shape != (3, *scan.shape):
        raise ValueError(f"displacement shape {field.shape} must be (3, {', '.join(map(str, scan.shape))})")
    if units not in ("mm", "voxel"):
        raise ValueError(f"units must be 'mm' or 'voxel', got {units!r}")
    if units == "mm":
        field = field / np.asarray(spacing, dtype=float).reshape(3, 1, 1, 1)
    image, disp_spacing = reorient(scan, spacing, direction)
    field = reorient_vectors(field, direction)
    index = image.shape[plane] // 2 if index is None else int(index)
    in_plane = [a for a in range(3) if a != plane]
    take = [slice(None)] * 3
    take[plane] = index
    slice_image = image[tuple(take)]
    fine = max(1, int(np.ceil(400 / max(slice_image.shape))))
    rows, cols = np.meshgrid(*[(np.arange(n * fine) + 0.5) / fine - 0.5 for n in slice_image.shape], indexing="ij")
    samples = np.stack([rows, cols])
    positions = np.stack([
        samples[k] + ndimage.map_coordinates(field[a][tuple(take)], samples, order=1, mode="nearest")
        for k, a in enumerate(in_plane)
    ])
    lines = grid_lines(positions, float(step), width=0.8 / fine)
    d, h, w = image.shape
    sz, sy, sx = disp_spacing
    extent = [[0, w * sx, h * sy, 0], [0, w * sx, 0, d * sz], [0, h * sy, 0, d * sz]][plane]
    fig = Figure(figsize=(panel_inches, panel_inches), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    _draw_slice(ax, slice_image, extent, _window(image), plane)
    overlay = np.zeros((*lines.shape, 4))
    overlay[..., 0], overlay[..., 1], overlay[..., 3] = 1.0, 0.85, 0.85 * lines
    ax.imshow(overlay, extent=extent, origin="upper" if plane == 0 else "lower", interpolation="bilinear")
    names = PLANE_NAMES if direction is not None else ARRAY_PLANE_NAMES
    magnitude = np.sqrt(sum((field[a][tuple(take)] * disp_spacing[a]) ** 2 for a in in_plane))
    ax.set_title(title or f"{names[plane]} slice {index}: in-plane |u| max {magnitude.max():.1f} mm", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.93)
    return save_figure(fig, path)


def read_progress(path: str | os.PathLike) -> list[dict]:
    """Events of a ``progress.jsonl`` file (unreadable lines are skipped)."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def plot_loss_curves(
    progress: str | os.PathLike | Sequence[dict],
    path: str | os.PathLike,
    panel_inches: float = 4.0,
    title: str | None = None,
) -> Path:
    """One panel per stage: each loss vs step (log scale when positive and spanning > 2 decades), Dice dashed.

    ``progress`` is a ``progress.jsonl`` path or its events. PNG is ``n_stages * panel_inches`` by
    ``panel_inches * 0.75`` inches at ``DPI``; with no loss values a single panel says so.
    """
    events = read_progress(progress) if isinstance(progress, (str, os.PathLike)) else list(progress)
    stages: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for event in events:
        stage = str(event.get("stage") or "run")
        series = stages.setdefault(stage, {})
        step = event.get("step")
        if step is None:
            continue
        for name, value in (event.get("losses") or {}).items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                series.setdefault(str(name), []).append((int(step), float(value)))
        if isinstance(event.get("dice"), (int, float)):
            series.setdefault("dice", []).append((int(step), float(event["dice"])))
    stages = {k: v for k, v in stages.items() if v}
    count = max(len(stages), 1)
    fig = Figure(figsize=(count * panel_inches, panel_inches * 0.75), dpi=DPI)
    if not stages:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no loss values recorded", ha="center", va="center")
        ax.set_axis_off()
    for i, (stage, series) in enumerate(stages.items()):
        ax = fig.add_subplot(1, count, i + 1)
        losses = {k: v for k, v in series.items() if k != "dice"}
        for name, points in losses.items():
            steps, values = zip(*sorted(points))
            ax.plot(steps, values, label=name, linewidth=1.2)
        positive = [v for pts in losses.values() for _, v in pts]
        if positive and min(positive) > 0 and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        if "dice" in series:
            twin = ax.twinx()
            steps, values = zip(*sorted(series["dice"]))
            twin.plot(steps, values, "k--", linewidth=1.0, label="dice")
            twin.set_ylim(0, 1)
            twin.set_ylabel("Dice", fontsize=8)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if losses:
            ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically (exact size, no tight cropping) and return the path."""
    path = Path(path)
    with atomic_path(path) as temp:
        fig.savefig(temp, format="png", dpi=DPI)
    return path
