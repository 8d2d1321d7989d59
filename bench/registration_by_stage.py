"""Registration-only Dice of a finished run at each stage checkpoint that holds registration weights.

For the RRL family this shows what each stage does to the registration the final segmentation is
built on: the warm-up (``registration``), the joint pre-training with the segmentation loss on the
shared medical encoder (``medical_pretrain``) and stage 2 (``joint_stage2``, the final weights).
Each checkpoint's registration weights are loaded into the trained model and the scans are
segmented through the engine's own ``segment_scan``; the Dice of ``warped_atlas_label.nii.gz``
against the true labels is reported, mean over the labels present in both (as ``evaluate`` does).

    python bench/registration_by_stage.py --model RUN_DIR --dataset DATASET_DIR --scans NAME [NAME ...] \
        [--out FILE.json]

``DATASET_DIR`` is a dataset folder (``images/<name>.nii.gz``, ``labels/<name>.nii.gz``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.inference.segmenter import load_trained_model, segment_scan
from RRLMedSAMLib.metrics.overlap import dice_per_label
from RRLMedSAMLib.training.checkpoint import read_checkpoint

STAGES = ("registration", "medical_pretrain", "joint_stage2")
PREFIX = "module.registration."


def registration_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The registration network's tensors of a stage checkpoint (empty if it holds none)."""
    tensors, _, _ = read_checkpoint(checkpoint)
    return {key[len(PREFIX):]: value for key, value in tensors.items() if key.startswith(PREFIX)}


def mean_dice(prediction: Path, truth: Path) -> float:
    """Mean Dice over the non-zero labels present in both label maps."""
    pred = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction)))
    true = sitk.GetArrayFromImage(sitk.ReadImage(str(truth)))
    labels = sorted((set(np.unique(pred)) & set(np.unique(true))) - {0})
    return float(np.mean(list(dice_per_label(pred, true, labels).values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="a finished run folder")
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder with images/ and labels/")
    parser.add_argument("--scans", required=True, nargs="+", help="scan names (without .nii.gz)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_trained_model(args.model, torch.device("cpu"))
    network = model.networks["registration"]
    result: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        checkpoint = model.run.checkpoint(stage)
        weights = registration_weights(checkpoint) if checkpoint.is_file() else {}
        if not weights:
            continue
        network.load_state_dict(weights)
        network.eval()
        with tempfile.TemporaryDirectory() as temp:
            scores = {}
            for name in args.scans:
                folder = segment_scan(model, args.dataset / "images" / f"{name}.nii.gz", temp)
                scores[name] = mean_dice(folder / "warped_atlas_label.nii.gz", args.dataset / "labels" / f"{name}.nii.gz")
        result[stage] = {**scores, "mean": float(np.mean(list(scores.values())))}
        print(f"{stage:18s} registration-only Dice {result[stage]['mean']:.4f} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in scores.items())})", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "stages": result}, indent=2))


if __name__ == "__main__":
    main()
