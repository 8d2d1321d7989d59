"""One phase of one benchmark method, run in its own process so its peak memory is its own.

    python -m RRLMedSAMLib.bench.worker JOB.json

``JOB.json`` names the ``phase`` (``classical``, ``train`` or ``segment``) and its inputs; the
worker writes ``JOB.json``'s ``result`` path with timings, per-scan results, its peak resident
memory (``getrusage``) and, on CUDA, ``torch.cuda.max_memory_allocated``. Exit code 2 with one
line on stderr for an :class:`InputError`, as for every engine command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)


def _configure_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def run_classical(job: dict) -> dict:
    """``affine`` or an ANTs method (its transform in ``job["ants"]``) on every scan: segmentation files
    plus per-scan time and folding."""
    from RRLMedSAMLib.bench.classical import AntsSettings, affine_propagation, ants_syn_propagation
    from RRLMedSAMLib.io.volumes import read_label, read_scan, write_image

    atlas_image = read_scan(job["atlas_image"], "Atlas image")
    atlas_label = read_label(job["atlas_label"], "Atlas label")
    scans = []
    for entry in job["scans"]:
        scan = read_scan(entry["image"], "Image")
        start = time.perf_counter()
        if job["method"] == "affine":
            result = affine_propagation(atlas_image, atlas_label, scan, int(job["grid_size"]),
                                        int(job["affine_iterations"]), int(job["seed"]))
        else:
            result = ants_syn_propagation(atlas_image, atlas_label, scan, AntsSettings.from_dict(job["ants"]),
                                          int(job["seed"]))
        elapsed = time.perf_counter() - start
        write_image(result.label, Path(job["out_dir"]) / entry["name"] / "segmentation.nii.gz")
        scans.append({"name": entry["name"], "segment_s": round(elapsed, 3), "folding_fraction": result.folding_fraction})
    return {"scans": scans, "parameters": 0}


def run_train(job: dict) -> dict:
    """Train one engine method; returns wall time, stage times and parameter counts."""
    from RRLMedSAMLib.progress import ProgressReporter
    from RRLMedSAMLib.training.trainer import TrainRequest, train

    accepted = {f.name for f in dataclasses.fields(TrainRequest)}
    extra = {key: job[key] for key in ("method", "teacher", "rrl") if job.get(key)}
    if "method" not in accepted and extra.get("method") == "plain":
        del extra["method"]
    if job.get("share_stages_from"):
        from RRLMedSAMLib.bench.stage_sharing import sharing_hook

        extra["prepare_run"] = sharing_hook(job["share_stages_from"])
    unknown = sorted(set(extra) - accepted)
    if unknown:
        raise InputError(f"This engine's training takes no {' or '.join(unknown)} setting; update the engine.")
    request = TrainRequest(
        atlas_image=Path(job["atlas_image"]), atlas_label=Path(job["atlas_label"]),
        images=[Path(p) for p in job["images"]], out=Path(job["run_dir"]), preset=job["preset"],
        device=job["device"], seed=int(job["seed"]),
        labels_table=Path(job["labels_table"]) if job.get("labels_table") else None,
        overrides=job.get("overrides", {}), **extra,
    )
    run_dir = Path(job["run_dir"])
    progress = ProgressReporter(run_dir / "progress.jsonl", stream=sys.stdout, show_bar=False, min_interval_s=5.0)
    start = time.perf_counter()
    run = train(request, progress)
    elapsed = time.perf_counter() - start
    card = json.loads(run.model_card.read_text())
    stages = {e["stage"]: e["elapsed_s"] for e in progress.history if e["event"] == "stage_end"}
    return {"train_s": round(elapsed, 3), "stages_s": stages, "parameters": card.get("parameters", {}),
            "shared": card.get("shared_stages")}


def run_segment(job: dict) -> dict:
    """Segment every scan with a trained run; per-scan wall time and folding from ``qc.json``."""
    from RRLMedSAMLib.inference.segment_options import BARE
    from RRLMedSAMLib.inference.segment_steps import segment_scan
    from RRLMedSAMLib.inference.segmenter import open_segmenter
    from RRLMedSAMLib.run.device import resolve_device

    device = resolve_device(job["device"])
    start = time.perf_counter()
    segmenter = open_segmenter(job["run_dir"], device, BARE)  # methods compared with every add-on off
    load_s = time.perf_counter() - start
    scans = []
    for entry in job["scans"]:
        start = time.perf_counter()
        folder = segment_scan(segmenter, entry["image"], job["out_dir"])
        elapsed = time.perf_counter() - start
        qc = json.loads((folder / "qc.json").read_text())
        if not job.get("keep_fields"):
            for name in ("deformation.nrrd", "warped_atlas_image.nii.gz"):
                (folder / name).unlink(missing_ok=True)
        scans.append({"name": entry["name"], "segment_s": round(elapsed, 3),
                      "folding_fraction": qc.get("folding_fraction"), "engine_timings_s": qc.get("timings_s", {})})
    return {"scans": scans, "load_s": round(load_s, 3), "device": str(device)}


PHASES = {"classical": run_classical, "train": run_train, "segment": run_segment}


def main(argv: list[str] | None = None) -> int:
    """Run the job file named in ``argv``; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m RRLMedSAMLib.bench.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    _configure_threads(job.get("threads"))
    device = str(job.get("device", "cpu"))
    try:
        import torch

        if device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = PHASES[job["phase"]](job)
    except InputError as error:
        print(f"bench worker ({job.get('method')}, {job['phase']}): {error}", file=sys.stderr)
        return 2
    result |= {
        "phase": job["phase"], "method": job.get("method"), "wall_s": round(time.perf_counter() - start, 3),
        "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": _gpu_peak_mb(device), "pid": os.getpid(),
    }
    write_json_atomic(job["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
