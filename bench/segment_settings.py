"""Compare registration settings at ``segment`` time on trained atlas runs, without training again.

    python bench/segment_settings.py --dataset DATASET_DIR --runs ATLAS_CHOICES_DIR --atlases A B ... \
        --scans S1 S2 ... --setting NAME [KEY=VALUE ...] [--setting ...] --out DIR [--device cpu]

``ATLAS_CHOICES_DIR`` is what ``bench/atlas_choices.py`` wrote: each atlas's trained ``plain``
model is ``ATLAS_CHOICES_DIR/atlas-<A>/methods/plain/run``. For every atlas and every named
setting, the model is copied (checkpoints left out) with the setting's preset values changed in
its ``config.json``, and the real ``python -m RRLMedSAMLib segment --label-smoothing-mm 0`` runs
on the scans (the atlas itself is skipped). The score of a pair is the mean Dice of the warped atlas
label over the labels present in the scan's truth; ``qc.json`` gives folding and registration
seconds. A setting with no ``KEY=VALUE`` is the run's own. Choose settings on selection scans
(``--scans`` = those), then run the chosen one and the run's own on the held-out scans.

Writes ``DIR/results.json`` after every (atlas, setting), so a killed comparison continues where
it stopped, and ``DIR/summary.md``. Exit 0; 1 when a ``segment`` failed (the rest is kept);
2 for bad arguments, with nothing written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.data.dataset import Case, list_cases
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic
from RRLMedSAMLib.metrics.evaluation import evaluate_case
from RRLMedSAMLib.run.set_options import parse_set_options


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder (images/, labels/)")
    parser.add_argument("--runs", required=True, type=Path, help="bench/atlas_choices.py output folder")
    parser.add_argument("--atlases", required=True, nargs="+", metavar="NAME", help="atlases whose runs to use")
    parser.add_argument("--scans", required=True, nargs="+", metavar="NAME", help="scans to segment")
    parser.add_argument("--setting", dest="settings", action="append", nargs="+", required=True,
                        metavar="NAME_OR_KEY=VALUE", help="a name, then the preset values it changes; repeatable")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--device", default="cpu", help="segment --device (default: cpu)")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, dict], dict[str, Case]]:
    """Each atlas's run folder, each setting's preset changes and the dataset's cases; :class:`InputError` for bad arguments."""
    cases = {case.name: case for case in list_cases(args.dataset)}
    unknown = sorted((set(args.atlases) | set(args.scans)) - set(cases))
    if unknown:
        raise InputError(f"No case {', '.join(unknown)} in {args.dataset}.")
    runs = {atlas: args.runs / f"atlas-{atlas}" / "methods" / "plain" / "run" for atlas in args.atlases}
    missing = [str(run) for run in runs.values() if not (run / "config.json").is_file()]
    if missing:
        raise InputError(f"No trained run at {', '.join(missing)}; run bench/atlas_choices.py with method plain first.")
    settings: dict[str, dict] = {}
    for name, *values in args.settings:
        if "=" in name or name in settings:
            raise InputError(f"Each --setting starts with a new name (got {name!r}).")
        changes, others = parse_set_options(values)
        if others:
            raise InputError(f"Setting {name}: {', '.join(others)} is a training setting, not a preset value.")
        settings[name] = changes
    return runs, settings, cases


def segment_with(run: Path, changes: dict, scans: list[Path], work: Path, device: str) -> Path:
    """Segment ``scans`` with a copy of ``run`` whose preset has ``changes``; the output folder."""
    model, out = work / "model", work / "segment"
    for folder in (model, out):
        if folder.exists():
            shutil.rmtree(folder)  # written by this script on an earlier, killed try
    shutil.copytree(run, model, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((model / "config.json").read_text())
    config["preset"].update(changes)
    write_json_atomic(model / "config.json", config)
    command = [sys.executable, "-m", "RRLMedSAMLib", "segment", "--model", str(model), "--images", *map(str, scans),
               "--out", str(out), "--device", device, "--label-smoothing-mm", "0"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    shutil.rmtree(model)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return out


def score(case: Case, result: Path) -> dict:
    """The warped atlas label's mean Dice on ``case`` (its ``segment`` folder ``result``), folding and registration seconds."""
    truth = sitk.ReadImage(str(case.label))
    warped = sitk.ReadImage(str(result / "warped_atlas_label.nii.gz"))
    dice = [value for value in evaluate_case(case.name, warped, truth).dice.values() if np.isfinite(value)]
    qc = json.loads((result / "qc.json").read_text())
    return {"dice": round(float(np.mean(dice)), 4) if dice else None, "folding": qc["folding_fraction"],
            "registration_s": qc["timings_s"]["registration_s"], "registration": qc["registration"]}


def summary(results: dict, atlases: list[str], settings: dict[str, dict]) -> str:
    """``summary.md``: per setting the mean over pairs, per atlas, the largest folding and the seconds."""
    lines = ["# Segment-time registration settings", "",
             "| setting | preset values | pairs | mean Dice | " + " / ".join(atlases) + " | folding max % | registration s/scan |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, changes in settings.items():
        rows = {atlas: results.get(f"{atlas}/{name}", {}) for atlas in atlases}
        pairs = [row for by_scan in rows.values() for row in by_scan.values() if row["dice"] is not None]
        if not pairs:
            continue
        per_atlas = " / ".join(f"{np.mean([r['dice'] for r in rows[a].values()]):.3f}" if rows[a] else "–" for a in atlases)
        values = ", ".join(f"{key}={value}" for key, value in changes.items()) or "the run's own"
        lines.append(f"| {name} | {values} | {len(pairs)} | "
                     f"{np.mean([r['dice'] for r in pairs]):.4f} | {per_atlas} | "
                     f"{100 * max(r['folding'] for r in pairs):.3f} | {np.mean([r['registration_s'] for r in pairs]):.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        runs, settings, cases = check(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    failed = False
    for atlas, run in runs.items():
        scans = [cases[scan] for scan in args.scans if scan != atlas]
        for name, changes in settings.items():
            key = f"{atlas}/{name}"
            if key in results:
                continue
            try:
                out = segment_with(run, changes, [case.image for case in scans], args.out / "work" / atlas / name,
                                   args.device)
            except RuntimeError as error:
                print(f"[segment-settings] {key}: segment failed:\n{error}", file=sys.stderr)
                failed = True
                continue
            results[key] = {case.name: score(case, out / case.name) for case in scans}
            write_json_atomic(results_path, results)
            mean = np.mean([row["dice"] for row in results[key].values() if row["dice"] is not None])
            print(f"[segment-settings] {key}: mean Dice {mean:.4f}", flush=True)
    write_text_atomic(args.out / "summary.md", summary(results, list(runs), settings))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
