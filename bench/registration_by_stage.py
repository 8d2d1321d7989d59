"""Registration-only Dice of a finished run at each stage checkpoint that holds registration weights.

For the RRL family this shows what each stage does to the registration the final segmentation is
built on: the warm-up (``registration``), the joint pre-training with the segmentation loss on the
shared medical encoder (``medical_pretrain``) and stage 2 (``joint_stage2``, the final weights).
Each checkpoint's registration weights are loaded into the trained model and the scans are
segmented through the engine's own ``segment_scan``; the Dice of ``warped_atlas_label.nii.gz``
against the true labels is reported with the engine's ``evaluate_case``: mean over the atlas
labels present in the truth, a structure missing from the prediction scoring 0.

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
from RRLMedSAMLib.metrics.evaluation import evaluate_case
from RRLMedSAMLib.run.checkpoint import load_checkpoint

#: Stage checkpoints that hold the registration network, in training order.
STAGES = ("registration", "medical_pretrain", "joint_stage2")


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
        if not checkpoint.is_file():
            continue
        load_checkpoint(checkpoint, {"registration": network})
        network.eval()
        with tempfile.TemporaryDirectory() as temp:
            scores = {}
            for name in args.scans:
                folder = segment_scan(model, args.dataset / "images" / f"{name}.nii.gz", temp)
                warped = sitk.ReadImage(str(folder / "warped_atlas_label.nii.gz"))
                truth = sitk.ReadImage(str(args.dataset / "labels" / f"{name}.nii.gz"))
                scores[name] = evaluate_case(name, warped, truth, model.label_ids).mean_dice
        result[stage] = {**scores, "mean": float(np.mean(list(scores.values())))}
        print(f"{stage:18s} registration-only Dice {result[stage]['mean']:.4f} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in scores.items())})", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.model), "stages": result}, indent=2))


if __name__ == "__main__":
    main()
