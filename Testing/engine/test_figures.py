"""Report figures: PNGs exist, are not blank, have the documented sizes; report.md embeds them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from conftest import OBLIQUE_DIRECTION, synthetic_brain_labels

from RRLMedSAMLib.io.label_table import LabelEntry
from RRLMedSAMLib.metrics import evaluate_pairs, summarize
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.report import (
    OverlayRow,
    plot_atlas_scan_segmentation,
    plot_deformation_grid,
    plot_loss_curves,
    plot_overlay_rows,
    write_report,
)
from RRLMedSAMLib.report.figures import display_axes, reorient, reorient_vectors

TABLE = [LabelEntry(2, "White", (250, 250, 250)), LabelEntry(3, "Grey", (200, 60, 80))]


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    pixels = matplotlib.image.imread(str(path))
    assert pixels[..., :3].std() > 0.01  # not a blank canvas
    return pixels


@pytest.fixture
def volumes() -> tuple[np.ndarray, np.ndarray]:
    labels = synthetic_brain_labels((20, 24, 22)).astype(np.int64)
    labels[(labels == 24) | (labels == 165)] = 0
    image = np.where(labels > 0, 0.3, 0.0) + np.where(np.isin(labels, (2, 41)), 0.2, 0.0)
    return image.astype(np.float32), labels


def test_overlay_figure_size_and_content(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, labels = volumes
    path = plot_atlas_scan_segmentation(
        image, labels, (1.0, 1.0, 1.0), image, labels, (2.0, 1.0, 1.0), TABLE, tmp_path / "overlay.png",
        atlas_direction=OBLIQUE_DIRECTION, scan_direction=OBLIQUE_DIRECTION, title="atlas / scan",
    )
    pixels = _png(path)
    assert pixels.shape[:2] == (970, 900)  # 3 rows x 3 in + 0.3 in header + 0.4 in title, at 100 dpi
    assert (pixels[..., 0] > 0.7).any() and (pixels[..., 2] < 0.5).any()  # the grey-matter colour shows


def test_overlay_rows_without_direction_and_label(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, labels = volumes
    rows = [OverlayRow("image", image, (1.0, 1.0, 1.0)), OverlayRow("label", image, (1.0, 1.0, 1.0), labels)]
    pixels = _png(plot_overlay_rows(rows, None, tmp_path / "rows.png", panel_inches=2.0))
    assert pixels.shape[:2] == (430, 600)
    with pytest.raises(ValueError, match="differs"):
        plot_overlay_rows([OverlayRow("bad", image, (1, 1, 1), labels[:-1])], None, tmp_path / "bad.png")


def test_deformation_grid(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    image, _ = volumes
    still = _png(plot_deformation_grid(image, (1.0, 1.0, 1.0), np.zeros((3, *image.shape)), tmp_path / "still.png"))
    assert still.shape[:2] == (500, 500)
    y = np.arange(image.shape[1], dtype=float)[None, :, None] * np.ones(image.shape)
    field = np.zeros((3, *image.shape))
    field[2] = 2.0 * np.sin(y / 3.0)
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


def test_loss_curves_from_progress_file(tmp_path: Path) -> None:
    log = tmp_path / "progress.jsonl"
    with open(tmp_path / "stdout.txt", "w") as stream:
        reporter = ProgressReporter(log, stream=stream, show_bar=False, min_interval_s=0.0)
        for stage, total in (("registration", 20), ("segmentation", 10)):
            reporter.start_stage(stage, total)
            for step in range(1, total + 1):
                reporter.update(step, {"ncc": -step / total, "smooth": 0.1 / step}, dice=step / total / 2)
            reporter.end_stage()
        reporter.done()
    pixels = _png(plot_loss_curves(log, tmp_path / "loss.png"))
    assert pixels.shape[:2] == (300, 800)
    empty = _png(plot_loss_curves([], tmp_path / "empty.png"))
    assert empty.shape[:2] == (300, 400)


def test_write_report_embeds_figures_and_table(volumes: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    import SimpleITK as sitk

    _, labels = volumes
    truth = sitk.GetImageFromArray(labels.astype(np.uint16))
    summary = summarize(evaluate_pairs([("case1", truth, truth)]), TABLE)
    figure = plot_loss_curves([], tmp_path / "report" / "loss.png")
    path = write_report(tmp_path / "report", "Demo", [("Losses", figure)], summary, ["real anatomy, synthetic contrast"])
    text = path.read_text()
    assert "![Losses](loss.png)" in text and "| 2 | White |" in text and "synthetic contrast" in text
    assert "**1.000**" in text
