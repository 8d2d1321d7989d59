"""Start a training from the stages a finished run has in common with it: a benchmark accelerator.

    python -m RRLMedSAMLib.bench.stage_sharing --from RUN_DIR [RUN_DIR ...] -- TRAIN OPTIONS

trains as ``rrlmedsam train TRAIN OPTIONS`` would, after copying into the new run folder the
stages it shares with the best of the finished ``RUN_DIR``s (:func:`sharing_hook`, given to
:class:`RRLMedSAMLib.training.trainer.TrainRequest` as ``prepare_run``). ``rrlmedsam bench`` uses
the same hook between the methods of one benchmark.

Every step draws its randomness from ``(seed, stage, step)`` alone and the networks are built in
the same order by every method of a family, so two runs on the same inputs and settings compute
identical results for the stages they share. Copying the source run's caches and checkpoints of
those stages is then the same as running them, minus the time. What two runs share:

* ``prealign`` (the prepared working-grid data): same inputs, seed, working grid size, encoder
  depth (grid divisor) and affine iterations - any two methods.
* ``registration``, ``medical_pretrain``, ``pseudo_labels``: both in the RRL family with the
  same preset, RRL settings and atlas label ids (distillation on or off: those stages do not use it).
* ``teacher_features``, ``distill_stage1``: both RRL runs distil, from the same teacher.
* ``registration`` of the plain family: both plain, with presets that differ at most in what only
  later stages or ``segment`` read (e.g. ``atlas_prior``, ``fine_pseudo_labels``); ``pseudo_labels``
  too when they also agree on what the pseudo labels read.

The stage that makes an ablation differ (``joint_stage2``, the segmentation head) always runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import atomic_path, write_json_atomic
from RRLMedSAMLib.run.folder import RunFolder, read_config
from RRLMedSAMLib.run.methods import get_method

#: Stage order of the RRL family up to (not including) stage 2.
_RRL_PREFIX = ("prealign", "teacher_features", "distill_stage1", "registration", "medical_pretrain", "pseudo_labels")


#: Preset fields the registration network's training does not read: the pseudo labels', the
#: segmentation network's and what only ``segment`` runs (the fine registration stage).
_AFTER_REGISTRATION = frozenset({
    "instance_optimization_steps", "fine_pseudo_labels", "atlas_prior", "segmentation_steps", "segmentation_patch",
    "checkpoint_every", "refinement_grid_size", "refinement_steps", "refinement_coarse_steps",
    "registration_budget_s_cpu", "registration_budget_s_gpu", "fine_levels", "fine_smoothness_weight",
    "fine_control_spacing", "fine_learning_rate", "fine_ncc_weight", "diffeomorphic_fine", "fine_grid_size",
    "fine_grid_steps", "fine_grid_smoothness_weight", "fine_grid_ncc_kernel", "fine_grid_folding_weight",
})
#: Of those, the ones the pseudo labels read when they are made on the working grid alone (with
#: ``fine_pseudo_labels`` they read the fine stage's settings too).
_PSEUDO_LABEL_FIELDS = frozenset({"instance_optimization_steps", "fine_pseudo_labels"})
_SEGMENTATION_FIELDS = frozenset({"atlas_prior", "segmentation_steps", "segmentation_patch", "checkpoint_every"})


def _plain_shared(a: dict, b: dict) -> tuple[str, ...]:
    """The stages two plain runs with presets ``a`` and ``b`` share (the first always: same grid and affine)."""
    def without(preset: dict, fields: frozenset[str]) -> dict:
        return {key: value for key, value in preset.items() if key not in fields}

    if without(a, _AFTER_REGISTRATION) != without(b, _AFTER_REGISTRATION):
        return ("prealign",)
    later = _SEGMENTATION_FIELDS if a.get("fine_pseudo_labels") else _AFTER_REGISTRATION - _PSEUDO_LABEL_FIELDS
    if without(a, later) != without(b, later):
        return ("prealign", "registration")
    return ("prealign", "registration", "pseudo_labels")


def _distils(config: dict) -> bool:
    return get_method(config.get("method", "plain")).distill and config.get("teacher", {}).get("name", "none") != "none"


def shareable_stages(source: dict, target: dict) -> tuple[str, ...]:
    """Stages (in run order) whose results the run configured by ``target`` can take from ``source``."""
    same = ("format_version", "engine_version", "inputs", "seed", "scan_names", "working_grid")
    if any(source.get(key) != target.get(key) for key in same):
        return ()
    a, b = source["preset"], target["preset"]
    if (a["grid_size"], a["affine_iterations"], len(a["channels"])) != (b["grid_size"], b["affine_iterations"], len(b["channels"])):
        return ()
    families = {get_method(config.get("method", "plain")).family for config in (source, target)}
    if families == {"plain"} and source["label_ids"] == target["label_ids"]:
        return _plain_shared(a, b)
    if families != {"rrl"} or a != b or source.get("rrl") != target.get("rrl") or source["label_ids"] != target["label_ids"]:
        return ("prealign",)
    distil = _distils(source) and _distils(target) and source.get("teacher") == target.get("teacher")
    return tuple(s for s in _RRL_PREFIX if distil or s not in ("teacher_features", "distill_stage1"))


def _stage_files(run: RunFolder, stage: str) -> list[Path]:
    """The files holding the result of ``stage`` in ``run`` (relative layout is the same in every run)."""
    if stage == "prealign":
        return [run.prealignment, run.prepared]
    if stage == "pseudo_labels":
        return [run.pseudo_labels]
    if stage == "teacher_features":
        folder = run.root / "cache" / "teacher"
        return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return [run.checkpoint(stage)]


def _copy_atomically(source: Path, target: Path) -> None:
    with atomic_path(target) as temp:
        shutil.copyfile(source, temp)


def read_share_sources(paths: Sequence[str | Path]) -> list[tuple[RunFolder, dict]]:
    """The finished run folders to share from, with their configurations (checked up front)."""
    sources = []
    for path in paths:
        source = RunFolder(Path(path).resolve())
        try:
            sources.append((source, read_config(source)))
        except InputError as error:
            raise InputError(f"stage sharing: {error}") from None
    return sources


def reuse_shared_stages(sources: Sequence[tuple[RunFolder, dict]], run: RunFolder, config: dict) -> dict | None:
    """Copy into ``run`` (configured by ``config``) the finished shared stages of the best of ``sources``.

    The source sharing the most stages wins; its stages are copied in order until one has no result
    yet. Writes ``shared_stages.json`` (source, method, stages) and returns its content, or ``None``
    when nothing could be shared.
    """
    config = json.loads(json.dumps(config))  # as stored: tuples become lists, like the sources'
    best: tuple[RunFolder, dict, tuple[str, ...]] | None = None
    for source, source_config in sources:
        if source.root == run.root.resolve():
            continue
        stages = shareable_stages(source_config, config)
        if stages and (best is None or len(stages) > len(best[2])):
            best = (source, source_config, stages)
    if best is None:
        return None
    source, source_config, stages = best
    copied = []
    for stage in stages:
        files = _stage_files(source, stage)
        if not files or not all(f.is_file() for f in files):
            break
        for file in files:
            _copy_atomically(file, run.root / file.relative_to(source.root))
        copied.append(stage)
    if not copied:
        return None
    record = {"source": str(source.root), "source_method": source_config.get("method", "plain"), "stages": copied}
    write_json_atomic(run.shared_stages, record)
    return record


def sharing_hook(paths: Sequence[str | Path]) -> Callable[[RunFolder, dict], None]:
    """A ``TrainRequest.prepare_run`` that copies the stages shared with the best of the runs ``paths``."""
    sources = read_share_sources(paths)

    def share(run: RunFolder, config: dict) -> None:
        shared = reuse_shared_stages(sources, run, config)
        if shared:
            print(f"Reusing {', '.join(shared['stages'])} of {shared['source']} ({shared['source_method']}).", flush=True)

    return share


def main(argv: list[str] | None = None) -> int:
    """``--from RUN_DIR ... -- TRAIN OPTIONS``: train with the shared stages copied first."""
    from RRLMedSAMLib.cli import main as cli_main
    from RRLMedSAMLib.commands import train as train_command

    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m RRLMedSAMLib.bench.stage_sharing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="sources", nargs="+", type=Path, required=True, metavar="RUN_DIR")
    sources = parser.parse_args(argv[:split]).sources

    def run_shared(args: argparse.Namespace) -> int:
        request = train_command.train_request(args)
        request.prepare_run = sharing_hook(sources)
        train_command.train(request)
        print(f"Training finished: {args.out}")
        return 0

    return cli_main(["train", *argv[split + 1:]], handler=run_shared)


if __name__ == "__main__":
    raise SystemExit(main())
