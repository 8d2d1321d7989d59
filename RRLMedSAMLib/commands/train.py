"""``rrlmedsam train``: learn from one annotated atlas and a set of unlabelled scans.

The method's research settings (stage lengths, grids, losses, distillation, mutual-EMA) are
reached with ``--set KEY=VALUE`` (:mod:`RRLMedSAMLib.run.set_options`) and recorded in the run's
``config.json``. Under ``torchrun`` the training is data-parallel (``docs/distributed.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from RRLMedSAMLib.run.device import DEVICE_CHOICES
from RRLMedSAMLib.run.distributed import is_main_process
from RRLMedSAMLib.run.methods import METHODS
from RRLMedSAMLib.run.presets import PRESETS
from RRLMedSAMLib.run.rrl_settings import TEACHER_CHOICES
from RRLMedSAMLib.run.set_options import parse_set_options
from RRLMedSAMLib.training.trainer import TrainRequest, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atlas-image", required=True, type=Path, help="the annotated scan (NIfTI/NRRD/MHA)")
    parser.add_argument("--atlas-label", required=True, type=Path, help="its integer labelmap (.nii.gz, .nrrd, .seg.nrrd)")
    parser.add_argument("--atlas-labels-table", type=Path, help="labels.csv (id,name,r,g,b) naming the atlas's ids")
    parser.add_argument("--images", "--image", dest="images", required=True, nargs="+", type=Path,
                        help="unlabelled scans of the same kind")
    parser.add_argument("--out", required=True, type=Path, help="run folder to create (or to resume)")
    parser.add_argument("--preset", default="fast", choices=list(PRESETS), help="size/length of training (default: fast)")
    parser.add_argument("--method", choices=list(METHODS), help="what to train (default: rrl; on --resume: the stored one): "
                        + "; ".join(f"{m.name} = {m.summary}" for m in METHODS.values()))
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--volume-calibration", choices=("on", "off"), default="off",
                        help="end with a stage measuring how far the registration follows size changes, which "
                             "'segment --volume-calibration on' then corrects (up to 4 structures; default off)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a method setting, e.g. --set registration_steps=100 --set atlas_prior=off (repeatable; "
                             "see docs/command_line.md for the keys)")
    group = parser.add_argument_group("SAM teacher")
    group.add_argument("--teacher", choices=TEACHER_CHOICES, help="SAM teacher (default: auto = official vit_b if found "
                       "and verified in the weights folder, else no distillation; random-vit_b/tiny = random weights, "
                       "for benchmarks/tests)")
    group.add_argument("--sam-checkpoint", type=Path, help="SAM weights file (verified against the manifest's sha256)")
    group.add_argument("--allow-custom-weights", action="store_true", default=None,
                       help="accept a --sam-checkpoint whose sha256 is in no manifest entry (e.g. MedSAM)")
    group.add_argument("--weights-dir", type=Path, help="SAM weights folder (default: $RRLMEDSAM_WEIGHTS_DIR, else "
                       "~/.cache/rrlmedsam/weights)")
    group.add_argument("--distill-images", nargs="+", type=Path, metavar="F|DIR",
                       help="general unlabelled images for the first distillation stage (default: the training scans)")


def train_request(args: argparse.Namespace) -> TrainRequest:
    """The :class:`TrainRequest` the parsed command line asks for (``--set`` checked here)."""
    preset_overrides, rrl_overrides = parse_set_options(args.settings)
    return TrainRequest(
        atlas_image=args.atlas_image,
        atlas_label=args.atlas_label,
        images=list(args.images),
        out=args.out,
        preset=args.preset,
        device=args.device,
        resume=args.resume,
        seed=args.seed,
        labels_table=args.atlas_labels_table,
        overrides=preset_overrides,
        method=args.method,
        rrl=rrl_overrides | {
            "teacher": args.teacher,
            "sam_checkpoint": str(args.sam_checkpoint) if args.sam_checkpoint else None,
            "allow_custom_weights": args.allow_custom_weights,
            "weights_dir": str(args.weights_dir) if args.weights_dir else None,
            "distill_images": [str(p) for p in args.distill_images] if args.distill_images else None,
        },
        volume_calibration=args.volume_calibration == "on",
    )


def run(args: argparse.Namespace) -> int:
    run_folder = train(train_request(args))
    if is_main_process():  # under torchrun, rank 0 speaks for the job
        print(f"Training finished: {run_folder.root}")
    return 0
