"""Label smoothing settings applied to saved segmentations: mean Dice on selection and held-out scans.

    python bench/label_smoothing_sweep.py --pred RUN/methods/plain/pred --truth DATASET/labels \
        --atlas-label DATASET/labels/ATLAS.nii.gz --settings 0 0.75 2 auto \
        [--selection case000001 case000002] [--out DIR]

For every scan folder ``PRED/<name>/`` written by ``rrlmedsam segment`` without smoothing, each
setting (a sigma in mm, or ``auto``) is applied to ``segmentation.nii.gz`` with the engine's own
:func:`~RRLMedSAMLib.inference.label_smoothing.apply_label_smoothing`, which is what
``segment --label-smoothing-mm`` does to the same segmentation. Dice is the mean over the
structures present in the true label and the atlas. Writes ``per_scan.csv`` and ``summary.md``:
the mean over all scans, over the ``--selection`` scans (those a setting was chosen on) and over
the others, the scans each setting makes better and worse than no smoothing (by more than
:data:`TIE`), and for ``auto`` the median sigma it chose.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.inference.label_smoothing import (
    AUTO,
    LabelSmoothing,
    apply_label_smoothing,
    atlas_roughness,
    parse_label_smoothing,
)
from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.metrics.overlap import dice_per_label, labels_in

#: Dice differences from no smoothing smaller than this count as ties.
TIE = 5e-4


def sweep(pred: Path, truth: Path, atlas_label: Path, settings: list[LabelSmoothing]) -> tuple[list[dict], dict]:
    """One row per (scan, setting) with its Dice, and per setting the sigmas chosen for every structure of every scan."""
    atlas = sitk.ReadImage(str(atlas_label))
    roughness = atlas_roughness(atlas)
    rows, chosen = [], {setting: [] for setting in settings}
    for folder in sorted(p for p in pred.iterdir() if (p / "segmentation.nii.gz").is_file()):
        truth_path = truth / f"{folder.name}.nii.gz"
        if not truth_path.is_file():
            continue
        segmentation = sitk.ReadImage(str(folder / "segmentation.nii.gz"))
        true = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_path)))
        labels = [label for label in labels_in(true) if label in roughness]
        for setting in settings:
            smoothed, sigmas = apply_label_smoothing(segmentation, setting, roughness)
            dice = dice_per_label(sitk.GetArrayViewFromImage(smoothed), true, labels)
            rows.append({"case": folder.name, "setting": str(setting), "dice": float(np.mean(list(dice.values())))})
            chosen[setting] += list(sigmas.values())
    return rows, chosen


def _mean(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" if values else "–"


def summary(rows: list[dict], chosen: dict, settings: list[LabelSmoothing], selection: set[str]) -> str:
    """A markdown table: one line per setting."""
    by_setting = {str(s): {row["case"]: row["dice"] for row in rows if row["setting"] == str(s)} for s in settings}
    baseline = by_setting[str(0.0)]
    lines = [f"| setting | all scans | selection | held out | better / worse than off (by > {TIE}) | median sigma (mm) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for setting in settings:
        scores = by_setting[str(setting)]
        picked = [v for case, v in scores.items() if case in selection]
        held = [v for case, v in scores.items() if case not in selection]
        better = sum(scores[c] > baseline[c] + TIE for c in scores)
        worse = sum(scores[c] < baseline[c] - TIE for c in scores)
        sigma = f"{np.median(chosen[setting]):.2f}" if setting == AUTO and chosen[setting] else f"{setting}"
        lines.append(f"| {setting} | {_mean(list(scores.values()))} | {_mean(picked)} | {_mean(held)} | {better} / {worse} | {sigma} |")
    return "\n".join(lines) + "\n"


def _setting(text: str) -> LabelSmoothing:
    """One ``--settings`` value; argparse reports a bad one with the engine's own message."""
    try:
        return parse_label_smoothing(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of per-scan segment results (unsmoothed)")
    parser.add_argument("--truth", required=True, type=Path, help="folder of true labels <name>.nii.gz")
    parser.add_argument("--atlas-label", required=True, type=Path, help="the atlas's label file")
    parser.add_argument("--settings", nargs="+", type=_setting, default=[0.0, AUTO], help="sigmas in mm, or auto")
    parser.add_argument("--selection", nargs="*", default=[], help="scans the settings were chosen on")
    parser.add_argument("--out", type=Path, help="folder for per_scan.csv and summary.md (default: PRED/../smoothing)")
    args = parser.parse_args(argv)
    if not args.pred.is_dir() or not args.atlas_label.is_file():
        parser.error(f"--pred must be a folder and --atlas-label a file: {args.pred}, {args.atlas_label}")
    settings = [0.0, *(s for s in args.settings if s != 0.0)]  # no smoothing is always the baseline
    rows, chosen = sweep(args.pred, args.truth, args.atlas_label, settings)
    if not rows:
        parser.error(f"no scan folder of {args.pred} has a true label in {args.truth}")
    out = args.out or args.pred.parent / "smoothing"
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_scan.csv") as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "setting", "dice"])
        writer.writeheader()
        writer.writerows({**row, "dice": round(row["dice"], 5)} for row in rows)
    table = summary(rows, chosen, settings, set(args.selection))
    with atomic_path(out / "summary.md") as temp:
        temp.write_text(table)
    print(table, end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
