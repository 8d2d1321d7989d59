"""Label overlay figures: grey slices with structures in a categorical palette, a named legend and orientation letters.

Structure colours of a label table are meant for Slicer and may be hard to see on anatomy (FreeSurfer
draws white matter near-white); figures use :func:`overlay_palette` instead, with a legend naming
every structure shown. Structures are filled translucently and outlined opaquely.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from RRLMedSAMLib.io.label_table import LabelEntry, default_entry
from RRLMedSAMLib.report.canvas import ARRAY_PLANE_NAMES, DPI, PLANE_NAMES, draw_slice, origin_of, planes, save_figure, window
from RRLMedSAMLib.report.orientation import draw_orientation, panel_letters, reorient, to_array_index, to_display_index

#: Width of the legend column, inches.
LEGEND_INCHES = 2.4
#: Distinct categorical colours (after Trubetskoy's 20 distinct colours, without white, black, grey and
#: the darkest): every hue differs from its neighbours and stands out from grey anatomy.
DISTINCT_COLOURS = (
    "#4363d8", "#f58231", "#3cb44b", "#e6194b", "#911eb4", "#ffe119", "#42d4f4", "#f032e6",
    "#bfef45", "#9a6324", "#469990", "#fabed4", "#808000", "#dcbeff", "#aaffc3", "#ffd8b1",
)


@dataclass
class OverlayRow:
    """One row of an overlay figure: a grey image with an optional labelmap on top of it.

    ``center`` is the display-order voxel the three slices go through (default: the label's centre).
    """

    title: str
    image: np.ndarray
    spacing: Sequence[float]
    label: np.ndarray | None = None
    direction: Sequence[float] | None = None
    center: Sequence[int] | None = None


def overlay_palette(ids: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """Distinct RGB colours (0..1) for ``ids`` in order: :data:`DISTINCT_COLOURS`, then a golden-angle hue walk."""
    colours: dict[int, tuple[float, float, float]] = {}
    for rank, label_id in enumerate(ids):
        if rank < len(DISTINCT_COLOURS):
            colours[int(label_id)] = to_rgb(DISTINCT_COLOURS[rank])
        else:
            colours[int(label_id)] = colorsys.hsv_to_rgb((rank * 0.618033988749895) % 1.0, 0.85, 0.95)
    return colours


def structure_order(table: Sequence[LabelEntry] | None, present: set[int]) -> list[int]:
    """Ids coloured in a figure: the table's, in its order (so colours agree between figures), then other present ids."""
    listed = [e.id for e in table or []]
    return listed + sorted(i for i in present if i not in listed and i != 0)


def structure_names(table: Sequence[LabelEntry] | None, ids: Sequence[int]) -> dict[int, str]:
    """Names of ``ids``: from the table, else FreeSurfer's or ``label <id>``."""
    known = {e.id: e.name for e in table or []}
    return {i: known.get(i, default_entry(i).name) for i in ids}


def legend_handles(
    ids: Sequence[int], names: dict[int, str], colours: dict[int, tuple[float, float, float]], alpha: float = 0.45
) -> list[Patch]:
    """One patch per structure, labelled with its name, drawn as in the panels (translucent fill, opaque outline)."""
    return [Patch(facecolor=(*colours[i], alpha), edgecolor=colours[i], linewidth=1.5, label=names[i]) for i in ids]


def label_rgba(label: np.ndarray, colours: dict[int, tuple[float, float, float]], alpha: float, upsample: int) -> np.ndarray:
    """RGBA image of a 2D labelmap upsampled ``upsample`` times: fill at ``alpha``, one-pixel opaque outlines."""
    fine = np.repeat(np.repeat(np.asarray(label, dtype=np.int64), upsample, 0), upsample, 1)
    lut = np.zeros((int(max(fine.max(), max(colours, default=0))) + 1, 4))
    for label_id, colour in colours.items():
        lut[label_id, :3] = colour
    rgba = lut[fine]
    edge = np.zeros(fine.shape, dtype=bool)
    edge[1:, :] |= fine[1:, :] != fine[:-1, :]
    edge[:-1, :] |= fine[:-1, :] != fine[1:, :]
    edge[:, 1:] |= fine[:, 1:] != fine[:, :-1]
    edge[:, :-1] |= fine[:, :-1] != fine[:, 1:]
    inside = fine > 0
    rgba[..., 3] = np.where(inside, np.where(edge, 1.0, alpha), 0.0)
    return rgba


def _center(image: np.ndarray, label: np.ndarray | None) -> tuple[int, ...]:
    """Centre of mass of the label, else of the image's bright half, else the middle voxel."""
    mask = label > 0 if label is not None and np.any(label) else image > np.percentile(image, 50)
    if not mask.any():
        return tuple(s // 2 for s in image.shape)
    return tuple(int(round(float(np.mean(ix)))) for ix in np.nonzero(mask))


def _panel_labels(ax: Axes, label: np.ndarray, extent: list[float], plane: int, colours: dict, alpha: float) -> None:
    upsample = int(np.clip(np.ceil(300 / max(label.shape)), 1, 8))
    ax.imshow(label_rgba(label, colours, alpha, upsample), extent=extent, origin=origin_of(plane), interpolation="nearest")


def overlay_figure(
    rows: Sequence[OverlayRow],
    table: Sequence[LabelEntry] | None,
    alpha: float = 0.45,
    panel_inches: float = 3.0,
    title: str | None = None,
) -> Figure:
    """One row per :class:`OverlayRow`, three orthogonal slices through the row's centre, a structure legend at the right.

    Size: ``3 * panel_inches`` (+ :data:`LEGEND_INCHES` when any row has a label) by
    ``len(rows) * panel_inches + 0.3`` (+ 0.4 with a title) inches. Panels of rows with a
    direction carry orientation letters.
    """
    if not rows:
        raise ValueError("plot_overlay_rows needs at least one row")
    shown = []
    for row in rows:
        image, spacing = reorient(np.asarray(row.image, dtype=float), row.spacing, row.direction)
        label = reorient(np.asarray(row.label), row.spacing, row.direction)[0] if row.label is not None else None
        if label is not None and label.shape != image.shape:
            raise ValueError(f"row {row.title!r}: label shape {label.shape} differs from image shape {image.shape}")
        center = tuple(int(c) for c in row.center) if row.center is not None else _center(image, label)
        shown.append((row, image, spacing, label, center))
    present = set().union(*[set(np.unique(s[3]).tolist()) for s in shown if s[3] is not None]) - {0}
    order = structure_order(table, present)
    colours = overlay_palette(order)
    legend = bool(present)
    header = 0.3 + (0.4 if title else 0.0)
    width = 3 * panel_inches + (LEGEND_INCHES if legend else 0.0)
    height = len(rows) * panel_inches + header
    fig = Figure(figsize=(width, height), dpi=DPI)
    plane_names = PLANE_NAMES if all(r.direction is not None for r in rows) else ARRAY_PLANE_NAMES
    for r, (row, image, spacing, label, center) in enumerate(shown):
        grey = window(image)
        label_planes = planes(label, spacing, center) if label is not None else [None] * 3
        for p, ((img, extent), lab) in enumerate(zip(planes(image, spacing, center), label_planes)):
            ax = fig.add_subplot(len(rows), 3, r * 3 + p + 1)
            draw_slice(ax, img, extent, grey, p)
            if lab is not None:
                _panel_labels(ax, lab[0], extent, p, colours, alpha)
            if row.direction is not None:
                draw_orientation(ax, panel_letters(row.direction, p))
            if r == 0:
                ax.set_title(plane_names[p], fontsize=9)
            if p == 0:
                ax.set_ylabel(row.title, fontsize=9)
    if legend:
        ids = [i for i in order if i in present]
        fig.legend(handles=legend_handles(ids, structure_names(table, ids), colours, alpha), loc="center left",
                   bbox_to_anchor=(3 * panel_inches / width, 0.5), fontsize=8, title="Structures", title_fontsize=9,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.3 / width, right=(3 * panel_inches - 0.05) / width, bottom=0.01,
                        top=1 - header / height, wspace=0.02, hspace=0.04)
    return fig


def plot_overlay_rows(
    rows: Sequence[OverlayRow],
    table: Sequence[LabelEntry] | None,
    path: str | os.PathLike,
    alpha: float = 0.45,
    panel_inches: float = 3.0,
    title: str | None = None,
) -> Path:
    """:func:`overlay_figure` written to ``path`` (PNG)."""
    return save_figure(overlay_figure(rows, table, alpha, panel_inches, title), path)


def matching_atlas_index(
    scan: sitk.Image, scan_index: Sequence[int], atlas: sitk.Image, scan_to_atlas: sitk.Transform | None = None
) -> tuple[int, ...]:
    """Array index ``(z, y, x)`` of the atlas voxel at the anatomical position of scan voxel ``scan_index`` ``(z, y, x)``.

    The scan voxel's LPS point is mapped by ``scan_to_atlas`` (scan point -> atlas point, e.g. the
    registration's displacement field as a :class:`sitk.DisplacementFieldTransform`), or taken as is
    without one (both images in the same physical space); the result is clipped to the atlas.
    """
    point = scan.TransformIndexToPhysicalPoint([int(i) for i in scan_index[::-1]])
    if scan_to_atlas is not None:
        point = scan_to_atlas.TransformPoint(point)
    continuous = atlas.TransformPhysicalPointToContinuousIndex([float(c) for c in point])
    size = atlas.GetSize()
    return tuple(int(np.clip(round(continuous[a]), 0, size[a] - 1)) for a in (2, 1, 0))


def atlas_scan_rows(
    atlas_image: sitk.Image,
    atlas_label: sitk.Image,
    scan: sitk.Image,
    segmentation: sitk.Image,
    scan_to_atlas: sitk.Transform | None = None,
) -> list[OverlayRow]:
    """Rows atlas + label, scan, scan + segmentation; the atlas is cut at the scan slices' anatomical position.

    The scan's slices go through the segmentation's centre; the atlas's through the atlas point that
    :func:`matching_atlas_index` maps that voxel to.
    """
    scan_array, seg_array = sitk.GetArrayFromImage(scan), sitk.GetArrayFromImage(segmentation)
    if seg_array.shape != scan_array.shape:
        raise ValueError(f"segmentation shape {seg_array.shape} differs from scan shape {scan_array.shape}")
    scan_dir, atlas_dir = scan.GetDirection(), atlas_image.GetDirection()
    shown_scan = reorient(scan_array, scan.GetSpacing()[::-1], scan_dir)[0]
    shown_seg = reorient(seg_array, scan.GetSpacing()[::-1], scan_dir)[0]
    scan_center = _center(shown_scan, shown_seg)
    scan_index = to_array_index(scan_center, scan_array.shape, scan_dir)
    atlas_array = sitk.GetArrayFromImage(atlas_image)
    atlas_index = matching_atlas_index(scan, scan_index, atlas_image, scan_to_atlas)
    atlas_center = to_display_index(atlas_index, atlas_array.shape, atlas_dir)
    scan_spacing, atlas_spacing = scan.GetSpacing()[::-1], atlas_image.GetSpacing()[::-1]
    return [
        OverlayRow("atlas + label", atlas_array, atlas_spacing, sitk.GetArrayFromImage(atlas_label), atlas_dir, atlas_center),
        OverlayRow("scan", scan_array, scan_spacing, None, scan_dir, scan_center),
        OverlayRow("scan + segmentation", scan_array, scan_spacing, seg_array, scan_dir, scan_center),
    ]


def plot_atlas_scan_segmentation(
    atlas_image: sitk.Image,
    atlas_label: sitk.Image,
    scan: sitk.Image,
    segmentation: sitk.Image,
    table: Sequence[LabelEntry] | None,
    path: str | os.PathLike,
    scan_to_atlas: sitk.Transform | None = None,
    title: str | None = None,
) -> Path:
    """:func:`atlas_scan_rows` drawn by :func:`overlay_figure` and written to ``path`` (PNG)."""
    rows = atlas_scan_rows(atlas_image, atlas_label, scan, segmentation, scan_to_atlas)
    return save_figure(overlay_figure(rows, table, title=title), path)
