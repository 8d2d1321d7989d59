"""Write a benchmark's results: tables (CSV, Markdown), ``results.json`` and the figures.

Everything written here is small and free of image data, so a results folder can be committed
(``docs/bench_results/<machine>/``) even when the scans themselves may not be redistributed.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

from RRLMedSAMLib import __version__
from RRLMedSAMLib.bench.methods import REFERENCE_METHOD
from RRLMedSAMLib.bench.plots import dice_boxplot, dice_vs_time
from RRLMedSAMLib.bench.runner import BenchSettings, MethodOutcome
from RRLMedSAMLib.bench.tables import METHOD_COLUMNS, markdown_table, method_table, scan_rows, structure_rows, to_csv
from RRLMedSAMLib.data.dataset import read_dataset_table
from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic

#: Files of a results folder, in the order the summary links them.
RESULT_FILES = ("summary.md", "results.json", "methods.csv", "per_scan.csv", "per_structure.csv",
                "dice_boxplot.png", "dice_vs_time.png")


def _timing_notes(outcomes: Sequence[MethodOutcome]) -> str:
    derived = [o.spec for o in outcomes if o.spec.kind == "derived"]
    notes = [
        "- segment s/scan: wall time of one scan from reading it to writing its results, model loading excluded;",
        "- peak RAM: the child process's own peak resident memory (getrusage), train and segment measured apart;",
        "- peak GPU: torch.cuda.max_memory_allocated in that process (– on CPU);",
        "- folding %: voxels of the atlas<->scan mapping with Jacobian determinant <= 0, mean over scans.",
    ]
    notes += [f"- {s.name} shares the run of {s.source} (its times, memory and parameters are that run's)."
              for s in derived]
    for outcome in outcomes:
        shared = (outcome.train or {}).get("shared")
        if shared and "own_train_s" in outcome.train:
            notes.append(
                f"- {outcome.spec.name} started from the identical {', '.join(shared['stages'])} of "
                f"{shared['source_method']}: train s counts them at that run's times (its own run took "
                f"{outcome.train['own_train_s']:.0f} s; its peak RAM is that of its own stages)."
            )
    return "\n".join(notes)


def summary_markdown(
    rows: Sequence[dict], settings: BenchSettings, machine: dict, scans: int, title: str,
) -> str:
    """The human-readable summary of one benchmark run."""
    gpu = f", GPU {machine['gpu']} ({machine.get('gpu_memory_gib')} GiB)" if machine.get("gpu") else ", no GPU used"
    lines = [
        f"# {title}",
        "",
        (f"Dataset `{Path(settings.dataset).name}`, atlas `{settings.atlas}`, {scans} scans (trained on and "
         f"segmented), preset `{settings.preset}`, device `{settings.device}`, seed {settings.seed}."),
        (f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']} GiB RAM{gpu}; "
         f"torch {machine['torch']}, engine {__version__}."),
        "",
        markdown_table(rows, REFERENCE_METHOD),
    ]
    return "\n".join(lines)


def write_results(
    outcomes: Sequence[MethodOutcome], settings: BenchSettings, machine: dict, out: str | os.PathLike,
    title: str | None = None,
) -> dict:
    """Write every result file into ``out``; return the JSON document."""
    out = Path(out)
    names = {e.id: e.name for e in read_dataset_table(settings.dataset)}
    rows = method_table(outcomes, REFERENCE_METHOD)
    per_scan, per_structure = scan_rows(outcomes), structure_rows(outcomes, names)
    scans = max((len(o.scans) for o in outcomes), default=0)
    title = title or f"Benchmark: {Path(settings.dataset).name}"
    document = {
        "title": title, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "engine_version": __version__, "settings": settings.to_dict(), "machine": machine,
        "reference_method": REFERENCE_METHOD, "methods": rows,
        "descriptions": {o.spec.name: o.spec.description for o in outcomes},
        "per_scan": per_scan, "per_structure": per_structure,
        "train_details": {o.spec.name: o.train for o in outcomes if o.train},
    }
    write_json_atomic(out / "results.json", document)
    write_text_atomic(out / "methods.csv", to_csv(rows, METHOD_COLUMNS))
    write_text_atomic(out / "per_scan.csv", to_csv(per_scan))
    write_text_atomic(out / "per_structure.csv", to_csv(per_structure))
    summary = summary_markdown(rows, settings, machine, scans, title) + "\n" + _timing_notes(outcomes) + "\n"
    if per_structure:
        dice_boxplot(per_structure, out / "dice_boxplot.png", f"{title}: Dice per structure")
        dice_vs_time([r for r in rows if r["status"] == "ok"], out / "dice_vs_time.png", f"{title}: Dice vs time")
        summary += "\n![Dice per structure](dice_boxplot.png)\n\n![Dice vs segment time](dice_vs_time.png)\n"
    write_text_atomic(out / "summary.md", summary)
    return document
