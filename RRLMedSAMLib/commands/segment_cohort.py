"""``rrlmedsam segment`` on a cohort: ``--image-list``, ``--shard K/N`` or several ``torchrun`` processes.

Each process segments its shard of the list into the shared ``OUT``; complete results already
there are skipped and incomplete ones redone, so a killed cohort continues where it stopped. A
scan that fails is recorded as failed and the cohort goes on. Each process keeps
``OUT/cohort/shard-K-of-N.json``; ``OUT/cohort/cohort.csv`` is assembled by rank 0 of ``torchrun``
(after waiting for the other ranks), by the last ``--shard`` process to finish, or by
``rrlmedsam summarize OUT``. The decisions live in :mod:`RRLMedSAMLib.inference.cohort` and
:mod:`RRLMedSAMLib.inference.cohort_run`.

Exit codes: 0 when every scan of the shard (under torchrun, rank 0: of the whole cohort) is
segmented or skipped; 3 when some failed (or rank 0 could not assemble ``cohort.csv``); 2 for bad
input (nothing written). Under torchrun the other ranks exit 0 after recording their failures,
so that torchrun does not stop rank 0 before it has assembled the summary.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from RRLMedSAMLib.commands.summarize import EXIT_SCANS_FAILED
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.cohort import FAILED, SEGMENTED, SKIPPED, Shard, choose_shard, cohort_id, read_image_list
from RRLMedSAMLib.inference.cohort_run import ShardOutcome, check_cohort_out, finish_cohort, run_shard
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segment_steps import STEPS, run_steps, segment_scan
from RRLMedSAMLib.inference.segmenter import ScanWork, Segmenter, prepare_segmenter
from RRLMedSAMLib.inference.trained_model import load_trained_model
from RRLMedSAMLib.io.volumes import check_registrable, read_scan, volume_stem
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.device import resolve_device

#: Overlap reading and pre-aligning the next scan with the current one's network work (see docs/benchmarks.md).
DEFAULT_OVERLAP = "off"


def add_cohort_arguments(parser: argparse.ArgumentParser) -> None:
    """``--shard`` and ``--overlap-reading`` (``--image-list`` sits beside ``--images`` in segment's parser)."""
    group = parser.add_argument_group("cohorts (see docs/command_line.md, 'Cohorts')")
    group.add_argument("--shard", metavar="K/N",
                       help="segment only shard K of N of the scans (scan i, counted from 0, goes to shard i mod N + 1), "
                            "e.g. a scheduler's job array; under torchrun the shard is the rank's")
    group.add_argument("--overlap-reading", choices=("on", "off"), default=DEFAULT_OVERLAP,
                       help="read and pre-align the next scan in a thread while the current one is segmented "
                            f"(default {DEFAULT_OVERLAP}: it did not help on the measured CPU)")


def is_cohort(args: argparse.Namespace, env: dict[str, str] | None = None) -> bool:
    """Whether ``segment`` runs as a cohort: a list file, a shard, or several torchrun processes."""
    env = os.environ if env is None else env
    world = env.get("WORLD_SIZE", "").strip()
    return args.image_list is not None or args.shard is not None or world not in ("", "1")


def _cohort_scans(args: argparse.Namespace) -> list[Path]:
    """The whole cohort, in list order: the list file's scans or ``--images`` (same checks)."""
    if args.image_list is not None:
        return read_image_list(args.image_list)
    scans = [Path(p) for p in args.images]
    missing = [p for p in scans if not p.is_file()]
    if missing:
        raise InputError(f"{missing[0]} is not a file; fix --images before segmenting.")
    names = [volume_stem(p) for p in scans]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise InputError(f"Several scans share the name {duplicate!r}; give every scan a distinct file name.")
    return scans


def _device(name: str, torchrun: bool) -> torch.device:
    """``--device``; under torchrun on CUDA each node's ranks spread over its GPUs (``LOCAL_RANK``)."""
    device = resolve_device(name)
    if torchrun and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(1, torch.cuda.device_count()))
    return device


#: ``(result_stats(folder), remove_stale(folder, stats_before))``: what ``segment`` uses to drop result files an
#: earlier segmentation of the scan left and this one did not rewrite.
StaleResults = tuple[Callable[[Path], Any], Callable[[Path, Any], None]]


def _scan_steps(segmenter: Segmenter, out: Path, stale: StaleResults | None = None):
    """``prepare(scan)`` (read, check, pre-align: may run in a thread) and ``segment_one(scan, work)`` (the rest)."""

    def prepare(scan: Path) -> ScanWork:
        tick = time.perf_counter()
        work = ScanWork(scan, read_scan(scan, "Image"))
        check_registrable(work.scan, scan, "Image", segmenter.model.grid.spacing_mm)
        work.timings["reading_s"] = time.perf_counter() - tick
        run_steps(segmenter, work, STEPS[:1])
        return work

    def segment_one(scan: Path, work: ScanWork | None) -> Path:
        work = prepare(scan) if work is None else work
        before = stale[0](out / volume_stem(scan)) if stale else None
        folder = segment_scan(segmenter, scan, out, prealigned=work)
        if stale:
            stale[1](folder, before)
        return folder

    return prepare, segment_one


def _report(row: dict) -> None:
    detail = f" ({row['message']})" if row["status"] == FAILED else ""
    print(f"{row['scan']}: {row['status']} in {row['seconds']:.1f} s{detail}", flush=True)


def run_cohort(args: argparse.Namespace, options_of: Callable[[argparse.Namespace], SegmentOptions],
               check_model_state: Callable[[Path], None], stale: StaleResults | None = None) -> int:
    """Validate (bad list, shard, model or ``--out``: one message, exit 2, nothing written), then segment the shard.

    ``segment`` passes its own option parsing, run-state check and stale-result clean-up (no import cycle).
    """
    shard, torchrun = choose_shard(args.shard)
    if args.overwrite:
        raise InputError("--overwrite does not apply to a cohort (--image-list, --shard or torchrun): complete results "
                         "are skipped and incomplete ones redone; delete a scan's folder to have it segmented again.")
    scans = _cohort_scans(args)
    device = _device(args.device, torchrun)
    options = options_of(args)
    check_model_state(args.model)
    out_abs, model_abs = args.out.resolve(), args.model.resolve()
    if out_abs == model_abs or model_abs in out_abs.parents:
        raise InputError(f"--out {args.out} is inside the model folder {args.model}; choose a folder outside it.")
    check_cohort_out(args.out)
    segmenter = prepare_segmenter(load_trained_model(args.model, device), options)
    progress = ProgressReporter()
    prepare, segment_one = _scan_steps(segmenter, args.out, stale)
    cohort = cohort_id(scans, args.model)
    outcome = run_shard(scans, shard, cohort, args.out, args.model, segment_one,
                        prepare if args.overlap_reading == "on" else None, progress, _report)
    finish_cohort(args.out, outcome, cohort, torchrun)
    progress.done()
    return _conclude(outcome, shard, torchrun)


def _conclude(outcome: ShardOutcome, shard: Shard, torchrun: bool) -> int:
    """Print the shard's (and, where assembled, the cohort's) counts; the exit code."""
    print(f"shard {shard}: {outcome.count(SEGMENTED)} segmented, {outcome.count(SKIPPED)} skipped, "
          f"{outcome.count(FAILED)} failed")
    failed = outcome.count(FAILED)
    if outcome.cohort_csv is not None:
        import csv

        with outcome.cohort_csv.open(encoding="utf-8") as handle:
            statuses = [row["status"] for row in csv.DictReader(handle)]
        failed = statuses.count(FAILED) if torchrun else failed
        print(f"cohort summary: {outcome.cohort_csv} ({statuses.count(SEGMENTED)} segmented, "
              f"{statuses.count(SKIPPED)} skipped, {statuses.count(FAILED)} failed)")
    elif outcome.note:
        print(f"cohort summary: {outcome.note}", file=sys.stderr if torchrun and shard.index == 1 else sys.stdout)
    if torchrun and shard.index != 1:
        return 0
    if torchrun and outcome.cohort_csv is None:
        return EXIT_SCANS_FAILED
    return EXIT_SCANS_FAILED if failed else 0
