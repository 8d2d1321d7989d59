"""``rrlmedsam train``: learn from one annotated atlas and a set of unlabelled scans."""

from __future__ import annotations

import argparse
from pathlib import Path

from RRLMedSAMLib.run.device import DEVICE_CHOICES
from RRLMedSAMLib.run.methods import METHODS
from RRLMedSAMLib.run.presets import PRESETS
from RRLMedSAMLib.run.rrl_settings import SLICE_SIZES, TEACHER_CHOICES
from RRLMedSAMLib.training.trainer import TrainRequest, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atlas-image", required=True, type=Path, help="the annotated scan (NIfTI/NRRD/MHA)")
    parser.add_argument("--atlas-label", required=True, type=Path, help="its integer labelmap (.nii.gz, .nrrd, .seg.nrrd)")
    parser.add_argument("--atlas-labels-table", type=Path, help="labels.csv (id,name,r,g,b) naming the atlas's ids")
    parser.add_argument("--images", required=True, nargs="+", type=Path, help="unlabelled scans of the same kind")
    parser.add_argument("--out", required=True, type=Path, help="run folder to create (or to resume)")
    parser.add_argument("--preset", default="fast", choices=list(PRESETS), help="size/length of training (default: fast)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted training in --out")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--registration-steps", type=int, help="override the preset's registration steps")
    parser.add_argument("--segmentation-steps", type=int, help="override the preset's segmentation steps")
    parser.add_argument("--grid-size", type=int, help="override the working grid's longest side (voxels)")
    parser.add_argument("--refinement-grid-size", type=int,
                        help="override the longest side (voxels) of segment's fine-grid registration refinement (0 = off)")
    parser.add_argument("--refinement-steps", type=int, help="override the iterations of that refinement (0 = off)")
    parser.add_argument("--no-atlas-prior", dest="atlas_prior", action="store_false", default=None,
                        help="segmentation networks segment alone instead of correcting the warped atlas label")
    parser.add_argument("--no-volume-calibration", dest="volume_calibration", action="store_false",
                        help="skip the last stage, which measures how far the registration follows size changes "
                             "(used by 'segment' on runs with up to 4 structures)")
    parser.add_argument("--share-stages-from", nargs="+", type=Path, default=[], metavar="RUN_DIR",
                        help="finished runs on the same data whose stages in common with this new run are copied "
                             "instead of recomputed (ablations; identical results)")
    add_method_arguments(parser)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the method, its SAM teacher, distillation, mutual-EMA and the RRL stage lengths."""
    group = parser.add_argument_group("method and SAM teacher")
    group.add_argument("--method", choices=list(METHODS), help="what to train (default: rrl; on --resume: the stored one): "
                       + "; ".join(f"{m.name} = {m.summary}" for m in METHODS.values()))
    group.add_argument("--teacher", choices=TEACHER_CHOICES, help="SAM teacher (default: auto = official vit_b if found "
                       "and verified in the weights folder, else no distillation; random-vit_b/tiny = random weights, "
                       "for benchmarks/tests)")
    group.add_argument("--sam-checkpoint", type=Path, help="SAM weights file (verified against the manifest's sha256)")
    group.add_argument("--allow-custom-weights", action="store_true", default=None,
                       help="accept a --sam-checkpoint whose sha256 is in no manifest entry (e.g. MedSAM)")
    group.add_argument("--weights-dir", type=Path, help="SAM weights folder (default: $RRLMEDSAM_WEIGHTS_DIR, else "
                       "~/.cache/rrlmedsam/weights)")
    group.add_argument("--slice-size", type=int, choices=SLICE_SIZES, help="side of the slices fed to SAM (default: 128)")
    group.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="working-grid axis SAM slices along (default: 0)")
    group.add_argument("--distill-loss", choices=("mse", "l1", "kl"), help="feature distillation loss (default: mse)")
    group.add_argument("--distill-images", nargs="+", type=Path, metavar="F|DIR",
                       help="general unlabelled images for DSKD stage 1 (default: the training scans)")
    group.add_argument("--ema-alpha", type=float, help="mutual-EMA weight (default: 0.99)")
    group.add_argument("--distill-steps", type=int, help="override the preset's DSKD stage-1 steps")
    group.add_argument("--pretrain-steps", type=int, help="override the preset's medical-encoder pre-training steps")
    group.add_argument("--joint-steps", type=int, help="override the preset's stage-2 steps")
    group.add_argument("--autosam-steps", type=int, help="override the preset's AutoSAM head steps")


def method_overrides(args: argparse.Namespace) -> dict:
    """:class:`RRLSettings` overrides from the parsed options (``None`` = not given)."""
    return {
        "teacher": args.teacher,
        "sam_checkpoint": str(args.sam_checkpoint) if args.sam_checkpoint else None,
        "allow_custom_weights": args.allow_custom_weights,
        "weights_dir": str(args.weights_dir) if args.weights_dir else None,
        "slice_size": args.slice_size,
        "slice_axis": args.slice_axis,
        "distill_loss": args.distill_loss,
        "distill_images": [str(p) for p in args.distill_images] if args.distill_images else None,
        "ema_alpha": args.ema_alpha,
        "distill_steps": args.distill_steps,
        "pretrain_steps": args.pretrain_steps,
        "joint_steps": args.joint_steps,
        "autosam_steps": args.autosam_steps,
    }


def run(args: argparse.Namespace) -> int:
    request = TrainRequest(
        atlas_image=args.atlas_image,
        atlas_label=args.atlas_label,
        images=list(args.images),
        out=args.out,
        preset=args.preset,
        device=args.device,
        resume=args.resume,
        seed=args.seed,
        labels_table=args.atlas_labels_table,
        overrides={
            "registration_steps": args.registration_steps,
            "segmentation_steps": args.segmentation_steps,
            "grid_size": args.grid_size,
            "refinement_grid_size": args.refinement_grid_size,
            "refinement_steps": args.refinement_steps,
            "atlas_prior": args.atlas_prior,
        },
        method=args.method,
        rrl=method_overrides(args),
        share_stages_from=list(args.share_stages_from),
        volume_calibration=args.volume_calibration,
    )
    run_folder = train(request)
    print(f"Training finished: {run_folder.root}")
    return 0
