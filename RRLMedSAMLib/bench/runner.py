"""Run a set of methods on one dataset folder, each phase in a child process, and score them.

The atlas is one case of the dataset; every other case (or the first ``max_scans``) is both an
unlabelled training scan and a test scan, which is the one-shot use the product is built for (the
clinician trains on the scans they want segmented). Results go to ``OUT/methods/<name>/``; a method
whose job and result are already there is not run again, so an interrupted benchmark resumes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.bench.classical import AntsSettings
from RRLMedSAMLib.bench.methods import MethodSpec, resolve_methods
from RRLMedSAMLib.data.dataset import Case, list_cases, read_dataset_table
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.volumes import ensure_writable_folder, read_label
from RRLMedSAMLib.metrics.evaluation import CaseMetrics, evaluate_pairs
from RRLMedSAMLib.run.presets import get_preset


@dataclass
class BenchSettings:
    """What to benchmark and how (see ``rrlmedsam bench --help``)."""

    dataset: Path
    atlas: str
    out: Path
    methods: list[str] | None = None
    preset: str = "fast"
    device: str = "cpu"
    seed: int = 0
    max_scans: int | None = None
    threads: int | None = None
    ants: AntsSettings = field(default_factory=AntsSettings)
    overrides: dict = field(default_factory=dict)
    teacher: str | None = None
    rrl: dict = field(default_factory=dict)
    keep_fields: bool = False
    share_stages: bool = True

    def to_dict(self) -> dict:
        return {
            "dataset": str(self.dataset), "atlas": self.atlas, "preset": self.preset, "device": self.device,
            "seed": self.seed, "max_scans": self.max_scans, "threads": self.threads, "ants": self.ants.to_dict(),
            "overrides": self.overrides, "teacher": self.teacher, "rrl": self.rrl,
        }


@dataclass
class MethodOutcome:
    """Everything measured for one method: child results, per-scan records and scores."""

    spec: MethodSpec
    status: str = "ok"
    train: dict | None = None
    segment: dict | None = None
    scans: list[dict] = field(default_factory=list)
    cases: list[CaseMetrics] = field(default_factory=list)


def split_cases(dataset: Path, atlas: str, max_scans: int | None) -> tuple[Case, list[Case]]:
    """The atlas case and the scans to train on and segment (sorted by name, at most ``max_scans``)."""
    cases = list_cases(dataset)
    by_name = {c.name: c for c in cases}
    if atlas not in by_name:
        raise InputError(f"No case {atlas!r} in {dataset}; available: {', '.join(by_name)}.")
    others = [c for c in cases if c.name != atlas]
    if max_scans is not None:
        if max_scans < 1:
            raise InputError(f"--max-scans must be at least 1 (got {max_scans}).")
        others = others[:max_scans]
    if not others:
        raise InputError(f"Dataset {dataset} holds only the atlas {atlas!r}; it needs at least one more labelled case.")
    return by_name[atlas], others


def atlas_label_ids(case: Case) -> list[int]:
    """The non-zero ids of the atlas label: the structures every method can produce and is scored on."""
    assert case.label is not None
    values = np.unique(sitk.GetArrayFromImage(read_label(case.label, "Atlas label")))
    return [int(v) for v in values if v != 0]


def child_env(threads: int | None) -> dict[str, str]:
    """Environment of a worker (the same interpreter, so the same installed engine), thread limits when asked."""
    env = dict(os.environ)
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
            env[name] = str(threads)
    return env


def run_child(job: dict, folder: Path, env: dict[str, str]) -> dict:
    """Run one worker job in ``folder`` (reusing an identical finished one); return its result.

    The paths listed in ``job["clean"]`` (the phase's outputs) are removed before a fresh run.

    Raises :class:`RuntimeError` with the worker's last stderr line when it fails.
    """
    phase = job["phase"]
    job_path, result_path = folder / f"job_{phase}.json", folder / f"result_{phase}.json"
    job = job | {"result": str(result_path)}
    if job_path.is_file() and result_path.is_file() and json.loads(job_path.read_text()) == job:
        return json.loads(result_path.read_text())
    for stale in [result_path, *(Path(p) for p in job["clean"])]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.is_file():
            stale.unlink()
    write_json_atomic(job_path, job)
    with open(folder / f"{phase}.log", "w", encoding="utf-8") as log:
        completed = subprocess.run(
            [sys.executable, "-m", "RRLMedSAMLib.bench.worker", str(job_path)],
            stdout=log, stderr=subprocess.PIPE, text=True, env=env, cwd=str(folder), check=False,
        )
        log.write(completed.stderr)
    if completed.returncode != 0 or not result_path.is_file():
        lines = [line for line in completed.stderr.splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"worker exited with code {completed.returncode}")
    return json.loads(result_path.read_text())


def _scan_entries(scans: list[Case]) -> list[dict]:
    return [{"name": c.name, "image": str(c.image.resolve())} for c in scans]


def _with_inherited_stages(train: dict, finished: dict[str, MethodOutcome]) -> dict:
    """``train`` with the stages it copied from an earlier run counted at that run's measured times.

    ``train_s`` then is what a training from scratch costs (the stage results are identical);
    ``own_train_s`` is what this run itself took.
    """
    shared = train.get("shared")
    source = finished.get(shared["source"]) if shared else None
    if source is None or source.train is None:
        return train
    inherited = {stage: source.train.get("stages_s", {}).get(stage, 0.0) for stage in shared["stages"]}
    return train | {"own_train_s": train["train_s"], "train_s": round(train["train_s"] + sum(inherited.values()), 3),
                    "stages_s": train.get("stages_s", {}) | inherited}


def _run_method(spec: MethodSpec, settings: BenchSettings, atlas: Case, scans: list[Case], folder: Path,
                env: dict[str, str], finished: dict[str, MethodOutcome]) -> MethodOutcome:
    """Run one classical or engine method; ``finished`` maps run folders of earlier engine methods to their outcomes."""
    outcome = MethodOutcome(spec)
    assert atlas.label is not None
    entries, run_dir, pred = _scan_entries(scans), str(folder / "run"), str(folder / "pred")
    common = {"method": spec.name, "atlas_image": str(atlas.image.resolve()), "atlas_label": str(atlas.label.resolve()),
              "seed": settings.seed, "threads": settings.threads, "device": settings.device}
    if spec.kind == "classical":
        preset = get_preset(settings.preset, **settings.overrides)
        ants = settings.ants
        if spec.ants_transform:
            ants = dataclasses.replace(ants, type_of_transform=spec.ants_transform)
        job = common | {"phase": "classical", "scans": entries, "out_dir": pred, "clean": [pred],
                        "grid_size": preset.grid_size, "affine_iterations": preset.affine_iterations,
                        "ants": ants.to_dict(), "device": "cpu"}
        outcome.segment = run_child(job, folder, env)
    else:
        train_job = common | {
            "phase": "train", "images": [e["image"] for e in entries], "run_dir": run_dir, "clean": [run_dir, pred],
            "preset": settings.preset, "overrides": settings.overrides, "teacher": settings.teacher,
            "rrl": settings.rrl, "labels_table": str((settings.dataset / "labels.csv").resolve()),
            "share_stages_from": sorted(finished) if settings.share_stages else [],
        }
        outcome.train = _with_inherited_stages(run_child(train_job, folder, env), finished)
        segment_job = common | {"phase": "segment", "run_dir": run_dir, "scans": entries, "out_dir": pred,
                                "clean": [pred], "keep_fields": settings.keep_fields,
                                "trained_by_pid": outcome.train.get("pid")}
        outcome.segment = run_child(segment_job, folder, env)
    outcome.scans = outcome.segment["scans"]
    return outcome


def _derive(spec: MethodSpec, source: MethodOutcome) -> MethodOutcome:
    """A derived method shares its source's runs; its predictions are the warped atlas labels."""
    return MethodOutcome(spec, source.status, source.train, source.segment, list(source.scans))


def _prediction(folder: Path, spec: MethodSpec, name: str) -> Path:
    file = "warped_atlas_label.nii.gz" if spec.kind == "derived" else "segmentation.nii.gz"
    return folder / "pred" / name / file


def run_benchmark(settings: BenchSettings, log: Callable[[str], None] = print) -> list[MethodOutcome]:
    """Run every method of ``settings`` on its dataset and score them; returns one outcome per method."""
    specs = resolve_methods(settings.methods)
    atlas, scans = split_cases(settings.dataset, settings.atlas, settings.max_scans)
    read_dataset_table(settings.dataset)
    label_ids = atlas_label_ids(atlas)
    out = ensure_writable_folder(settings.out, "Benchmark output folder")
    env = child_env(settings.threads)
    truths = {c.name: c.label for c in scans}
    outcomes: dict[str, MethodOutcome] = {}
    finished_runs: dict[str, MethodOutcome] = {}
    for spec in specs:
        folder = out / "methods" / (spec.source if spec.kind == "derived" else spec.name)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        log(f"[bench] {spec.name}: {spec.description}")
        if spec.kind == "derived":
            outcome = _derive(spec, outcomes[spec.source])
        else:
            try:
                outcome = _run_method(spec, settings, atlas, scans, folder, env, finished_runs)
            except RuntimeError as error:
                outcome = MethodOutcome(spec, status=f"failed: {error}")
        if outcome.status == "ok":
            pairs = [(s["name"], _prediction(folder, spec, s["name"]), truths[s["name"]]) for s in outcome.scans]
            outcome.cases = evaluate_pairs(pairs, labels=label_ids)
        outcomes[spec.name] = outcome
        if spec.kind == "engine" and outcome.status == "ok":
            finished_runs[str((folder / "run").resolve())] = outcome
        dice = np.nanmean([c.mean_dice for c in outcome.cases]) if outcome.cases else float("nan")
        log(f"[bench] {spec.name}: {outcome.status}, mean Dice {dice:.3f}, {time.monotonic() - start:.1f} s")
    return list(outcomes.values())
