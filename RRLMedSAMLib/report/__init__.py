"""Report figures (overlays, deformation grids, loss curves) and the markdown report."""

from RRLMedSAMLib.report.figures import (
    OverlayRow,
    plot_atlas_scan_segmentation,
    plot_deformation_grid,
    plot_loss_curves,
    plot_overlay_rows,
)
from RRLMedSAMLib.report.report import write_report

__all__ = [
    "OverlayRow",
    "plot_atlas_scan_segmentation",
    "plot_deformation_grid",
    "plot_loss_curves",
    "plot_overlay_rows",
    "write_report",
]
