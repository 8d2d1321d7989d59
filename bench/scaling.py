"""Scaling: segment time and peak memory vs volume size, training time vs number of unlabelled scans.

    python bench/scaling.py --dataset DATASET_DIR --atlas NAME --out DIR [--sizes 64 96 128 192 256]
                            [--scan-counts 1 2 4 8] [--methods affine ants-syn plain] [--preset fast]
                            [--steps 60] [--device auto] [--threads N]

Volume size: the atlas and the first other case are resampled to cubes of ``N^3`` voxels over the
same field of view (one engine model, trained once on the native scans, segments every size; the
working grid does not change, so the cost that grows is pre-alignment, resampling and writing).
Training time: the ``plain`` method trained on the first 1, 2, 4, 8 cases with fixed steps.
Every measurement is a child process (peak RSS of its own). Writes ``scaling.json``,
``scaling_volume.png`` and ``scaling_scans.png`` into ``DIR``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk

from RRLMedSAMLib.bench.classical import QUICK_ANTS, AntsSettings
from RRLMedSAMLib.bench.machine import describe_machine
from RRLMedSAMLib.bench.plots import line_panels
from RRLMedSAMLib.bench.runner import child_env, run_child, split_cases
from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.volumes import read_label, read_scan, write_image
from RRLMedSAMLib.run.device import resolve_device
from RRLMedSAMLib.run.presets import get_preset


def cube(image: sitk.Image, size: int, is_label: bool) -> sitk.Image:
    """``image`` resampled to ``size^3`` voxels spanning its own field of view and axes."""
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    spacing = [e / size for e in extent]
    origin = image.TransformContinuousIndexToPhysicalPoint([(sp / s - 1) / 2 for sp, s in zip(spacing, image.GetSpacing())])
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(image, [size] * 3, sitk.Transform(), interpolator, origin, spacing, image.GetDirection(), 0,
                         image.GetPixelID())


def main(argv: list[str] | None = None) -> int:
    """Measure and plot; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, type=Path)
    parser.add_argument("--atlas", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 96, 128, 192, 256])
    parser.add_argument("--scan-counts", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--methods", nargs="+", default=["affine", "ants-syn", "plain"])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--steps", type=int, default=60, help="registration and segmentation steps of each training")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick", action="store_true", help="short ANTs schedules (smoke runs)")
    args = parser.parse_args(argv)
    atlas, scans = split_cases(args.dataset, args.atlas, max(args.scan_counts))
    device, env = str(resolve_device(args.device)), child_env(args.threads)
    overrides = {"registration_steps": args.steps, "segmentation_steps": args.steps}
    preset = get_preset(args.preset, **overrides)
    ants = QUICK_ANTS if args.quick else AntsSettings()
    base = {"atlas_image": str(atlas.image), "atlas_label": str(atlas.label), "seed": 0, "threads": args.threads,
            "device": device, "preset": args.preset, "overrides": overrides, "method": "plain"}
    work = args.out / "work"

    counts: dict[str, list] = {"train_s": [], "peak_ram_mb": []}
    for count in args.scan_counts:
        folder = work / f"train_{count}"
        folder.mkdir(parents=True, exist_ok=True)
        result = run_child(base | {"phase": "train", "images": [str(c.image) for c in scans[:count]],
                                   "run_dir": str(folder / "run"), "clean": [str(folder / "run")]}, folder, env)
        counts["train_s"].append(result["train_s"])
        counts["peak_ram_mb"].append(result["peak_rss_mb"])
        print(f"[scaling] train on {count} scan(s): {result['train_s']:.0f} s, {result['peak_rss_mb']:.0f} MiB")

    atlas_image, atlas_label = read_scan(atlas.image), read_label(atlas.label)
    volume: dict[str, dict[str, list]] = {m: {"segment_s": [], "peak_ram_mb": []} for m in args.methods}
    model_dir = work / f"train_{args.scan_counts[0]}" / "run"
    for size in args.sizes:
        folder = work / f"size_{size}"
        atlas_path, scan_path = folder / "atlas.nii.gz", folder / "scan.nii.gz"
        write_image(cube(atlas_image, size, False), atlas_path)
        write_image(cube(atlas_label, size, True), folder / "atlas_label.nii.gz")
        write_image(cube(read_scan(scans[0].image), size, False), scan_path)
        for method in args.methods:
            sub = folder / method
            sub.mkdir(parents=True, exist_ok=True)
            entry = [{"name": "scan", "image": str(scan_path)}]
            if method == "plain":
                job = base | {"phase": "segment", "run_dir": str(model_dir), "scans": entry, "out_dir": str(sub / "pred"),
                              "clean": [str(sub / "pred")]}
            else:
                job = base | {"phase": "classical", "method": method, "atlas_image": str(atlas_path),
                              "atlas_label": str(folder / "atlas_label.nii.gz"), "scans": entry,
                              "out_dir": str(sub / "pred"), "clean": [str(sub / "pred")], "grid_size": preset.grid_size,
                              "affine_iterations": preset.affine_iterations, "ants": ants.to_dict()}
            result = run_child(job, sub, env)
            volume[method]["segment_s"].append(result["scans"][0]["segment_s"])
            volume[method]["peak_ram_mb"].append(result["peak_rss_mb"])
            print(f"[scaling] {method} at {size}^3: {result['scans'][0]['segment_s']:.1f} s, {result['peak_rss_mb']:.0f} MiB")

    machine = describe_machine(device)
    write_json_atomic(args.out / "scaling.json", {"machine": machine, "sizes": args.sizes, "volume": volume,
                                                  "scan_counts": args.scan_counts, "training": counts,
                                                  "preset": args.preset, "steps": args.steps})
    where = f"{machine['cores']} cores" + (f", {machine['gpu']}" if machine.get("gpu") else "")
    line_panels(args.sizes, volume, "volume side N (N^3 voxels)",
                {"segment_s": "segment wall time (s)", "peak_ram_mb": "peak RAM (MiB)"},
                args.out / "scaling_volume.png", f"Segment cost vs volume size ({where})", log_y=True)
    line_panels(args.scan_counts, {"plain": counts}, "unlabelled training scans",
                {"train_s": "training wall time (s)", "peak_ram_mb": "peak RAM (MiB)"},
                args.out / "scaling_scans.png", f"Training cost vs number of scans ({where}, {args.steps} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
