"""``rrlmedsam segment``: apply a trained run to scans."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.label_smoothing import DEFAULT_LABEL_SMOOTHING, LabelSmoothing, parse_label_smoothing
from RRLMedSAMLib.inference.segmenter import TrainedModel, load_trained_model, segment_scan
from RRLMedSAMLib.io.volumes import ensure_writable_folder, read_scan, volume_stem
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.training.device import DEVICE_CHOICES, resolve_device
from RRLMedSAMLib.training.prepare import check_scan_paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="run folder written by 'rrlmedsam train'")
    parser.add_argument("--image", required=True, nargs="+", type=Path, help="scans to segment")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scan)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument(
        "--refinement-steps", type=int, metavar="N",
        help="iterations of the fine-grid registration refinement (default: the run's preset; 0 = off, faster)",
    )
    parser.add_argument(
        "--registration-ensemble", type=int, default=1, metavar="N",
        help="register each scan N times from slightly moved starts and take the majority vote of the warped "
             "atlas labels (default 1 = off; N times the registration time; 9 helped prostate T2, see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--volume-calibration", choices=("on", "off"), default="on",
        help="extrapolate each structure's size change from the atlas by the run's measured under-recovery "
             "(default on; applies to runs that have volume_calibration.json, see docs/method.md)",
    )
    parser.add_argument(
        "--label-smoothing-mm", default=str(DEFAULT_LABEL_SMOOTHING), metavar="SIGMA|auto",
        help="smooth each structure of the final segmentation, keeping its volume: 'auto' (default) until it is "
             "no rougher than in the atlas label, a number SIGMA with a Gaussian of SIGMA mm, 0 = off "
             "(see docs/benchmarks.md)",
    )


def _label_smoothing(text: str) -> LabelSmoothing:
    """``--label-smoothing-mm`` parsed, or one clear :class:`InputError`."""
    try:
        return parse_label_smoothing(text)
    except ValueError as error:
        raise InputError(f"--label-smoothing-mm {error}.") from None


def run(args: argparse.Namespace) -> int:
    """Validate every scan first (a bad one stops the run before anything is written), then segment.

    Scans are read again one at a time while segmenting, so memory holds one scan, not all of them.
    """
    check_scan_paths(args.image)
    device = resolve_device(args.device)
    if args.refinement_steps is not None and args.refinement_steps < 0:
        raise InputError(f"--refinement-steps must be 0 or more, not {args.refinement_steps}.")
    if args.registration_ensemble < 1:
        raise InputError(f"--registration-ensemble must be 1 or more, not {args.registration_ensemble}.")
    model = load_trained_model(
        args.model, device, args.refinement_steps, _label_smoothing(args.label_smoothing_mm), args.registration_ensemble,
        volume_calibration=args.volume_calibration == "on",
    )
    if model.registration_ensemble > model.ensemble_members:
        print(f"Note: --registration-ensemble has no effect on this run (method {model.method.name}, atlas prior "
              f"{'on' if model.preset.atlas_prior else 'off'}); each scan is registered once.", file=sys.stderr)
    for path in args.image:
        read_scan(path, "Image")
    ensure_writable_folder(args.out)
    progress = ProgressReporter()
    for path, folder in zip(args.image, segment_scans(model, args.image, args.out, progress)):
        print(f"{volume_stem(path)}: {folder}")
    progress.done()
    return 0


def segment_scans(model: TrainedModel, images: list[Path], out: Path, progress: ProgressReporter) -> list[Path]:
    """Segment ``images`` one after another as the ``segment`` stage of ``progress``; returns their result folders.

    With a registration ensemble the stage counts registrations (members per scan), not scans.
    """
    members = model.ensemble_members
    progress.start_stage("segment", len(images) * members, f"segmenting {len(images)} scan(s)"
                         + (f", {members} registrations each" if members > 1 else ""))
    folders = []
    for index, path in enumerate(images):
        folders.append(segment_scan(model, path, out, _registration_progress(progress, index, members, volume_stem(path))))
        progress.update((index + 1) * members, message=f"{volume_stem(path)} -> {folders[-1]}")
    progress.end_stage()
    return folders


def _registration_progress(progress: ProgressReporter, index: int, members: int, name: str) -> Callable[[int], None]:
    """Progress within scan ``index`` of an ensemble: one step per registration, the last one when it is written."""
    def registered(done: int) -> None:
        if done < members:
            progress.update(index * members + done, message=f"{name}: registration {done} of {members}")
    return registered
