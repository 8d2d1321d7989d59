"""``rrlmedsam evaluate``: Dice and HD95 of predicted segmentations against ground truth."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.label_table import LabelEntry, read_label_table
from RRLMedSAMLib.io.volumes import ensure_writable_folder
from RRLMedSAMLib.metrics.evaluation import (
    SCORING_RULES,
    _prediction_files,
    evaluate_pairs,
    find_pairs,
    write_metrics,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument(
        "--pred", required=True,
        help="predicted labelmap, or a folder of <name>.nii.gz files or of segment results <name>/segmentation.nii.gz",
    )
    parser.add_argument(
        "--truth", required=True, help="true labelmap, or a folder of <name>.nii.gz (a dataset folder with labels/ works)"
    )
    parser.add_argument(
        "--pred-name", default="segmentation",
        help="in a segment output folder, the result to score in each case folder (default: segmentation; "
        "warped_atlas_label scores registration only, prompt_mask the general branch)",
    )
    parser.add_argument("--out", default=None, help="folder for metrics.json/.csv/.md (default: the prediction's folder)")
    parser.add_argument(
        "--labels", default=None,
        help="labels.csv (id,name,r,g,b): names the labels and restricts scoring to its ids (default: a labels.csv "
        "found beside the truth, names only)",
    )
    parser.epilog = "Scoring rules:\n" + SCORING_RULES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def _find_table(truth: Path) -> Path | None:
    folder = truth if truth.is_dir() else truth.parent
    for candidate in (folder / "labels.csv", folder.parent / "labels.csv"):
        if candidate.is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the three metric files, print a summary; return 0."""
    pred, truth = Path(args.pred), Path(args.truth)
    pairs, unmatched = find_pairs(pred, truth, args.pred_name)
    table: list[LabelEntry] | None = None
    restrict = None
    if args.labels:
        table = read_label_table(args.labels)
        if not table:
            raise InputError(f"Label table {args.labels} lists no labels; add rows id,name,r,g,b.")
        restrict = [e.id for e in table]
    else:
        found = _find_table(truth)
        table = read_label_table(found) if found else None
    no_truth = _predictions_without_truth(pred, args.pred_name, pairs)
    cases = evaluate_pairs(pairs, restrict)
    out = ensure_writable_folder(args.out or (pred if pred.is_dir() else pred.parent), "Metrics folder")
    if unmatched:
        print(
            f"warning: no prediction for {len(unmatched)} truth case(s), not scored: {', '.join(unmatched)}",
            file=sys.stderr,
        )
    if no_truth:
        print(f"warning: no truth for {len(no_truth)} prediction(s), not scored: {', '.join(no_truth)}", file=sys.stderr)
    summary = write_metrics(cases, out, table, extra={"unmatched_truth": unmatched, "unmatched_predictions": no_truth})
    for case in summary["cases"]:
        print(f"{case['name']}: mean Dice {_show(case['mean_dice'], 3)}, mean HD95 {_show(case['mean_hd95_mm'], 2)} mm")
    print(
        f"{len(cases)} case(s), {len(summary['labels'])} label(s): mean Dice {_show(summary['mean_dice'], 3)}, "
        f"mean HD95 {_show(summary['mean_hd95_mm'], 2)} mm. Wrote {out / 'metrics.md'} (+ .json, .csv)."
    )
    return 0


def _predictions_without_truth(pred: Path, pred_name: str, pairs: list) -> list[str]:
    """Names of the predictions in a folder that no truth matched (empty for single files)."""
    if not pred.is_dir():
        return []
    scored = {name for name, _, _ in pairs}
    return sorted(name for name in _prediction_files(pred, pred_name) if name not in scored)


def _show(value: float | None, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
