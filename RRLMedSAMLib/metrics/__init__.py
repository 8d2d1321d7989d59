"""Segmentation and deformation metrics (Dice, HD95, Jacobian determinant, folding) and evaluation."""

from RRLMedSAMLib.metrics.deformation import folding_fraction, jacobian_determinant, physical_to_array_displacement
from RRLMedSAMLib.metrics.evaluation import CaseMetrics, evaluate_case, evaluate_pairs, find_pairs, summarize, write_metrics
from RRLMedSAMLib.metrics.overlap import dice_per_label, dice_score, hd95_mask, hd95_per_label

__all__ = [
    "CaseMetrics",
    "dice_per_label",
    "dice_score",
    "evaluate_case",
    "evaluate_pairs",
    "find_pairs",
    "folding_fraction",
    "hd95_mask",
    "hd95_per_label",
    "jacobian_determinant",
    "physical_to_array_displacement",
    "summarize",
    "write_metrics",
]
