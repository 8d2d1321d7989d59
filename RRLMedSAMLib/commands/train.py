"""``rrlmedsam train``: learn from one annotated atlas and a set of unlabelled scans."""

from __future__ import annotations

import argparse
from pathlib import Path

from RRLMedSAMLib.training.device import DEVICE_CHOICES
from RRLMedSAMLib.training.presets import PRESETS
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
        },
    )
    run_folder = train(request)
    print(f"Training finished: {run_folder.root}")
    return 0
