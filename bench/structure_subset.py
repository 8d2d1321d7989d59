"""Mean Dice of a benchmark run over a chosen subset of structures (e.g. the standard 30 aseg labels).

    python bench/structure_subset.py --results RUN_DIR --labels ../shared/data/brain_t1/vxm_labels.npz
                                     [--reference registration-only] [--out RUN_DIR/subset.md]

Reads ``per_structure.csv`` of a ``rrlmedsam bench`` run (one row per method, scan and structure
present in both atlas and scan). Per method and scan, the mean Dice over the structures of the
subset that the scan has; then the mean and standard deviation over scans, and the paired mean
difference against ``--reference``. ``--labels`` is an ``.npz`` with a ``labels`` array, or ids
separated by commas. Writes a markdown table (and prints it).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_ids(spec: str) -> set[int]:
    """Label ids from an ``.npz`` file (key ``labels``) or a comma-separated list."""
    if spec.endswith(".npz"):
        with np.load(spec) as data:
            return {int(v) for v in data["labels"]}
    return {int(v) for v in spec.split(",") if v.strip()}


def per_scan_means(per_structure: Path, ids: set[int]) -> dict[str, dict[str, float]]:
    """``{method: {scan: mean Dice over the subset}}`` from a bench ``per_structure.csv``."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(per_structure, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["dice"] and int(row["label"]) in ids:
                values[row["method"]][row["case"]].append(float(row["dice"]))
    return {m: {c: float(np.mean(v)) for c, v in cases.items()} for m, cases in values.items()}


def subset_table(means: dict[str, dict[str, float]], reference: str, structures: int) -> str:
    """Markdown table: method, scans, mean ± sd Dice, paired difference against ``reference``."""
    lines = [f"Mean Dice over the structures of a list of {structures} ids that atlas and scan both have.", "",
             f"| method | scans | Dice (mean ± sd) | ΔDice vs {reference} |", "| --- | ---: | ---: | ---: |"]
    base = means.get(reference, {})
    for method, scans in means.items():
        dice = np.array(list(scans.values()))
        common = sorted(set(scans) & set(base))
        delta = f"{np.mean([scans[c] - base[c] for c in common]):+.3f}" if common and method != reference else "–"
        lines.append(f"| {method} | {len(dice)} | {dice.mean():.3f} ± {dice.std():.3f} | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="a bench results folder (with per_structure.csv)")
    parser.add_argument("--labels", required=True, help=".npz with a 'labels' array, or ids separated by commas")
    parser.add_argument("--reference", default="registration-only", help="method the differences are taken against")
    parser.add_argument("--out", type=Path, help="markdown file (default: RESULTS/subset.md)")
    args = parser.parse_args(argv)
    source = args.results / "per_structure.csv"
    if not source.is_file():
        print(f"error: {source} not found; pass a folder written by 'rrlmedsam bench'.", file=sys.stderr)
        return 2
    ids = read_ids(args.labels)
    table = subset_table(per_scan_means(source, ids), args.reference, len(ids))
    out = args.out or args.results / "subset.md"
    out.write_text(table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
