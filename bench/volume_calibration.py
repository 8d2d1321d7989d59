"""A trained run's segmentations with and without its volume calibration, scored side by side.

    python bench/volume_calibration.py --model RUN_DIR --images DATASET/images/case0000{01..17}.nii.gz \
        --truth DATASET/labels --out DIR [--selection case000001 case000002] [--device cpu]

Runs ``rrlmedsam segment`` twice through the real command line, with every default and with
``--volume-calibration off``, then ``rrlmedsam evaluate`` on each. Writes ``per_scan.csv`` (the
mean Dice of each scan both ways) and ``summary.md``: the means over all scans, over the
``--selection`` scans and over the others, the scans the calibration made better and worse (by
more than :data:`TIE`), and the recovery the run measured. The run must have been trained with
this engine's ``train``, which measures the calibration (``volume_calibration.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from RRLMedSAMLib.bench.tables import to_csv
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.registration.volume_calibration import read_volume_calibration

#: Dice differences smaller than this count as ties.
TIE = 5e-4
MODES = {"calibrated": [], "uncalibrated": ["--volume-calibration", "off"]}


def _engine(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "RRLMedSAMLib", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"rrlmedsam {args[0]} failed:\n{result.stderr[-2000:]}")


def segment_and_score(model: Path, images: list[Path], truth: Path, out: Path, device: str) -> dict[str, dict[str, float]]:
    """Per mode, each scan's mean Dice over its labels."""
    scores = {}
    for mode, extra in MODES.items():
        _engine("segment", "--model", str(model), "--image", *map(str, images), "--out", str(out / mode),
                "--device", device, *extra)
        _engine("evaluate", "--pred", str(out / mode), "--truth", str(truth), "--out", str(out / f"{mode}_metrics"))
        metrics = json.loads((out / f"{mode}_metrics" / "metrics.json").read_text())
        scores[mode] = {case["name"]: float(case["mean_dice"]) for case in metrics["cases"]}
    return scores


def summary(scores: dict[str, dict[str, float]], selection: set[str], recovery: dict[int, float]) -> str:
    """A markdown table: one line per mode, then the paired comparison."""
    cases = sorted(scores["uncalibrated"])
    held = [c for c in cases if c not in selection]
    lines = ["| segment | all scans | selection | held out |", "| --- | ---: | ---: | ---: |"]
    for mode in ("uncalibrated", "calibrated"):
        values = scores[mode]
        part = lambda names, values=values: f"{np.mean([values[c] for c in names]):.4f}" if names else "–"  # noqa: E731
        lines.append(f"| {mode} | {part(cases)} | {part(sorted(selection & set(cases)))} | {part(held)} |")
    change = [scores["calibrated"][c] - scores["uncalibrated"][c] for c in cases]
    lines += ["", f"Paired: {np.mean(change):+.4f}; better on {sum(d > TIE for d in change)}, worse on "
              f"{sum(d < -TIE for d in change)} of {len(cases)} scans. Recovery: "
              + ", ".join(f"label {k} {v:.3f}" for k, v in sorted(recovery.items()))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="run folder written by 'rrlmedsam train'")
    parser.add_argument("--images", required=True, nargs="+", type=Path, help="scans to segment")
    parser.add_argument("--truth", required=True, type=Path, help="folder of true labels <name>.nii.gz")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--selection", nargs="*", default=[], help="scans any setting was chosen on")
    parser.add_argument("--device", default="cpu", help="compute device (default: cpu)")
    args = parser.parse_args(argv)
    calibration = read_volume_calibration(args.model)
    if calibration is None:
        parser.error(f"{args.model} has no volume_calibration.json: train it with this engine (and up to 4 structures)")
    scores = segment_and_score(args.model, args.images, args.truth, args.out, args.device)
    rows = [{"case": c, "uncalibrated": round(scores["uncalibrated"][c], 5), "calibrated": round(scores["calibrated"][c], 5)}
            for c in sorted(scores["uncalibrated"])]
    write_text_atomic(args.out / "per_scan.csv", to_csv(rows))
    table = summary(scores, set(args.selection), calibration.recovery)
    write_text_atomic(args.out / "summary.md", table)
    print(table, end="")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
