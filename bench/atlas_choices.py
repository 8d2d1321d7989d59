"""Is the accuracy robust to the atlas choice? One benchmark per atlas, pooled over every atlas-scan pair.

    python bench/atlas_choices.py --dataset DATASET_DIR --atlases A B C D --selection S1 S2 ... --out DIR \
        [--methods affine ants-syn ants-synquick registration-only plain] [--preset fast] [--device cpu] \
        [--threads N] [--seed 0] [--teacher NAME] [--quick] [--set KEY=VALUE ...] [--pool-only]

For each atlas, the real ``python -m RRLMedSAMLib bench`` runs into ``DIR/atlas-<A>/`` (the atlas
against every other scan of the dataset; an atlas whose run finished with the same command is
skipped, so a killed run continues). Then every (atlas, scan) pair whose scan is neither that
atlas nor a ``--selection`` scan (a scan settings were chosen on) is pooled
(:mod:`RRLMedSAMLib.bench.atlas_choices`): per method the mean Dice, the mean per atlas, the worst
pair, the fraction of pairs below affine-only, folding and seconds per scan; per structure the mean
Dice beside the structure's mean atlas volume. ``affine`` is always run (the below-affine
comparison needs it). Writes ``DIR/summary.md``, ``per_pair.csv``, ``per_structure.csv`` and
``per_structure.png``; the summary names each atlas's bench command. ``--pool-only`` runs nothing
and pools the atlas folders already in ``DIR`` (runs made earlier, elsewhere, or with other
settings: their commands say which). Exit 0, 1 when a method or an atlas run failed or an atlas
has no results (the rest is still pooled), 2 for bad arguments (nothing written).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from RRLMedSAMLib import __version__
from RRLMedSAMLib.bench import atlas_choices as pool
from RRLMedSAMLib.bench.machine import describe_machine
from RRLMedSAMLib.bench.methods import REFERENCE_METHOD, resolve_methods
from RRLMedSAMLib.bench.plots import dice_by_structure_volume
from RRLMedSAMLib.bench.tables import to_csv
from RRLMedSAMLib.data.dataset import list_cases, read_dataset_table
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic
from RRLMedSAMLib.run.presets import PRESETS
from RRLMedSAMLib.run.set_options import parse_set_options

DEFAULT_METHODS = ("affine", "ants-syn", "ants-synquick", "registration-only", "plain")
#: The accuracy claim needs at least this many atlases; fewer is allowed (tests) but flagged.
CLAIM_ATLASES = 4
MARKER = "atlas_choices.json"
#: Flags the summary leaves out of an atlas's command (with their values): paths and the title.
PATH_FLAGS = ("--dataset", "--out", "--title")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, type=Path, help="dataset folder (images/, labels/, labels.csv)")
    parser.add_argument("--atlases", required=True, nargs="+", metavar="NAME", help="atlas cases (at least 2; 4 for the claim)")
    parser.add_argument("--selection", nargs="*", default=[], metavar="NAME",
                        help="scans any setting was chosen on: never reported")
    parser.add_argument("--out", required=True, type=Path, help="output folder (resumable)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD", default=list(DEFAULT_METHODS),
                        help=f"bench methods (default: {' '.join(DEFAULT_METHODS)}); affine is always added")
    parser.add_argument("--preset", choices=list(PRESETS), help="engine preset (bench default: fast; tiny with --quick)")
    parser.add_argument("--device", default="auto", help="engine device: auto, cpu, cuda (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads per method (bench --threads)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of every method (default: 0)")
    parser.add_argument("--teacher", help="SAM teacher of the SAM-guided methods (bench --teacher)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="engine training setting, as for 'bench --set'; repeatable")
    parser.add_argument("--quick", action="store_true", help="bench --quick: tiny preset, 2 scans per atlas (smoke run)")
    parser.add_argument("--pool-only", action="store_true",
                        help="run nothing: pool the atlas folders already in --out (each keeps the command it ran)")
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> tuple[list[str], dict[str, Path]]:
    """The methods to run and each atlas's label file; :class:`InputError` for bad arguments (nothing written)."""
    if not args.dataset.is_dir():
        raise InputError(f"Dataset folder not found: {args.dataset}.")
    cases = {c.name: c for c in list_cases(args.dataset)}
    read_dataset_table(args.dataset)
    if len(set(args.atlases)) < 2 or len(set(args.atlases)) != len(args.atlases):
        raise InputError(f"--atlases needs at least 2 different cases (got {' '.join(args.atlases)}).")
    unknown = [n for n in (*args.atlases, *args.selection) if n not in cases]
    if unknown:
        raise InputError(f"No case {', '.join(unknown)} in {args.dataset}; available: {', '.join(cases)}.")
    both = sorted(set(args.atlases) & set(args.selection))
    if both:
        raise InputError(f"{', '.join(both)} listed both as atlas and as selection scan; an atlas chose no setting.")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1 (got {args.threads}).")
    parse_set_options(args.settings)
    methods = list(dict.fromkeys(["affine", *args.methods]))
    resolve_methods(methods)
    return methods, {a: cases[a].label for a in args.atlases}  # type: ignore[misc]


def bench_command(args: argparse.Namespace, atlas: str, methods: list[str]) -> list[str]:
    """The ``rrlmedsam bench`` arguments of one atlas (``--out`` last)."""
    command = ["bench", "--dataset", str(args.dataset.resolve()), "--atlas", atlas, "--methods", *methods,
               "--device", args.device, "--seed", str(args.seed), "--title", f"{args.dataset.name} (atlas {atlas})"]
    for flag, value in (("--preset", args.preset), ("--threads", args.threads), ("--teacher", args.teacher)):
        if value is not None:
            command += [flag, str(value)]
    for setting in args.settings:
        command += ["--set", setting]
    if args.quick:
        command.append("--quick")
    return [*command, "--out", str((args.out / f"atlas-{atlas}").resolve())]


def run_atlas(args: argparse.Namespace, atlas: str, methods: list[str]) -> int:
    """Run (or skip, when finished with the same command) one atlas's benchmark; its exit code."""
    folder, command = args.out / f"atlas-{atlas}", bench_command(args, atlas, methods)
    marker = folder / MARKER
    if (folder / "results.json").is_file() and marker.is_file() and json.loads(marker.read_text()) == command:
        print(f"[atlas-choices] atlas {atlas}: finished earlier, skipped", flush=True)
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[atlas-choices] atlas {atlas}: python -m RRLMedSAMLib {' '.join(command)}", flush=True)
    start = time.monotonic()
    with open(folder / "bench.log", "w", encoding="utf-8") as log:
        code = subprocess.run([sys.executable, "-m", "RRLMedSAMLib", *command], stdout=log, stderr=subprocess.STDOUT,
                              check=False).returncode
    print(f"[atlas-choices] atlas {atlas}: exit {code} after {time.monotonic() - start:.0f} s "
          f"(log: {folder / 'bench.log'})", flush=True)
    if code == 0:
        write_json_atomic(marker, command)
    return code


def ants_settings(methods: list[dict], settings: dict) -> str:
    """What the summary says of the ANTs peers: their settings, or that none ran."""
    if not {row["method"] for row in methods} & {"ants-syn", "ants-synquick"}:
        return "no ANTs method ran"
    return (f"ants-syn settings `{json.dumps(settings.get('ants'))}` "
            "(ants-synquick: antspyx's fixed antsRegistrationSyNQuick[s] schedule)")


def summary(args: argparse.Namespace, methods: list[dict], structures: list[dict], train_s: dict[str, float],
            settings: dict, pairs: int, problems: list[str]) -> str:
    """``summary.md``: what ran where, the per-method and per-structure tables, and the definitions."""
    machine = describe_machine(str(settings.get("device", "cpu")))
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU used"
    lines = [
        f"# Atlas choices: {args.dataset.name}", "",
        f"Dataset `{args.dataset.name}`; {len(args.atlases)} atlases: {', '.join(f'`{a}`' for a in args.atlases)}; "
        "each atlas against every other scan of its run.",
        f"Selection scans (settings were chosen on them; no pair with one is reported): "
        f"{', '.join(f'`{s}`' for s in args.selection) or 'none'}. They stay unlabelled training scans of the "
        "engine methods, as a user's scans would.",
        f"Reported pairs: {pairs} (atlas -> scan). Preset `{settings.get('preset')}`, device "
        f"`{settings.get('device')}`, seed {settings.get('seed')}; {ants_settings(methods, settings)}.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM{gpu}; "
        f"torch {machine['torch']}, engine {__version__}.",
    ]
    if len(args.atlases) < CLAIM_ATLASES:
        lines.append(f"**Only {len(args.atlases)} atlases: the robustness claim needs at least {CLAIM_ATLASES}.**")
    if args.quick:
        lines.append("**--quick smoke run (tiny preset, 2 scans per atlas): the numbers mean nothing.**")
    lines += [f"- {p}" for p in problems]
    lines += ["", "## Atlas runs", "", *[f"- `{atlas}`: {command}" for atlas, command in atlas_commands(args).items()]]
    lines += ["", "## Per method", "", pool.methods_markdown(methods, args.atlases, train_s, REFERENCE_METHOD),
              "- Dice of a pair: mean over the atlas's structures; mean per atlas: over that atlas's pairs.",
              "- worst pair: the lowest Dice of any reported pair.",
              f"- below affine: pairs where the method's Dice is below affine-only's on the same pair by more than "
              f"{pool.TIE:g} (smaller differences are ties).",
              f"- ΔDice vs {REFERENCE_METHOD}: paired mean difference over the pairs both scored.",
              "- folding %: voxels of the atlas<->scan mapping with Jacobian determinant <= 0 (mean / max over pairs).",
              "- segment s/scan: one scan's wall time, model loading excluded; registration-only is read from the "
              "plain run (its times are that run's). train s/atlas: one training per atlas, mean over atlases.",
              "", "## Per structure (mean Dice over pairs; smallest structures first)", "",
              pool.structures_markdown(structures), "![Dice per structure by volume](per_structure.png)", ""]
    return "\n".join(lines)


def atlas_commands(args: argparse.Namespace) -> dict[str, str]:
    """Each atlas's finished bench command (without :data:`PATH_FLAGS`), in Markdown code."""
    commands = {}
    for atlas in args.atlases:
        marker = args.out / f"atlas-{atlas}" / MARKER
        if not marker.is_file():
            commands[atlas] = "not finished"
            continue
        command = json.loads(marker.read_text())
        kept = [word for index, word in enumerate(command)
                if word not in PATH_FLAGS and (index == 0 or command[index - 1] not in PATH_FLAGS)]
        commands[atlas] = f"`rrlmedsam {' '.join(kept)}`"
    return commands


def aggregate(args: argparse.Namespace, labels: dict[str, Path], codes: dict[str, int]) -> int:
    """Pool every atlas's results into ``args.out``; 1 when anything failed or is missing, else 0."""
    pairs, structure_rows, method_rows, problems, settings = [], [], {}, [], {}
    for atlas in args.atlases:
        folder = args.out / f"atlas-{atlas}"
        if not (folder / "results.json").is_file():
            ran = f"bench exit {codes[atlas]}" if atlas in codes else "not run here"
            problems.append(f"atlas `{atlas}`: no results ({ran}; see {folder / 'bench.log'})")
            continue
        found, structures, rows = pool.read_atlas_run(folder, atlas)
        pairs += found
        structure_rows += structures
        method_rows[atlas] = rows
        settings = settings or json.loads((folder / "results.json").read_text())["settings"]
        problems += [f"atlas `{atlas}`: {r['method']} {r['status']}" for r in rows if r["status"] != "ok"]
    if not pairs:
        print("atlas_choices: no atlas run produced results; see the bench.log files.", file=sys.stderr)
        return 1
    pairs = pool.reported(pairs, args.selection)
    structures = pool.structure_summary(pool.reported(structure_rows, args.selection),
                                        pool.structure_volumes_ml(labels))
    methods = pool.method_summary(pairs, args.atlases, REFERENCE_METHOD)
    write_text_atomic(args.out / "per_pair.csv", to_csv(pool.pair_rows(pairs)))
    write_text_atomic(args.out / "per_structure.csv", to_csv(structures))
    dice_by_structure_volume(structures, args.out / "per_structure.png",
                             f"{args.dataset.name}: Dice by structure volume ({len(args.atlases)} atlases)")
    text = summary(args, methods, structures, pool.mean_train_s(method_rows), settings,
                   len({(p.atlas, p.scan) for p in pairs}), problems)
    write_text_atomic(args.out / "summary.md", text)
    print(text)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        methods, labels = check(args)
    except InputError as error:
        print(f"atlas_choices: {error}", file=sys.stderr)
        return 2
    if args.pool_only:
        if not args.out.is_dir():
            print(f"atlas_choices: --pool-only needs the atlas folders in {args.out}, which does not exist.", file=sys.stderr)
            return 2
        return aggregate(args, labels, {})
    codes = {atlas: run_atlas(args, atlas, methods) for atlas in args.atlases}
    if 2 in codes.values():
        bad = [a for a, c in codes.items() if c == 2]
        print(f"atlas_choices: bench refused its input for atlas {', '.join(bad)}; see its bench.log.", file=sys.stderr)
        return 2
    return aggregate(args, labels, codes)


if __name__ == "__main__":
    raise SystemExit(main())
