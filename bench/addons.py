"""Does each add-on earn its default? On/off on held-out scans, through the real command line.

    python bench/addons.py --dataset DATASET_DIR --atlas NAME --selection A B ... --out DIR \
        [--preset fast] [--method plain] [--ensemble 5] [--device cpu]

One training of ``--method`` (the atlas and every other scan of the dataset, as a user trains,
with ``--volume-calibration on`` so that the calibration can be measured), plus one without the
atlas prior that copies every stage it shares with it (:mod:`RRLMedSAMLib.bench.stage_sharing`);
the fine-grid pass is switched off at ``segment`` (``--refinement-steps 0``) or replaced by the
MIND-SSC fine stage (``--refinement-steps 25``). Then ``segment`` of the held-out scans
(every scan that is neither the atlas nor a ``--selection`` scan, i.e. that chose no setting) once
with every add-on on (``all-on``) and once per add-on switched off, and ``evaluate`` of each.
Writes ``per_scan.csv`` (each scan's mean Dice per variant) and ``summary.md``: per add-on, its
current default, the held-out mean with it on and off, the paired change, the worst scan's change
and how many scans it made better or worse.
Every step is skipped when its output exists, so a killed run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from RRLMedSAMLib.bench.atlas_choices import TIE
from RRLMedSAMLib.bench.tables import to_csv
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.run.presets import FINE_STAGE_STEPS, PRESETS


@dataclass(frozen=True)
class Variant:
    """One ``segment`` of the held-out scans: which training, which extra options."""

    name: str
    run: str
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddOn:
    """An add-on, its default state and the variants that have it on and off."""

    name: str
    default: str
    on: str
    off: str


#: ``segment`` options with every add-on on (the ensemble aside: it is measured as its own variant).
ALL_ON = ("--volume-calibration", "on", "--label-smoothing-mm", "auto", "--registration-ensemble", "1")


def variants(ensemble: int) -> list[Variant]:
    return [
        Variant("all-on", "default", ALL_ON),
        Variant("no-label-smoothing", "default", (*ALL_ON, "--label-smoothing-mm", "0")),
        Variant("no-volume-calibration", "default", (*ALL_ON, "--volume-calibration", "off")),
        Variant(f"ensemble-{ensemble}", "default", (*ALL_ON, "--registration-ensemble", str(ensemble))),
        Variant("no-refinement", "default", (*ALL_ON, "--refinement-steps", "0")),
        Variant("fine-stage", "default", (*ALL_ON, "--refinement-steps", str(FINE_STAGE_STEPS))),
        Variant("no-atlas-prior", "no-atlas-prior", ALL_ON),
    ]


def add_ons(ensemble: int) -> list[AddOn]:
    """Each add-on with its current default (``SegmentOptions`` and the presets) and its on/off variants."""
    defaults = SegmentOptions()
    state = {True: "on", False: "off"}
    return [
        AddOn("volume calibration", state[defaults.volume_calibration], "all-on", "no-volume-calibration"),
        AddOn("label smoothing (auto)", state[defaults.label_smoothing_mm != 0], "all-on", "no-label-smoothing"),
        AddOn("fine-grid NCC pass", state[PRESETS["fast"].fine_grid_steps > 0], "all-on", "no-refinement"),
        AddOn("MIND-SSC fine stage instead of the fine-grid pass", state[PRESETS["fast"].refinement_steps > 0],
              "fine-stage", "all-on"),
        AddOn("atlas prior", state[PRESETS["fast"].atlas_prior], "all-on", "no-atlas-prior"),
        AddOn(f"registration ensemble ({ensemble} members)", state[defaults.registration_ensemble > 1],
              f"ensemble-{ensemble}", "all-on"),
    ]


def engine(log: Path, *args: str, module: str = "RRLMedSAMLib") -> None:
    """``python -m MODULE ARGS`` (the engine's command line); its output goes to ``log``; exit on failure with its last lines."""
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ python -m {module} {' '.join(args)}\n")
        handle.flush()
        result = subprocess.run([sys.executable, "-m", module, *args], stdout=handle, stderr=subprocess.PIPE, text=True)
        handle.write(result.stderr + f"# {time.monotonic() - start:.0f} s, exit {result.returncode}\n")
    if result.returncode != 0:
        raise SystemExit(f"rrlmedsam {args[0]} failed (see {log}):\n{result.stderr[-2000:]}")


def train_runs(dataset: Path, atlas: str, out: Path, preset: str, method: str, device: str, needed: set[str]) -> dict[str, Path]:
    """The default training, and the one without the atlas prior when ``needed`` names it."""
    images = sorted(p for p in (dataset / "images").glob("*.nii.gz") if p.name != f"{atlas}.nii.gz")
    base = ["train", "--atlas-image", str(dataset / "images" / f"{atlas}.nii.gz"),
            "--atlas-label", str(dataset / "labels" / f"{atlas}.nii.gz"), "--images", *map(str, images),
            "--preset", preset, "--method", method, "--device", device, "--seed", "0", "--volume-calibration", "on"]
    if (dataset / "labels.csv").is_file():
        base += ["--atlas-labels-table", str(dataset / "labels.csv")]
    runs = {name: out / "runs" / name for name in ("default", "no-atlas-prior")}
    for name, run in runs.items():
        if name not in needed | {"default"} or (run / "model.safetensors").is_file():
            continue
        if name == "default":
            engine(out / "commands.log", *base, "--out", str(run))
        else:
            engine(out / "commands.log", "--from", str(runs["default"]), "--", *base[1:], "--out", str(run),
                   "--set", "atlas_prior=off", module="RRLMedSAMLib.bench.stage_sharing")
    return runs


def case_name(path: Path) -> str:
    return path.name.removesuffix(".nii.gz")


def segment_and_score(variant: Variant, run: Path, scans: list[Path], truth: Path, out: Path, device: str) -> dict[str, float]:
    """Each held-out scan's mean Dice for ``variant``."""
    results, metrics = out / "segment" / variant.name, out / "metrics" / variant.name
    if not (metrics / "metrics.json").is_file():
        todo = [s for s in scans if not (results / case_name(s) / "qc.json").is_file()]
        if todo:
            engine(out / "commands.log", "segment", "--model", str(run), "--images", *map(str, todo), "--out", str(results),
                   "--device", device, "--overwrite", *variant.options)
        engine(out / "commands.log", "evaluate", "--pred", str(results), "--truth", str(truth), "--out", str(metrics))
    report = json.loads((metrics / "metrics.json").read_text())
    return {case["name"]: float(case["mean_dice"]) for case in report["cases"]}


def summary(scores: dict[str, dict[str, float]], ensemble: int, header: str) -> str:
    """Markdown: one line per add-on (held-out means on and off, paired change, worst scan, counts)."""
    cases = sorted(scores["all-on"])
    lines = [header, "", f"Held-out scans: {len(cases)}. Mean Dice per scan over the structures it has.", "",
             "| add-on | default | on | off | on − off | worst scan | better / worse |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for addon in add_ons(ensemble):
        if addon.on not in scores or addon.off not in scores:
            continue
        change = [scores[addon.on][c] - scores[addon.off][c] for c in cases]
        on, off = np.mean([scores[addon.on][c] for c in cases]), np.mean([scores[addon.off][c] for c in cases])
        lines.append(f"| {addon.name} | {addon.default} | {on:.4f} | {off:.4f} | {np.mean(change):+.4f} | {min(change):+.4f} | "
                     f"{sum(d > TIE for d in change)} / {sum(d < -TIE for d in change)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder (images/, labels/, labels.csv)")
    parser.add_argument("--atlas", required=True, help="the atlas case's name")
    parser.add_argument("--selection", nargs="*", default=[], help="scans any setting was chosen on (not reported)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--method", default="plain")
    parser.add_argument("--ensemble", type=int, default=5, help="members of the registration ensemble measured")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="segment only these variants (default: all; 'all-on' is always included)")
    args = parser.parse_args(argv)
    chosen = [v for v in variants(args.ensemble) if not args.variants or v.name in {"all-on", *args.variants}]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = train_runs(args.dataset, args.atlas, args.out, args.preset, args.method, args.device, {v.run for v in chosen})
    skipped = {args.atlas, *args.selection}
    scans = sorted(p for p in (args.dataset / "images").glob("*.nii.gz") if case_name(p) not in skipped)
    calibrated = (runs["default"] / "volume_calibration.json").is_file()
    scores = {}
    for variant in chosen:
        if variant.name == "no-volume-calibration" and not calibrated:
            continue  # the run has no calibration (more than 4 structures): nothing to switch off
        scores[variant.name] = segment_and_score(variant, runs[variant.run], scans, args.dataset / "labels", args.out, args.device)
    rows = [{"case": c, **{name: round(values[c], 5) for name, values in scores.items()}} for c in sorted(scores["all-on"])]
    write_text_atomic(args.out / "per_scan.csv", to_csv(rows))
    header = (f"Dataset {args.dataset.name}, atlas {args.atlas}, preset {args.preset}, method {args.method}; "
              f"selection scans (not reported): {', '.join(args.selection) or 'none'}.")
    table = summary(scores, args.ensemble, header)
    write_text_atomic(args.out / "summary.md", table)
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
