"""``rrlmedsam summarize OUT``: assemble ``OUT/cohort/cohort.csv`` from the shard summaries of a cohort segmentation.

Each ``segment --image-list`` process keeps ``OUT/cohort/shard-K-of-N.json``; this command merges
those of the latest cohort and sharding into ``cohort.csv`` (scan, status, seconds, folding, missing
labels, QC flags, volume per label in ml, image, message). It refuses, writing nothing, while a
shard has not finished. Exit code 0 when every scan is segmented or skipped, 3 when some failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.cohort import FAILED, SEGMENTED, SKIPPED, assemble_cohort

#: Exit code of a cohort that finished with failed scans (``segment --image-list`` and ``summarize``).
EXIT_SCANS_FAILED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the --out folder of 'rrlmedsam segment --image-list'")


def run(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        raise InputError(f"{args.out} is not a folder; give the --out folder of a cohort segmentation.")
    path, counts = assemble_cohort(args.out)
    print(f"{path}: {counts[SEGMENTED]} segmented, {counts[SKIPPED]} skipped, {counts[FAILED]} failed")
    return EXIT_SCANS_FAILED if counts[FAILED] else 0
