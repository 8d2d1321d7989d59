"""Report figures (PNG, matplotlib Agg): label overlays, deformation grids, loss curves.

Array conventions: volumes are numpy ``(z, y, x)`` (``sitk.GetArrayFromImage`` order) with
``spacing`` ``(sz, sy, sx)`` in mm. Displacement fields are ``(3, D, H, W)`` with components along
the array axes ``(z, y, x)``, in mm (``units="mm"``) or voxels (``units="voxel"``); see
:func:`RRLMedSAMLib.metrics.physical_to_array_displacement` for ITK fields.

Pass ``direction`` (the 9 cosines of ``sitk.Image.GetDirection()``) to show true axial / coronal /
sagittal planes in radiological convention with orientation letters
(:mod:`RRLMedSAMLib.report.orientation`); without it the planes are the array's own axes. Every
figure has a ``*_figure`` function returning the matplotlib :class:`Figure` (to inspect) and a
``plot_*`` one writing it. Figures use matplotlib's object-oriented API (no pyplot, no GUI; PNGs are
rendered by Agg) and have exact sizes (``figsize`` x ``DPI`` pixels, no tight cropping).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from RRLMedSAMLib.report.canvas import ARRAY_PLANE_NAMES, DPI, PLANE_NAMES, draw_slice, origin_of, save_figure, window
from RRLMedSAMLib.report.orientation import (
    display_axes,
    draw_orientation,
    panel_letters,
    reorient,
    reorient_vectors,
)
from RRLMedSAMLib.report.overlays import (
    OverlayRow,
    overlay_figure,
    overlay_palette,
    plot_atlas_scan_segmentation,
    plot_overlay_rows,
)

__all__ = [
    "DPI", "OverlayRow", "deformation_figure", "display_axes", "loss_figure", "overlay_figure", "overlay_palette",
    "plot_atlas_scan_segmentation", "plot_deformation_grid", "plot_loss_curves", "plot_overlay_rows", "reorient",
    "reorient_vectors", "save_figure",
]

#: What the loss names of ``progress.jsonl`` mean (legend texts); other names are shown as they are.
LOSS_NAMES = {
    "registration": "registration loss (total)",
    "ncc": "NCC similarity (higher = better aligned)",
    "smooth": "smoothness penalty",
    "segmentation": "segmentation loss",
    "distillation": "SAM distillation loss",
    "general": "general branch loss",
    "medical": "medical branch loss",
    "encoder_gap": "encoder gap",
}
#: Names of ``progress.jsonl`` values that are similarities (higher is better), not losses.
SIMILARITIES = {"ncc"}
DICE_LABEL = "Dice of the segmentation on pseudo labels (training batch)"
DISPLACEMENT_LABEL = "in-plane displacement |u| (mm)"


def grid_lines(positions: np.ndarray, step: float, width: float = 0.6) -> np.ndarray:
    """Line intensity (0..1) of a regular grid with period ``step`` sampled at ``positions`` (2, H, W), voxel units."""
    distance = np.abs(np.mod(positions + step / 2.0, step) - step / 2.0)
    return np.max(np.exp(-0.5 * (distance / width) ** 2), axis=0)


def deformation_figure(
    scan: np.ndarray,
    spacing: Sequence[float],
    displacement: np.ndarray,
    units: str = "mm",
    step: int = 4,
    direction: Sequence[float] | None = None,
    plane: int = 0,
    index: int | None = None,
    panel_inches: float = 5.0,
    title: str | None = None,
) -> Figure:
    """Scan slice with the atlas's regular grid drawn where the field puts it, coloured by displacement.

    ``displacement`` is ``(3, D, H, W)`` on the scan grid, components along array axes (z, y, x), in
    ``units`` "mm" or "voxel", resampling convention (scan point x matches atlas point x + u(x)). A
    grid with lines every ``step`` atlas voxels is sampled at x + u(x) using the in-plane components
    only, so straight lines mean no in-plane deformation; the lines' colour is the in-plane |u| in mm
    (colour bar at the right). ``plane`` 0/1/2 = axial/coronal/sagittal (with ``direction``) or array
    axis; ``index`` (display order) defaults to the middle slice. Size ``panel_inches + 1.2`` by
    ``panel_inches`` inches.
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
    take: list = [slice(None)] * 3
    take[plane] = index
    slice_image = image[tuple(take)]
    fine = max(1, int(np.ceil(400 / max(slice_image.shape))))
    rows, cols = np.meshgrid(*[(np.arange(n * fine) + 0.5) / fine - 0.5 for n in slice_image.shape], indexing="ij")
    samples = np.stack([rows, cols])
    moved = [ndimage.map_coordinates(field[a][tuple(take)], samples, order=1, mode="nearest") for a in in_plane]
    lines = grid_lines(np.stack([samples[k] + moved[k] for k in range(2)]), float(step), width=0.8 / fine)
    magnitude = np.sqrt(sum((moved[k] * disp_spacing[a]) ** 2 for k, a in enumerate(in_plane)))
    norm = Normalize(0.0, max(float(magnitude.max()), 1e-3))
    cmap = matplotlib.colormaps["cool"]
    d, h, w = image.shape
    sz, sy, sx = disp_spacing
    extent = [[0, w * sx, h * sy, 0], [0, w * sx, 0, d * sz], [0, h * sy, 0, d * sz]][plane]
    fig = Figure(figsize=(panel_inches + 1.2, panel_inches), dpi=DPI)
    ax = fig.add_axes((0.02 / (1 + 1.2 / panel_inches), 0.02, 0.96 / (1 + 1.2 / panel_inches), 0.88))
    draw_slice(ax, slice_image, extent, window(image), plane, dim=0.6)
    overlay = cmap(norm(magnitude))
    overlay[..., 3] = lines
    ax.imshow(overlay, extent=extent, origin=origin_of(plane), interpolation="bilinear")
    if direction is not None:
        draw_orientation(ax, panel_letters(direction, plane))
    names = PLANE_NAMES if direction is not None else ARRAY_PLANE_NAMES
    down, across = (step * disp_spacing[a] for a in in_plane)
    grid_mm = f"{down:.3g} mm" if np.isclose(down, across) else f"{across:.3g} mm across, {down:.3g} mm down"
    subtitle = f"{names[plane]} slice {index}; grid every {step} voxels ({grid_mm}), max |u| {magnitude.max():.1f} mm"
    ax.set_title(f"{title}\n{subtitle}" if title else subtitle, fontsize=9)
    cax = fig.add_axes((1 - 0.95 / (panel_inches + 1.2), 0.1, 0.18 / (panel_inches + 1.2), 0.75))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax).set_label(DISPLACEMENT_LABEL, fontsize=9)
    return fig


def plot_deformation_grid(
    scan: np.ndarray, spacing: Sequence[float], displacement: np.ndarray, path: str | os.PathLike, **options: Any
) -> Path:
    """:func:`deformation_figure` (same keyword options) written to ``path`` (PNG)."""
    fig = deformation_figure(scan, spacing, displacement, **options)
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


def _series(events: Sequence[dict]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{stage: {loss name or "dice": [(step, value)]}}`` of the progress events with values."""
    stages: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for event in events:
        series = stages.setdefault(str(event.get("stage") or "run"), {})
        step = event.get("step")
        if step is None:
            continue
        for name, value in (event.get("losses") or {}).items():
            if isinstance(value, (int, float)) and np.isfinite(value):
                series.setdefault(str(name), []).append((int(step), float(value)))
        if isinstance(event.get("dice"), (int, float)):
            series.setdefault("dice", []).append((int(step), float(event["dice"])))
    return {k: v for k, v in stages.items() if v}


def loss_figure(progress: str | os.PathLike | Sequence[dict], panel_inches: float = 4.0, title: str | None = None) -> Figure:
    """One panel per stage: each loss vs training step, the Dice on pseudo labels dashed on a right axis.

    Log scale when the losses are positive and span > 2 decades. The legend (what each line is)
    sits under the axes. ``progress`` is a ``progress.jsonl`` path or its events. Size
    ``n_stages * panel_inches`` by ``panel_inches`` inches; with no loss values a single panel says so.
    """
    events = read_progress(progress) if isinstance(progress, (str, os.PathLike)) else list(progress)
    stages = _series(events)
    count = max(len(stages), 1)
    fig = Figure(figsize=(count * panel_inches, panel_inches), dpi=DPI, layout="constrained")
    if not stages:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no loss values recorded", ha="center", va="center")
        ax.set_axis_off()
    for i, (stage, series) in enumerate(stages.items()):
        ax = fig.add_subplot(1, count, i + 1)
        losses = {k: v for k, v in series.items() if k != "dice"}
        handles: list[Line2D] = []
        for name, points in losses.items():
            steps, values = zip(*sorted(points))
            handles += ax.plot(steps, values, label=LOSS_NAMES.get(name, name), linewidth=1.2)
        positive = [v for pts in losses.values() for _, v in pts]
        if positive and min(positive) > 0 and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
        if "dice" in series:
            twin = ax.twinx()
            steps, values = zip(*sorted(series["dice"]))
            handles += twin.plot(steps, values, "k--", linewidth=1.0, label=DICE_LABEL)
            twin.set_ylim(0, 1)
            twin.set_ylabel("Dice on pseudo labels", fontsize=8)
            twin.tick_params(labelsize=7)
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("loss or similarity" if SIMILARITIES & set(losses) else "loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if handles:
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_loss_curves(
    progress: str | os.PathLike | Sequence[dict],
    path: str | os.PathLike,
    panel_inches: float = 4.0,
    title: str | None = None,
) -> Path:
    """:func:`loss_figure` written to ``path`` (PNG)."""
    return save_figure(loss_figure(progress, panel_inches, title), path)
