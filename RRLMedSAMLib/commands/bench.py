"""``rrlmedsam bench``: run methods side by side on a dataset folder and compare accuracy, speed and memory.

The dataset folder has the standard layout (``images/``, ``labels/``, ``labels.csv``). One case is
the atlas; every other case (or the first ``--max-scans``) is an unlabelled training scan and a
test scan. Each method's training and segmentation run in their own child process, so peak memory
is measured per method and phase. Methods: ``affine`` (affine pre-alignment only), ``ants-syn``
(single-atlas ANTs SyN label propagation; needs antspyx), ``registration-only`` (the engine's
warped atlas label of the ``plain`` run), and the engine methods ``plain``, ``rrl``, its ablations
and the AutoSAM heads. Ratios are computed against ``ants-syn`` in the same run.

``OUT`` receives ``summary.md``, ``results.json``, ``methods.csv``, ``per_scan.csv``,
``per_structure.csv``, ``dice_boxplot.png``, ``dice_vs_time.png`` and ``methods/<name>/``
(run folders, predictions, logs). Re-running with the same settings reuses finished methods.

``--quick`` is a smoke run for CI: the ``tiny`` preset, two scans, short ANTs schedules; seconds to
a minute on tiny volumes. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from RRLMedSAMLib.bench.classical import QUICK_ANTS, AntsSettings
from RRLMedSAMLib.bench.machine import describe_machine
from RRLMedSAMLib.bench.methods import METHODS, default_methods
from RRLMedSAMLib.bench.results import write_results
from RRLMedSAMLib.bench.runner import BenchSettings, run_benchmark
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.run.device import DEVICE_CHOICES, resolve_device
from RRLMedSAMLib.run.presets import PRESETS
from RRLMedSAMLib.run.set_options import parse_set_options

#: Methods of a --quick run when --methods is not given (each engine method needs its own training).
QUICK_METHODS = ("affine", "ants-syn", "registration-only", "plain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder: images/, labels/, labels.csv")
    parser.add_argument("--atlas", required=True, help="name (file stem) of the case used as the atlas")
    parser.add_argument("--out", required=True, type=Path, help="results folder (created; finished methods reused)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help=f"methods to run (default: every one that can run here); choices: {', '.join(METHODS)}")
    parser.add_argument("--preset", choices=list(PRESETS), help="engine training preset (default: fast; tiny with --quick)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="engine device (default: auto)")
    parser.add_argument("--max-scans", type=int, help="use only the first N non-atlas cases (default: all; 2 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every method (default: 0)")
    parser.add_argument("--threads", type=int, help="CPU threads per method (torch, ITK/ANTs); default: all cores")
    parser.add_argument("--teacher", help="SAM teacher for the SAM-guided methods (engine --teacher; default: engine's)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting of the engine methods, as for 'train --set' (e.g. joint_steps=50); "
                             "repeatable")
    parser.add_argument("--ants-iterations", help="ANTs SyN iterations per level, coarse to fine (default 40,20,0)")
    parser.add_argument("--keep-fields", action="store_true", help="keep every deformation field (large for big scans)")
    parser.add_argument("--no-share-stages", dest="share_stages", action="store_false",
                        help="train every engine method from scratch instead of copying the identical stages an "
                             "earlier method of the run already computed (RRLMedSAMLib/bench/stage_sharing.py)")
    parser.add_argument("--title", help="title of summary.md and the figures")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (CI): tiny preset, 2 scans, short ANTs")


def _ants_settings(args: argparse.Namespace) -> AntsSettings:
    settings = QUICK_ANTS if args.quick else AntsSettings()
    if args.ants_iterations:
        try:
            levels = tuple(int(v) for v in args.ants_iterations.split(","))
        except ValueError:
            raise InputError(f"--ants-iterations takes comma-separated integers such as 40,20,0 (got {args.ants_iterations!r}).") from None
        if not levels or min(levels) < 0:
            raise InputError(f"--ants-iterations must be non-negative integers (got {args.ants_iterations!r}).")
        settings = AntsSettings(settings.type_of_transform, levels, settings.aff_iterations)
    return settings


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """Resolve the command line into :class:`BenchSettings` (quick-mode defaults applied)."""
    if not args.dataset.is_dir():
        raise InputError(f"Dataset folder not found: {args.dataset}.")
    methods = args.methods
    if args.quick and not methods:
        methods = [m for m in QUICK_METHODS if m in default_methods()]
    device = str(resolve_device(args.device))
    max_scans = args.max_scans if args.max_scans is not None else (2 if args.quick else None)
    overrides, rrl = parse_set_options(args.settings)
    return BenchSettings(
        dataset=args.dataset, atlas=args.atlas, out=args.out, methods=methods,
        preset=args.preset or ("tiny" if args.quick else "fast"), device=device, seed=args.seed, max_scans=max_scans,
        threads=args.threads, ants=_ants_settings(args), overrides=overrides, teacher=args.teacher,
        rrl=rrl, keep_fields=args.keep_fields,
        share_stages=args.share_stages,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    outcomes = run_benchmark(settings)
    machine = describe_machine(settings.device)
    write_results(outcomes, settings, machine, settings.out, args.title)
    print((settings.out / "summary.md").read_text())
    failed = [o.spec.name for o in outcomes if o.status != "ok"]
    if failed:
        print(f"rrlmedsam bench: {len(failed)} method(s) failed: {', '.join(failed)} (see {settings.out}/methods/*/*.log)")
        return 1
    return 0
