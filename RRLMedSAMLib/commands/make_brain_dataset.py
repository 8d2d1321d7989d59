"""``rrlmedsam make-brain-dataset``: paint T1-like images on SynthSeg brain label maps."""

from __future__ import annotations

import argparse

from RRLMedSAMLib.data.brain_dataset import make_brain_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the command's options."""
    parser.add_argument("--labelmaps", required=True, help="folder of label maps (e.g. SynthSeg training_seg_XX.nii.gz)")
    parser.add_argument("--reference-scan", required=True, help="real T1 scan as .npz with keys vol, seg (vxm_test_scan.npz)")
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (combined with each subject's name); default 0")
    parser.add_argument("--subjects", type=int, default=None, help="use only the first N label maps (sorted by name)")


def run(args: argparse.Namespace) -> int:
    """Build the dataset; return 0."""
    names = make_brain_dataset(args.labelmaps, args.reference_scan, args.out, seed=args.seed, subjects=args.subjects)
    print(f"Wrote {len(names)} subjects to {args.out} (synthetic contrast, real anatomy; see its README.md).")
    return 0
