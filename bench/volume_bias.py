"""How far a one-shot run's structure volumes regress towards the atlas's.

    python bench/volume_bias.py --pred RUN/methods/plain/pred --truth DATASET/labels \
                                --atlas-label DATASET/labels/ATLAS.nii.gz [--label 1] [--out F.csv]

For every scan folder ``PRED/<name>/`` (as ``rrlmedsam segment`` writes them) and its true label
``TRUTH/<name>.nii.gz``: the structure's true and predicted volume (ml), false-positive and
false-negative volume (ml) and Dice, for ``segmentation.nii.gz`` and ``warped_atlas_label.nii.gz``.
Then the slope of ``log(predicted / atlas volume)`` against ``log(true / atlas volume)`` over the
scans: 1 means the volumes follow the scans, 0 means every scan gets the atlas's volume. Writes a
CSV (one row per scan) and prints the summary.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.metrics.overlap import dice_score

RESULTS = ("segmentation", "warped_atlas_label")


def _mask(path: Path, label: int) -> tuple[np.ndarray, float]:
    """Boolean mask of ``label`` and the voxel volume in ml."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayViewFromImage(image) == label, float(np.prod(image.GetSpacing())) / 1000.0


def scan_rows(pred: Path, truth: Path, label: int) -> list[dict]:
    """One row per scan folder of ``pred`` that has a true label in ``truth``."""
    rows = []
    for folder in sorted(p for p in pred.iterdir() if (p / "segmentation.nii.gz").is_file()):
        truth_path = truth / f"{folder.name}.nii.gz"
        if not truth_path.is_file():
            continue
        true_mask, voxel_ml = _mask(truth_path, label)
        true_voxels = int(true_mask.sum())
        row: dict = {"case": folder.name, "true_ml": true_voxels * voxel_ml}
        for result in RESULTS:
            mask, _ = _mask(folder / f"{result}.nii.gz", label)
            voxels, overlap = int(mask.sum()), int(np.logical_and(mask, true_mask).sum())
            row[f"{result}_ml"] = voxels * voxel_ml
            row[f"{result}_false_positive_ml"] = (voxels - overlap) * voxel_ml
            row[f"{result}_false_negative_ml"] = (true_voxels - overlap) * voxel_ml
            row[f"{result}_dice"] = dice_score(mask, true_mask)
        rows.append(row)
    return rows


def volume_slope(true_ml: np.ndarray, predicted_ml: np.ndarray, atlas_ml: float) -> float:
    """Least-squares slope of ``log(predicted / atlas)`` on ``log(true / atlas)``."""
    return float(np.polyfit(np.log(true_ml / atlas_ml), np.log(predicted_ml / atlas_ml), 1)[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder of per-scan segment results")
    parser.add_argument("--truth", required=True, type=Path, help="folder of true labels <name>.nii.gz")
    parser.add_argument("--atlas-label", required=True, type=Path, help="the atlas's label file")
    parser.add_argument("--label", type=int, default=1, help="label id of the structure (default 1)")
    parser.add_argument("--out", type=Path, help="CSV to write (default: PRED/../volume_bias.csv)")
    args = parser.parse_args(argv)
    rows = scan_rows(args.pred, args.truth, args.label)
    if len(rows) < 2:
        parser.error(f"need at least 2 scans with true labels, found {len(rows)} in {args.pred}")
    atlas_mask, voxel_ml = _mask(args.atlas_label, args.label)
    atlas_ml = atlas_mask.sum() * voxel_ml
    out = args.out or args.pred.parent / "volume_bias.csv"
    with atomic_path(out) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    true_ml = np.array([row["true_ml"] for row in rows])
    smaller = true_ml < atlas_ml
    print(f"{len(rows)} scans; atlas {atlas_ml:.2f} ml; true {true_ml.min():.2f} to {true_ml.max():.2f} ml")
    for result in RESULTS:
        predicted = np.array([row[f"{result}_ml"] for row in rows])
        print(f"{result}: {predicted.min():.2f} to {predicted.max():.2f} ml; log-volume slope "
              f"{volume_slope(true_ml, predicted, atlas_ml):.2f}; predicted/true {np.mean(predicted[smaller] / true_ml[smaller]):.2f} "
              f"on the {smaller.sum()} scans smaller than the atlas, {np.mean(predicted[~smaller] / true_ml[~smaller]):.2f} on the others")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
