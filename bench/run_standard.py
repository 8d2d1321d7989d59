"""The standard benchmark runs: build the datasets, run every plan entry, copy the results into docs.

    python bench/run_standard.py --work DIR [--plan cpu|gpu|table|fast|quick] [--device auto|cpu|cuda]
                                 [--only prostate brain oasis ct] [--methods M ...] [--datasets DIR] [--teacher NAME]

``DIR`` receives ``datasets/`` (built once, reused) and ``results/<run>/`` (everything, including
predictions); the small result files (tables, JSON, PNG; no image data) are copied to
``docs/bench_results/<machine>/<run>/``, ``<machine>`` naming the GPU or the CPU core count.
Plans (the GPU plan is the real benchmark; the CPU plan must fit in an hour on 2 cores):

``cpu``    preset ``fast`` (64-voxel grid) with stages shortened further (:data:`CPU_PLAN_STEPS`);
           prostate: every method on 4 scans; brain: core methods and RRL-MedSAM on 1 scan; OASIS
           A -> B; CT plumbing (2 cases). About 45 minutes on 2 Xeon cores.
``gpu``    preset ``standard`` (96-voxel grid), every scan, every method; ANTs still on the CPU.
``table``  the one-shot table of the SAM-guided method on 2 cores: every scan of prostate and brain,
           preset ``fast`` with :data:`CPU_STEPS`; registration-only, plain, RRL-MedSAM, its ablations,
           the AutoSAM heads and affine (ANTs SyN on prostate only: on brain it costs ~2 min a scan).
``fast``   the engine's issue-2 measurement: preset ``fast`` with its own stage lengths, every scan of
           prostate and brain, registration-only and plain (about 45 minutes on 2 cores).
``quick``  tiny preset and short ANTs schedules on 2 scans of each dataset: a smoke run (minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ct_plumbing import main as ct_plumbing
from oasis_pair import main as oasis_pair

from RRLMedSAMLib.bench.machine import describe_machine, machine_slug
from RRLMedSAMLib.bench.results import RESULT_FILES
from RRLMedSAMLib.cli import main as rrlmedsam
from RRLMedSAMLib.data.brain_dataset import make_brain_dataset
from RRLMedSAMLib.data.prostate_dataset import make_prostate_dataset
from RRLMedSAMLib.run.device import resolve_device

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data"
CORE = ("affine", "ants-syn", "registration-only", "plain")
SAM_GUIDED = ("rrl", "rrl-no-distill", "rrl-no-ema", "rrl-no-prompt", "autosam-vit", "autosam-cnn", "autosam-linear")
ALL = (*CORE, *SAM_GUIDED)
#: Stage lengths of the table plan (the ``fast`` preset's: registration/segmentation 200/250,
#: RRL distillation/pre-training/stage 2/AutoSAM 50/60/120/300).
CPU_STEPS = ("--set", "registration_steps=60", "--set", "segmentation_steps=80", "--set", "distill_steps=20",
             "--set", "pretrain_steps=40", "--set", "joint_steps=60",
             "--set", "autosam_steps=60")
#: Stage lengths of the CPU plan: about a quarter shorter again, so that it fits the hour.
CPU_PLAN_STEPS = ("--set", "registration_steps=45", "--set", "segmentation_steps=60", "--set", "distill_steps=15",
                  "--set", "pretrain_steps=25", "--set", "joint_steps=40",
                  "--set", "autosam_steps=40")


@dataclass(frozen=True)
class Run:
    """One benchmark run of a plan: a dataset, its atlas, the methods, the scans and extra options."""

    name: str
    dataset: str
    atlas: str
    methods: tuple[str, ...]
    max_scans: int | None
    options: tuple[str, ...] = ()


PLANS: dict[str, list[Run]] = {
    "cpu": [
        Run("prostate", "prostate", "case000000", ALL, 4, ("--preset", "fast", *CPU_PLAN_STEPS)),
        Run("brain", "brain", "training_seg_01", (*CORE, "rrl"), 1, ("--preset", "fast", *CPU_PLAN_STEPS)),
        Run("oasis", "oasis", "oasis_A", CORE, None, ("--preset", "fast", *CPU_PLAN_STEPS)),
        Run("ct", "ct", "ct_atlas", CORE, None, ("--preset", "fast", *CPU_PLAN_STEPS)),
    ],
    "gpu": [
        Run("prostate", "prostate", "case000000", ALL, None, ("--preset", "standard")),
        Run("brain", "brain", "training_seg_01", ALL, None, ("--preset", "standard")),
        Run("oasis", "oasis", "oasis_A", (*CORE, "rrl"), None, ("--preset", "standard")),
        Run("ct", "ct", "ct_atlas", CORE, None, ("--preset", "standard")),
    ],
    "table": [
        Run("prostate-all", "prostate", "case000000", ALL, None, ("--preset", "fast", *CPU_STEPS)),
        Run("brain-all", "brain", "training_seg_01", ("affine", "registration-only", "plain", *SAM_GUIDED), None,
            ("--preset", "fast", *CPU_STEPS)),
    ],
    "fast": [
        Run("prostate-fast", "prostate", "case000000", ("registration-only", "plain"), None, ("--preset", "fast")),
        Run("brain-fast", "brain", "training_seg_01", ("registration-only", "plain"), None, ("--preset", "fast")),
    ],
    "quick": [
        Run("prostate", "prostate", "case000000", (*CORE, "rrl"), 2, ("--quick",)),
        Run("brain", "brain", "training_seg_01", CORE, 2, ("--quick",)),
        Run("oasis", "oasis", "oasis_A", CORE, None, ("--quick",)),
        Run("ct", "ct", "ct_atlas", CORE, None, ("--quick",)),
    ],
}


def ensure_datasets(datasets: Path, data: Path, needed: set[str]) -> None:
    """Build the brain and prostate datasets under ``datasets`` unless they are already there."""
    if "brain" in needed and not (datasets / "brain" / "labels.csv").is_file():
        make_brain_dataset(data / "brain_labelmaps", data / "brain_t1" / "vxm_test_scan.npz", datasets / "brain")
    if "prostate" in needed and not (datasets / "prostate" / "labels.csv").is_file():
        make_prostate_dataset(data / "prostate_mr", datasets / "prostate")


def run_one(run: Run, args: argparse.Namespace, common: list[str]) -> tuple[int, Path]:
    """Run one plan entry; returns its exit code and results folder."""
    options = [*run.options, "--methods", *run.methods, *common]
    if run.max_scans is not None:
        options += ["--max-scans", str(run.max_scans)]
    if run.dataset == "oasis":
        return oasis_pair(["--work", str(args.work), "--data", str(args.data), *options]), args.work / "results" / "oasis"
    if run.dataset == "ct":
        return ct_plumbing(["--work", str(args.work), "--data", str(args.data), *options]), args.work / "results" / "ct"
    out = args.work / "results" / run.name
    code = rrlmedsam(["bench", "--dataset", str(args.datasets / run.dataset), "--atlas", run.atlas, "--out", str(out),
                      "--title", f"{run.dataset} (atlas {run.atlas})", *options])
    return code, out


def publish(results: Path, target: Path) -> None:
    """Copy the small result files (no image data) of one run into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in (*RESULT_FILES, "field_errors.json"):
        if (results / name).is_file():
            shutil.copy2(results / name, target / name)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen plan; return 0 when every run succeeded."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="working folder (outside the repository)")
    parser.add_argument("--plan", choices=list(PLANS), default="cpu", help="which plan (default: cpu)")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--only", nargs="+", choices=["prostate", "brain", "oasis", "ct"], help="run only these")
    parser.add_argument("--methods", nargs="+", help="run only these of each entry's methods (default: all of them)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--datasets", type=Path, help="built datasets (default: WORK/datasets)")
    parser.add_argument("--teacher", help="SAM teacher for the SAM-guided methods (default: the engine's)")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "bench_results", help="where results are copied")
    args = parser.parse_args(argv)
    args.datasets = args.datasets or args.work / "datasets"
    runs = [r for r in PLANS[args.plan] if not args.only or r.dataset in args.only]
    if args.methods:
        runs = [dataclasses.replace(r, methods=tuple(m for m in r.methods if m in args.methods)) for r in runs]
        runs = [r for r in runs if r.methods]
    ensure_datasets(args.datasets, args.data, {r.dataset for r in runs})
    device = str(resolve_device(args.device))
    common = ["--device", device] + (["--teacher", args.teacher] if args.teacher else [])
    target = args.results / machine_slug(describe_machine(device))
    failures = 0
    for run in runs:
        start = time.monotonic()
        code, results = run_one(run, args, common)
        failures += code != 0
        publish(results, target / run.name)
        print(f"[run_standard] {run.name}: exit {code}, {time.monotonic() - start:.0f} s -> {target / run.name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
