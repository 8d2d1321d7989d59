"""Report figures (overlays, deformation grids, loss curves) and the markdown report."""

from RRLMedSAMLib.report.figures import (
    deformation_figure,
    loss_figure,
    plot_deformation_grid,
    plot_loss_curves,
)
from RRLMedSAMLib.report.overlays import (
    OverlayRow,
    atlas_scan_rows,
    overlay_figure,
    plot_atlas_scan_segmentation,
    plot_overlay_rows,
)
from RRLMedSAMLib.report.report import write_report

__all__ = [
    "OverlayRow",
    "atlas_scan_rows",
    "deformation_figure",
    "loss_figure",
    "overlay_figure",
    "plot_atlas_scan_segmentation",
    "plot_deformation_grid",
    "plot_loss_curves",
    "plot_overlay_rows",
    "write_report",
]
