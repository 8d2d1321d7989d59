"""``report.md``: a short markdown report that embeds PNG figures and the Dice table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.metrics.evaluation import SCORING_RULES, metrics_markdown
from RRLMedSAMLib.run.methods import METHODS

#: Where the user guide tells how to obtain and verify SAM weights.
SAM_WEIGHTS_DOC = "docs/user_guide.md, section 5 (Offline sites and SAM weights)"


def _components(method_name: str, distilled: bool) -> str:
    """What a method's training consisted of, from its flags (DSKD only when it really ran)."""
    method = METHODS.get(method_name)
    if method is None or method.family != "rrl":
        return ""
    parts = ["DSKD from the SAM teacher"] if distilled else []
    parts += ["medical encoder"] + (["mutual-EMA"] if method.ema else []) + (["auto-prompting decoder"] if method.prompt else [])
    return ", ".join(parts)


def method_statement(card: dict) -> str:
    """One markdown line saying what the model card's training ran, and with which SAM teacher.

    A run whose method distils from SAM but had no teacher says plainly that it trained without SAM
    distillation and why; a run with a random teacher says it is not SAM weights (the teacher label).
    """
    name = str(card.get("method"))
    teacher = card.get("teacher") or {"name": "none", "reason": "not recorded"}
    method = METHODS.get(name)
    if teacher.get("name") == "none":
        if method is not None and not method.uses_teacher:
            return f"Method: **{name}** ({card.get('method_summary', method.summary)}); it uses no SAM teacher."
        components = _components(name, distilled=False)
        return (f"Method: **{name}** — trained **without SAM distillation** ({teacher.get('reason')}; to add it, see "
                f"{SAM_WEIGHTS_DOC})" + (f"; what ran: {components}." if components else "."))
    components = _components(name, distilled=True) or card.get("method_summary", "")
    return (f"Method: **{name}** ({components}) with SAM teacher {teacher.get('label')} ({teacher.get('name')}, "
            f"{teacher.get('parameters')} parameters, slices of {teacher.get('slice_size')} px).")


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
