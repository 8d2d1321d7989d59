"""Split a method's Dice difference to registration-only into its registration's part and its correction's part.

    python bench/rrl_decomposition.py --method-pred RUN/methods/rrl/pred \
        --baseline-pred RUN/methods/plain/pred --truth DATASET/labels \
        --atlas-label DATASET/labels/ATLAS.nii.gz [--out F.csv]

Registration-only is the baseline run's ``warped_atlas_label.nii.gz``. A method with its own
registration network (RRL's medical encoder + registration decoder) differs from it in two ways:
its own registration (its ``warped_atlas_label.nii.gz``) and the correction its segmentation
network makes to that (its ``segmentation.nii.gz``). Per scan, with mean Dice over the structures
present in both the truth and the atlas::

    method - registration-only = (own registration - registration-only) + (segmentation - own registration)

Writes a CSV (one row per scan, with ``voxels_differing_from_registration`` from the method's
``qc.json``) and prints the means and the structures that move each part most.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.metrics.overlap import dice_per_label, labels_in

PARTS = ("registration_part", "correction_part")


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def scan_rows(method: Path, baseline: Path, truth: Path, atlas_ids: set[int]) -> tuple[list[dict], dict[str, dict[int, list[float]]]]:
    """Per-scan rows and, per part, each structure's Dice differences over the scans."""
    rows: list[dict] = []
    by_label: dict[str, dict[int, list[float]]] = {part: defaultdict(list) for part in PARTS}
    for folder in sorted(p for p in method.iterdir() if (p / "segmentation.nii.gz").is_file()):
        truth_path, base_folder = truth / f"{folder.name}.nii.gz", baseline / folder.name
        if not truth_path.is_file() or not (base_folder / "warped_atlas_label.nii.gz").is_file():
            continue
        true_array = _array(truth_path)
        labels = [label for label in labels_in(true_array) if label in atlas_ids]
        scores = {
            name: dice_per_label(_array(path), true_array, labels)
            for name, path in (("registration_only", base_folder / "warped_atlas_label.nii.gz"),
                               ("own_registration", folder / "warped_atlas_label.nii.gz"),
                               ("method", folder / "segmentation.nii.gz"))
        }
        for label in labels:
            by_label["registration_part"][label].append(scores["own_registration"][label] - scores["registration_only"][label])
            by_label["correction_part"][label].append(scores["method"][label] - scores["own_registration"][label])
        means = {name: float(np.mean(list(values.values()))) for name, values in scores.items()}
        qc_path = folder / "qc.json"
        changed = json.loads(qc_path.read_text()).get("voxels_differing_from_registration") if qc_path.is_file() else None
        rows.append({
            "case": folder.name, **means,
            "registration_part": means["own_registration"] - means["registration_only"],
            "correction_part": means["method"] - means["own_registration"],
            "voxels_differing_from_registration": changed,
        })
    return rows, by_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method-pred", required=True, type=Path, help="per-scan segment results of the method (e.g. rrl)")
    parser.add_argument("--baseline-pred", required=True, type=Path, help="per-scan results whose warped atlas label is registration-only")
    parser.add_argument("--truth", required=True, type=Path, help="folder of true labels <name>.nii.gz")
    parser.add_argument("--atlas-label", required=True, type=Path, help="the atlas's label file (which structures count)")
    parser.add_argument("--out", type=Path, help="CSV to write (default: METHOD_PRED/../decomposition.csv)")
    args = parser.parse_args(argv)
    rows, by_label = scan_rows(args.method_pred, args.baseline_pred, args.truth, set(labels_in(_array(args.atlas_label))))
    if not rows:
        parser.error(f"no scan has a result in both {args.method_pred} and {args.baseline_pred} and a label in {args.truth}")
    out = args.out or args.method_pred.parent / "decomposition.csv"
    with atomic_path(out) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    print(f"{len(rows)} scans; mean Dice: registration-only {np.mean([r['registration_only'] for r in rows]):.5f}, "
          f"own registration {np.mean([r['own_registration'] for r in rows]):.5f}, method {np.mean([r['method'] for r in rows]):.5f}")
    for part in PARTS:
        values = np.array([row[part] for row in rows])
        totals = sorted(by_label[part].items(), key=lambda item: sum(item[1]))
        print(f"{part}: mean {values.mean():+.5f} (better on {int((values > 5e-4).sum())}, worse on {int((values < -5e-4).sum())}; "
              f"range {values.min():+.4f} to {values.max():+.4f}); structures summed over scans, lowest: "
              + ", ".join(f"{label} {sum(diffs):+.3f}" for label, diffs in totals[:3]))
    changed = [row["voxels_differing_from_registration"] for row in rows if row["voxels_differing_from_registration"] is not None]
    if changed:
        print(f"voxels the correction changed per scan: {min(changed)} to {max(changed)}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
