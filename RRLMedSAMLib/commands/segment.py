"""``rrlmedsam segment``: apply a trained run to scans.

Results go to ``OUT/<scan name>/``, written in a temporary folder beside it and renamed into place.
An existing ``OUT/<scan name>/`` is refused unless ``--overwrite`` is given; then only the result
files are replaced (and result files this run does not produce are removed), never anything else.
``OUT`` is locked while segmenting, and may not be, or lie inside, the model folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from RRLMedSAMLib.commands.segment_cohort import add_cohort_arguments, is_cohort, run_cohort
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.label_smoothing import LabelSmoothing, parse_label_smoothing
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segment_steps import segment_scan
from RRLMedSAMLib.inference.segmenter import Segmenter, prepare_segmenter
from RRLMedSAMLib.inference.trained_model import load_trained_model
from RRLMedSAMLib.io.output_folder import ClaimedFolder, claimed_folder
from RRLMedSAMLib.io.volumes import check_registrable, read_scan, volume_stem
from RRLMedSAMLib.progress import ProgressReporter, check_stop
from RRLMedSAMLib.run.device import DEVICE_CHOICES, resolve_device
from RRLMedSAMLib.run.state import FINISHED, read_run_state
from RRLMedSAMLib.training.prepare import check_scan_paths

#: What ``segment`` writes in a scan's folder; ``--overwrite`` replaces these and nothing else.
RESULT_FILES = ("segmentation.nii.gz", "labels.csv", "warped_atlas_label.nii.gz", "warped_atlas_image.nii.gz",
                "deformation.nrrd", "prompt_mask.nii.gz", "qc.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, help="run folder written by 'rrlmedsam train'")
    scans = parser.add_mutually_exclusive_group(required=True)
    scans.add_argument("--images", "--image", dest="images", nargs="+", type=Path, help="scans to segment")
    scans.add_argument("--image-list", type=Path, metavar="FILE",
                       help="text file naming the scans of a cohort, one path per line (# comments; relative to the file)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per scan)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the result files of scans that already have a folder in --out (other files "
                             "there are kept); without it such scans are refused")
    add_option_arguments(parser)
    add_cohort_arguments(parser)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """The :class:`SegmentOptions` flags; their defaults are the class's."""
    defaults = SegmentOptions()
    group = parser.add_argument_group("segmentation options (defaults follow docs/benchmarks.md's add-on table)")
    group.add_argument(
        "--refinement-steps", type=int, metavar="N", default=defaults.refinement_steps,
        help="iterations per level of the MIND-SSC fine registration stage, which then replaces the preset's "
             "fine-grid NCC pass (default: the run's preset, i.e. that pass; 0 = no refinement after the working grid)",
    )
    group.add_argument(
        "--registration-ensemble", type=int, default=defaults.registration_ensemble, metavar="N",
        help=f"register each scan N times from slightly moved starts and take the majority vote of the warped "
             f"atlas labels (default {defaults.registration_ensemble} = off; N times the registration time)",
    )
    group.add_argument(
        "--volume-calibration", choices=("on", "off"), default="on" if defaults.volume_calibration else "off",
        help=f"extrapolate each structure's size change from the atlas by the run's measured under-recovery (default "
             f"{'on' if defaults.volume_calibration else 'off'}; needs a run trained with --volume-calibration on)",
    )
    group.add_argument(
        "--label-smoothing-mm", default=str(defaults.label_smoothing_mm), metavar="SIGMA|auto",
        help=f"smooth each structure of the final segmentation, keeping its volume: 'auto' until it is no rougher "
             f"than in the atlas label, a number SIGMA with a Gaussian of SIGMA mm, 0 = off "
             f"(default: {defaults.label_smoothing_mm})",
    )


def segment_options(args: argparse.Namespace) -> SegmentOptions:
    """The :class:`SegmentOptions` the parsed flags ask for, or one clear :class:`InputError`."""
    if args.refinement_steps is not None and args.refinement_steps < 0:
        raise InputError(f"--refinement-steps must be 0 or more, not {args.refinement_steps}.")
    if args.registration_ensemble < 1:
        raise InputError(f"--registration-ensemble must be 1 or more, not {args.registration_ensemble}.")
    return SegmentOptions(args.refinement_steps, _label_smoothing(args.label_smoothing_mm), args.registration_ensemble,
                          args.volume_calibration == "on")


def _label_smoothing(text: str) -> LabelSmoothing:
    """``--label-smoothing-mm`` parsed, or one clear :class:`InputError`."""
    try:
        return parse_label_smoothing(text)
    except ValueError as error:
        raise InputError(f"--label-smoothing-mm {error}.") from None


def _check_out(out: Path, model: Path, images: list[Path], overwrite: bool) -> None:
    """Refuse an ``--out`` inside the model folder, and existing scan folders without ``--overwrite``."""
    out_abs, model_abs = out.resolve(), model.resolve()
    if out_abs == model_abs or model_abs in out_abs.parents:
        raise InputError(f"--out {out} is inside the model folder {model}; choose a folder outside the run folder.")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a folder.")
    existing = [volume_stem(p) for p in images if (out / volume_stem(p)).exists()]
    if existing and not overwrite:
        raise InputError(f"{out / existing[0]} already exists ({len(existing)} scan(s) already segmented there); pass "
                         "--overwrite to replace their results, or choose another --out.")
    for name in existing:
        if not (out / name).is_dir():
            raise InputError(f"{out / name} exists and is not a folder; move it away or choose another --out.")


def _check_model_state(model: Path) -> None:
    """Refuse a run folder whose training is still in progress, was interrupted or failed."""
    state = read_run_state(model)
    if state["in_use"] and state["state"] != FINISHED:
        raise InputError(f"{model} is still training (process {state['holder_pid']}); segment once it has finished.")
    if state["state"] not in (None, FINISHED):
        raise InputError(f"Training in {model} has not finished (state {state['state']}: {state['message']}).")


def run(args: argparse.Namespace) -> int:
    """Validate the model, every scan and the output folder first (anything bad stops the run before
    anything is written), then segment under the output folder's lock.

    Scans are read again one at a time while segmenting, so memory holds one scan, not all of them.
    A cohort (``--image-list``, ``--shard``, several torchrun processes) goes to
    :mod:`RRLMedSAMLib.commands.segment_cohort`.
    """
    if is_cohort(args):
        return run_cohort(args, segment_options, _check_model_state, (_result_stats, _remove_stale_results))
    check_scan_paths(args.images)
    device = resolve_device(args.device)
    options = segment_options(args)
    _check_model_state(args.model)
    segmenter = prepare_segmenter(load_trained_model(args.model, device), options)
    for path in args.images:
        check_registrable(read_scan(path, "Image"), path, "Image", segmenter.model.grid.spacing_mm)
    _check_out(args.out, args.model, args.images, args.overwrite)
    if options.registration_ensemble > segmenter.ensemble_members:
        model = segmenter.model
        print(f"Note: --registration-ensemble has no effect on this run (method {model.method.name}, atlas prior "
              f"{'on' if model.preset.atlas_prior else 'off'}); each scan is registered once.", file=sys.stderr)
    if options.volume_calibration and segmenter.volume_calibration is None:
        print(f"Note: --volume-calibration on has no effect: {args.model} has no volume calibration (train it with "
              "--volume-calibration on; runs with more than 4 structures are never calibrated).", file=sys.stderr)
    with claimed_folder(args.out, "segment", "Output folder") as claim:
        _check_out(args.out, args.model, args.images, args.overwrite)
        progress = ProgressReporter()
        for path, folder in zip(args.images, segment_scans(segmenter, args.images, args.out, progress, claim)):
            print(f"{volume_stem(path)}: {folder}")
        progress.done()
    return 0


def _result_stats(folder: Path) -> dict[str, tuple[int, int]]:
    """``(inode, mtime_ns)`` of the result files already in ``folder``."""
    stats = {}
    for name in RESULT_FILES:
        try:
            info = os.stat(folder / name)
        except OSError:
            continue
        stats[name] = (info.st_ino, info.st_mtime_ns)
    return stats


def _remove_stale_results(folder: Path, before: dict[str, tuple[int, int]]) -> None:
    """Delete result files of an earlier segmentation that this one did not rewrite (e.g. another method's prompt mask)."""
    for name, stat in _result_stats(folder).items():
        if before.get(name) == stat:
            (folder / name).unlink()


def segment_scans(segmenter: Segmenter, images: list[Path], out: Path, progress: ProgressReporter,
                  claim: ClaimedFolder | None = None) -> list[Path]:
    """Segment ``images`` one after another as the ``segment`` stage of ``progress``; returns their result folders.

    With a registration ensemble the stage counts registrations (members per scan), not scans.
    A stop request (:func:`RRLMedSAMLib.progress.check_stop`) is honoured before each scan; the
    scans already written stay (``claim.keep`` is set once one is).
    """
    members = segmenter.ensemble_members
    progress.start_stage("segment", len(images) * members, f"segmenting {len(images)} scan(s)"
                         + (f", {members} registrations each" if members > 1 else ""))
    folders = []
    for index, path in enumerate(images):
        check_stop()
        before = _result_stats(Path(out) / volume_stem(path))
        folders.append(segment_scan(segmenter, path, out, _registration_progress(progress, index, members, volume_stem(path))))
        _remove_stale_results(folders[-1], before)
        if claim is not None:
            claim.keep = True
        progress.update((index + 1) * members, message=f"{volume_stem(path)} -> {folders[-1]}")
    progress.end_stage()
    return folders


def _registration_progress(progress: ProgressReporter, index: int, members: int, name: str) -> Callable[[int], None]:
    """Progress within scan ``index`` of an ensemble: one step per registration, the last one when it is written."""
    def registered(done: int) -> None:
        if done < members:
            progress.update(index * members + done, message=f"{name}: registration {done} of {members}")
    return registered
