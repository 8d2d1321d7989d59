"""Report figures: what the matplotlib figures show (legends, labels, colour bars, orientation letters) and their PNGs."""

from __future__ import annotations

import colorsys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import OBLIQUE_DIRECTION, synthetic_brain_labels
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from RRLMedSAMLib.io.label_table import LabelEntry
from RRLMedSAMLib.metrics import evaluate_pairs, summarize
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.report import (
    OverlayRow,
    atlas_scan_rows,
    deformation_figure,
    loss_figure,
    overlay_figure,
    plot_atlas_scan_segmentation,
    plot_deformation_grid,
    plot_loss_curves,
    plot_overlay_rows,
    write_report,
)
from RRLMedSAMLib.report.figures import DICE_LABEL, DISPLACEMENT_LABEL
from RRLMedSAMLib.report.orientation import display_axes, reorient, reorient_vectors
from RRLMedSAMLib.report.overlays import overlay_palette

TABLE = [LabelEntry(2, "White", (250, 250, 250)), LabelEntry(3, "Grey", (200, 60, 80))]


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    pixels = matplotlib.image.imread(str(path))
    assert pixels[..., :3].std() > 0.01  # not a blank canvas
    return pixels


def _orientation(fig: Figure) -> list[dict[str, str]]:
    """Orientation letters of every panel that has them, by side."""
    panels = []
    for ax in fig.axes:
        letters = {t.get_gid().split("-")[1]: t.get_text() for t in ax.texts if (t.get_gid() or "").startswith("orientation-")}
        if letters:
            panels.append(letters)
    return panels


def _drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()
    return fig


@pytest.fixture
def volumes() -> tuple[np.ndarray, np.ndarray]:
    labels = synthetic_brain_labels((20, 24, 22)).astype(np.int64)
    labels[(labels == 24) | (labels == 165)] = 0
    image = np.where(labels > 0, 0.3, 0.0) + np.where(np.isin(labels, (2, 41)), 0.2, 0.0)
    return image.astype(np.float32), labels


def _image(array: np.ndarray, direction: tuple[float, ...] = OBLIQUE_DIRECTION, spacing=(1.0, 1.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    return image


def test_overlay_legend_names_the_structures_in_distinct_colours(volumes: tuple[np.ndarray, np.ndarray]) -> None:
    image, labels = volumes
    rows = atlas_scan_rows(_image(image), _image(labels.astype(np.uint16)), _image(image), _image(labels.astype(np.uint16)))
    fig = overlay_figure(rows, TABLE, title="atlas / scan")
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    # table names in table order, then FreeSurfer names of the ids the table lacks
    assert texts == ["White", "Grey", "Left-Lateral-Ventricle", "Left-Hippocampus", "Label 25",
                     "Right-Cerebral-White-Matter", "Right-Cerebral-Cortex", "Right-Lateral-Ventricle"]
    assert legend.get_title().get_text() == "Structures"
    colours = [tuple(h.get_edgecolor()[:3]) for h in legend.legend_handles]
    assert len(set(colours)) == len(colours)
    for colour in colours:  # saturated: never the label table's near-white or a grey
        assert colorsys.rgb_to_hsv(*colour)[1] > 0.2
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["atlas + label", "scan", "scan + segmentation"]
    assert len(_orientation(fig)) == 9


def test_overlay_png_size_and_colours(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, labels = volumes
    seg = _image(labels.astype(np.uint16))
    path = plot_atlas_scan_segmentation(_image(image), seg, _image(image), seg, TABLE, tmp_path / "overlay.png", title="t")
    pixels = _png(path)
    assert pixels.shape[:2] == (970, 1140)  # (3 x 3 in + 2.4 in legend) by (3 rows x 3 in + 0.7 in), 100 dpi
    blue = overlay_palette([2])[2]
    assert (np.abs(pixels[..., :3] - blue).sum(axis=-1) < 0.05).any()  # white matter's outline colour is drawn


def test_overlay_rows_without_direction_and_label(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, labels = volumes
    rows = [OverlayRow("image", image, (1.0, 1.0, 1.0)), OverlayRow("label", image, (1.0, 1.0, 1.0), labels)]
    assert _orientation(overlay_figure(rows, None)) == []  # no direction, no letters
    pixels = _png(plot_overlay_rows(rows, None, tmp_path / "rows.png", panel_inches=2.0))
    assert pixels.shape[:2] == (430, 840)
    plain = overlay_figure([OverlayRow("image", image, (1.0, 1.0, 1.0))], None)
    assert plain.legends == [] and plain.get_size_inches()[0] == 9.0
    with pytest.raises(ValueError, match="differs"):
        plot_overlay_rows([OverlayRow("bad", image, (1, 1, 1), labels[:-1])], None, tmp_path / "bad.png")


def test_deformation_figure_has_a_scale_in_mm(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, _ = volumes
    y = np.arange(image.shape[1], dtype=float)[None, :, None] * np.ones(image.shape)
    field = np.zeros((3, *image.shape))
    field[2] = 2.0 * np.sin(y / 3.0)
    shift = np.zeros((3, *image.shape))
    shift[2] = 3.0  # 3 voxels of 1 mm along x, in the coronal plane
    fig = deformation_figure(image, (2.0, 1.0, 1.0), shift, units="voxel", direction=OBLIQUE_DIRECTION, plane=1)
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == DISPLACEMENT_LABEL
    assert colorbar.get_ylim()[1] == pytest.approx(3.0, abs=0.01)
    assert "grid every 4 voxels (4 mm across, 8 mm down)" in ax.get_title()
    assert _orientation(fig) == [{"left": "RA", "right": "LP", "top": "S", "bottom": "I"}]  # 20 degrees about z
    still = _png(plot_deformation_grid(image, (1.0, 1.0, 1.0), np.zeros((3, *image.shape)), tmp_path / "still.png"))
    assert still.shape[:2] == (500, 620)
    moved = _png(plot_deformation_grid(image, (2.0, 1.0, 1.0), field, tmp_path / "moved.png", units="voxel",
                                       direction=OBLIQUE_DIRECTION, plane=1))
    assert not np.array_equal(still, moved)
    with pytest.raises(ValueError, match="units"):
        plot_deformation_grid(image, (1, 1, 1), field, tmp_path / "x.png", units="cm")
    with pytest.raises(ValueError, match="shape"):
        plot_deformation_grid(image, (1, 1, 1), field[:, :-1], tmp_path / "x.png")


def test_reorientation_matches_patient_axes() -> None:
    lia = (1, 0, 0, 0, 0, -1, 0, -1, 0)  # the SynthSeg label maps' direction
    perm, flips = display_axes(lia)
    assert perm == (1, 0, 2) and flips == (True, True, False)
    volume = np.arange(24).reshape(2, 3, 4)
    shown, spacing = reorient(volume, (1.0, 2.0, 3.0), lia)
    assert shown.shape == (3, 2, 4) and spacing == (2.0, 1.0, 3.0)
    assert shown[0, 0, 0] == volume[1, 2, 0]
    field = np.zeros((3, 2, 3, 4))
    field[0] = 1.0  # along array axis 0 (k), which points to -y (anterior)
    moved = reorient_vectors(field, lia)
    assert moved.shape == (3, 3, 2, 4) and np.allclose(moved[1], -1.0) and np.allclose(moved[0], 0.0)


def _progress_log(tmp_path: Path) -> Path:
    log = tmp_path / "progress.jsonl"
    with open(tmp_path / "stdout.txt", "w") as stream:
        reporter = ProgressReporter(log, stream=stream, show_bar=False, min_interval_s=0.0)
        for stage, total in (("registration", 20), ("segmentation", 10)):
            reporter.start_stage(stage, total)
            for step in range(1, total + 1):
                losses = {"ncc": step / total, "smooth": 0.1 / step} if stage == "registration" else {"segmentation": 1 / step}
                reporter.update(step, losses, dice=step / total / 2 if stage == "segmentation" else None)
            reporter.end_stage()
        reporter.done()
    return log


def test_loss_curves_say_what_each_line_is_outside_the_data(tmp_path: Path) -> None:
    fig = _drawn(loss_figure(_progress_log(tmp_path), title="Training losses"))
    registration, segmentation, dice_axis = fig.axes
    assert [ax.get_xlabel() for ax in (registration, segmentation)] == ["training step"] * 2
    assert registration.get_ylabel() == "loss or similarity" and segmentation.get_ylabel() == "loss"
    assert dice_axis.get_ylabel() == "Dice on pseudo labels"
    assert [t.get_text() for t in registration.get_legend().get_texts()] == [
        "NCC similarity (higher = better aligned)", "smoothness penalty"]
    legend = segmentation.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["segmentation loss", DICE_LABEL]
    assert legend.get_lines()[1].get_linestyle() == "--"
    for ax in (registration, segmentation):  # each legend lies under its axes, not over the curves
        box, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert box.y1 <= frame.y0 and box.x0 >= 0 and box.x1 <= fig.bbox.width
    pixels = _png(plot_loss_curves(tmp_path / "progress.jsonl", tmp_path / "loss.png"))
    assert pixels.shape[:2] == (400, 800)
    empty = _png(plot_loss_curves([], tmp_path / "empty.png"))
    assert empty.shape[:2] == (400, 400)


def test_write_report_embeds_figures_and_table(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    _, labels = volumes
    truth = sitk.GetImageFromArray(labels.astype(np.uint16))
    summary = summarize(evaluate_pairs([("case1", truth, truth)]), TABLE)
    figure = plot_loss_curves([], tmp_path / "report" / "loss.png")
    path = write_report(tmp_path / "report", "Demo", [("Losses", figure)], summary, ["real anatomy, synthetic contrast"])
    text = path.read_text()
    assert "![Losses](loss.png)" in text and "| 2 | White |" in text and "synthetic contrast" in text
    assert "**1.000**" in text
