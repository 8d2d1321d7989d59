"""``report.md``: a short markdown report that embeds PNG figures and the Dice table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.metrics.evaluation import SCORING_RULES, metrics_markdown


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def write_report(
    out_dir: str | os.PathLike,
    title: str,
    figures: Sequence[tuple[str, str | os.PathLike]] = (),
    summary: dict | None = None,
    notes: Sequence[str] = (),
    filename: str = "report.md",
) -> Path:
    """Write ``out_dir/filename`` and return its path.

    ``figures`` are ``(caption, png_path)`` pairs, linked relative to ``out_dir`` when inside it;
    ``summary`` is the dict of :func:`RRLMedSAMLib.metrics.summarize` (its per-label table and the
    overall mean are embedded with the scoring rules); ``notes`` are bullet lines (e.g. "real
    anatomy, synthetic contrast", data origin, timings).
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if notes:
        parts += [f"- {note}" for note in notes] + [""]
    if summary is not None:
        parts += ["## Segmentation metrics", "", metrics_markdown(summary)]
        for case in summary.get("cases", []):
            dice, hd = case.get("mean_dice"), case.get("mean_hd95_mm")
            parts.append(
                f"- {case['name']}: mean Dice {'n/a' if dice is None else f'{dice:.3f}'}, "
                f"mean HD95 {'n/a' if hd is None else f'{hd:.2f}'} mm"
            )
        parts += ["", "Scoring rules:", "", SCORING_RULES.strip(), ""]
    for caption, png in figures:
        parts += [f"## {caption}", "", f"![{caption}]({_relative(Path(png), folder)})", ""]
    path = folder / filename
    write_text_atomic(path, "\n".join(parts).rstrip() + "\n")
    return path
