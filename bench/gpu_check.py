"""A short check of the engine on one GPU: timings and peak GPU memory, one JSON file and a markdown table.

    bench/gpu_check.sh [--device cuda|cpu] [--quick] [--out DIR] [--data ../shared/data]

Steps, each in its own child process (so its peak memory is its own) with a time limit:

1. ``tiny_train``: a tiny RRL-MedSAM training (tiny SAM teacher) on the device. Mixed precision is
   what the engine has: the SAM teacher runs under ``torch.autocast`` (bfloat16, float16 where
   bfloat16 is unsupported) on CUDA; the trained networks run in float32.
2. ``fast_prostate``: the ``fast`` preset (RRL-MedSAM, randomly initialised SAM ViT-B teacher:
   no checkpoint is needed and the compute is the real one) on the prostate set, atlas ``case000000``.
3. ``segment_160x192x224``: ``segment`` with that model of the last prostate case resampled onto
   160x192x224 voxels (the voxel count of a 1 mm brain T1): a timing of the full-resolution work.
4. ``torchrun_2gpu``: a 2-process ``torchrun`` tiny training, when two GPUs are visible.

``--quick`` shrinks everything (2 prostate cases, 2 steps per stage, a 40x48x56 scan) so that
``--device cpu --quick`` runs end to end in CI. Asking for CUDA where there is none exits with 2
and one message, before anything is written. Exit code 1 when a step failed or ran out of time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
#: Seconds each step may take (full run); the whole check stays under 8 minutes on one H100-class GPU.
STEP_LIMITS_S = {"tiny_train": 60, "fast_prostate": 240, "segment_160x192x224": 90, "torchrun_2gpu": 60}
QUICK_STEPS = ("--set", "registration_steps=2", "--set", "segmentation_steps=2", "--set", "distill_steps=2",
               "--set", "pretrain_steps=2", "--set", "joint_steps=2")


def child(result_path: Path, engine_args: list[str]) -> int:
    """Run one engine command in this process; write its exit code, wall time and peak memory to ``result_path``."""
    import resource

    import torch

    from RRLMedSAMLib.cli import main

    start = time.perf_counter()
    code = main(engine_args)
    wall = time.perf_counter() - start
    gpu = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
    result_path.write_text(json.dumps({"rc": code, "wall_s": round(wall, 2), "peak_gpu_mb": gpu,
                                       "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    return code


def _run_step(name: str, command: list[str], work: Path, limit_s: float, env: dict[str, str]) -> dict:
    """Run ``command`` (an engine command through :func:`child`, or any command) with a time limit."""
    log = work / f"{name}.log"
    result_path = work / f"{name}.result.json"
    start = time.perf_counter()
    with log.open("w") as handle:
        try:
            code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                  timeout=limit_s).returncode
        except subprocess.TimeoutExpired:
            return {"status": "timed out", "limit_s": limit_s, "wall_s": round(time.perf_counter() - start, 1),
                    "log": str(log)}
    record = json.loads(result_path.read_text()) if result_path.is_file() else {}
    record["process_s"] = round(time.perf_counter() - start, 2)  # with Python start-up and imports
    record.setdefault("wall_s", record["process_s"])
    record |= {"status": "ok" if code == 0 else "failed", "rc": code, "log": str(log)}
    if code != 0:
        record["error"] = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
    return record


def _engine(name: str, work: Path, args: list[str]) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", str(work / f"{name}.result.json"), "--", *args]


def _prostate(data: Path, work: Path, quick: bool) -> list[Path]:
    """The prostate set in the standard layout (``bench/make_datasets.py``'s prostate part); its images, atlas first."""
    from RRLMedSAMLib.data.prostate_dataset import make_prostate_dataset

    source = data / "prostate_mr"
    if quick:  # only the first two cases
        source = work / "prostate_mr"
        for kind in ("images", "labels"):
            (source / kind).mkdir(parents=True)
            for path in sorted((data / "prostate_mr" / kind).glob("*.nii.gz"))[:2]:
                shutil.copy(path, source / kind / path.name)
    names = make_prostate_dataset(source, work / "prostate")
    return [work / "prostate" / "images" / f"{n}.nii.gz" for n in names]


def _big_scan(case: Path, work: Path, quick: bool) -> Path:
    """A prostate case resampled (linear) onto 160x192x224 voxels over the same extent (40x48x56 with ``quick``).

    The same anatomy as the model's atlas, so pre-alignment and registration do their real work,
    at the voxel count of a typical 1 mm brain T1.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(case), sitk.sitkFloat32)
    size = (40, 48, 56) if quick else (160, 192, 224)
    extent = [n * s for n, s in zip(image.GetSize(), image.GetSpacing())]
    spacing = [e / n for e, n in zip(extent, size)]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                              image.GetDirection(), 0.0, sitk.sitkFloat32)
    path = work / f"scan_{size[0]}x{size[1]}x{size[2]}.nii.gz"
    sitk.WriteImage(resampled, str(path))
    return path


def _train_args(images: list[Path], out: Path, device: str, preset: str, teacher: str, extra: list[str]) -> list[str]:
    labels = images[0].parent.parent / "labels" / images[0].name
    return ["train", "--atlas-image", str(images[0]), "--atlas-label", str(labels), "--images", *map(str, images[1:]),
            "--out", str(out), "--preset", preset, "--device", device, "--method", "rrl", "--teacher", teacher, *extra]


def run_check(device: str, quick: bool, out: Path, data: Path, torchrun: str = "auto") -> dict:
    """Run every step into ``out`` (work files in ``out/work``); return the results (also written as JSON + markdown)."""
    import torch

    from RRLMedSAMLib.bench.machine import describe_machine

    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    scale = 4.0 if quick and device == "cpu" else 1.0
    limits = {name: limit * scale for name, limit in STEP_LIMITS_S.items()}
    quick_args = list(QUICK_STEPS) if quick else []
    steps: dict[str, dict] = {}
    started = time.perf_counter()
    images = _prostate(data, work, quick)
    steps["tiny_train"] = _run_step("tiny_train", _engine("tiny_train", work, _train_args(
        images[:3], work / "tiny_run", device, "tiny", "tiny", quick_args)), work, limits["tiny_train"], env)
    fast_extra = quick_args + (["--set", "grid_size=32", "--set", "refinement_grid_size=0"] if quick else [])
    steps["fast_prostate"] = _run_step("fast_prostate", _engine("fast_prostate", work, _train_args(
        images, work / "fast_run", device, "fast", "tiny" if quick else "random-vit_b", fast_extra)),
        work, limits["fast_prostate"], env)
    scan = _big_scan(images[-1], work, quick)
    segment_name = "segment_160x192x224"
    if steps["fast_prostate"]["status"] == "ok":
        steps[segment_name] = _run_step(segment_name, _engine(segment_name, work, [
            "segment", "--model", str(work / "fast_run"), "--image", str(scan), "--out", str(work / "segmented"),
            "--device", device]), work, limits[segment_name], env)
        qc = work / "segmented" / scan.name.split(".")[0] / "qc.json"
        if qc.is_file():
            steps[segment_name]["stage_timings_s"] = json.loads(qc.read_text())["timings_s"]
    else:
        steps[segment_name] = {"status": "skipped", "reason": "the fast_prostate model was not trained"}
    steps[segment_name]["scan_size_xyz"] = list(map(int, __import__("SimpleITK").ReadImage(str(scan)).GetSize()))
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if torchrun == "on" or (torchrun == "auto" and gpus >= 2):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "RRLMedSAMLib", *_train_args(images[:3], work / "torchrun_run", device, "tiny", "tiny",
                                                       quick_args)]
        steps["torchrun_2gpu"] = _run_step("torchrun_2gpu", torchrun, work, limits["torchrun_2gpu"], env)
        card = work / "torchrun_run" / "model_card.json"
        if card.is_file():
            trained_on = json.loads(card.read_text()).get("trained_on", {})
            steps["torchrun_2gpu"]["model_card"] = {k: trained_on.get(k) for k in ("world_size", "backend")}
    else:
        steps["torchrun_2gpu"] = {"status": "skipped", "reason": f"needs two GPUs; {gpus} visible"}
    result = {"machine": describe_machine(device), "device": device, "quick": quick,
              "mixed_precision": "SAM teacher under torch.autocast (bfloat16, else float16) on CUDA; the trained "
                                 "networks run in float32 (the engine has no AMP setting for them)",
              "total_s": round(time.perf_counter() - started, 1), "steps": steps}
    write_json_atomic(out / "gpu_check.json", result)
    write_text_atomic(out / "gpu_check.md", markdown(result))
    return result


def markdown(result: dict) -> str:
    """The short table of a check's results."""
    machine = result["machine"]
    where = machine.get("gpu") or f"{machine['cpu']} ({machine['cores']} cores)"
    lines = [f"GPU check on {where}, device {result['device']}{', quick' if result['quick'] else ''}: "
             f"{result['total_s']} s in all.", "",
             "| step | status | wall s | peak GPU MiB | peak RAM MiB |", "| --- | --- | --- | --- | --- |"]
    for name, step in result["steps"].items():
        gpu = step.get("peak_gpu_mb")
        lines.append(f"| {name} | {step['status']} | {step.get('wall_s', '–')} | {'–' if gpu is None else gpu} "
                     f"| {step.get('peak_rss_mb', '–')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        return child(Path(argv[1]), argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="device to check (default: cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI: --device cpu --quick)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check"),
                        help="results folder (default: $OUT, else ./gpu_check)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default: ../shared/data)")
    parser.add_argument("--torchrun", choices=("auto", "on", "off"), default="auto",
                        help="the 2-process torchrun training: auto = when two GPUs are visible; on = also on one GPU "
                             "or the CPU (gloo)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda was requested but this PyTorch build sees no CUDA GPU; run on a GPU "
              "machine, or use --device cpu --quick for the CPU check.", file=sys.stderr)
        return 2
    missing = [p for p in (args.data / "prostate_mr" / "images",) if not p.exists()]
    if missing:
        print(f"gpu_check: error: {missing[0]} does not exist; pass --data with the shared data folder.",
              file=sys.stderr)
        return 2
    result = run_check(args.device, args.quick, args.out, args.data, args.torchrun)
    print(markdown(result), end="")
    print(f"results: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 0 if all(step["status"] in ("ok", "skipped") for step in result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
