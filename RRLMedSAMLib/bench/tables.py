"""Benchmark tables: per structure, per scan, per method, with ratios against ANTs SyN.

Ratios are computed within one benchmark run (same machine, same scans):

- ``dice_diff_vs_ref``: mean over the scans both methods segmented of (method's mean Dice minus
  the reference's mean Dice on that scan); positive means better than the reference;
- ``speed_ratio_vs_ref``: reference's segment seconds per scan / method's; above 1 means faster;
- ``total_time_ratio_vs_ref``: reference's total seconds (no training) / method's training plus
  segmentation of all scans; the honest number for a one-off job.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import numpy as np

from RRLMedSAMLib.bench.runner import MethodOutcome

METHOD_COLUMNS = (
    "method", "kind", "status", "scans", "mean_dice", "sd_dice", "mean_hd95_mm", "mean_folding_fraction",
    "train_s", "segment_s_per_scan", "peak_ram_train_mb", "peak_ram_segment_mb", "peak_gpu_train_mb",
    "peak_gpu_segment_mb", "parameters", "dice_diff_vs_ref", "speed_ratio_vs_ref", "total_time_ratio_vs_ref",
)


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else None


def dice_difference(method: dict[str, float], reference: dict[str, float]) -> float | None:
    """Paired mean Dice difference over the scans both have (``None`` when they share none)."""
    common = [n for n in method if n in reference and not math.isnan(method[n]) and not math.isnan(reference[n])]
    return float(np.mean([method[n] - reference[n] for n in common])) if common else None


def speed_ratio(reference_s: float | None, method_s: float | None) -> float | None:
    """``reference_s / method_s``: how many times faster the method is (``None`` if either is missing)."""
    if reference_s is None or method_s is None or method_s <= 0:
        return None
    return reference_s / method_s


def _total_s(row: dict) -> float | None:
    if row["segment_s_per_scan"] is None:
        return None
    return (row["train_s"] or 0.0) + row["segment_s_per_scan"] * row["scans"]


def _parameters(outcome: MethodOutcome) -> int | None:
    counts = (outcome.train or {}).get("parameters")
    if isinstance(counts, dict):
        return int(counts.get("total", sum(v for v in counts.values() if isinstance(v, (int, float)))))
    return None


def method_row(outcome: MethodOutcome) -> dict:
    """One method's summary row (ratio columns left empty; see :func:`method_table`)."""
    train, segment = outcome.train or {}, outcome.segment or {}
    dices = [c.mean_dice for c in outcome.cases]
    return {
        "method": outcome.spec.name, "kind": outcome.spec.kind, "status": outcome.status,
        "scans": len(outcome.scans), "mean_dice": _mean(dices),
        "sd_dice": float(np.nanstd(dices)) if dices else None,
        "mean_hd95_mm": _mean([c.mean_hd95 for c in outcome.cases]),
        "mean_folding_fraction": _mean([s.get("folding_fraction") for s in outcome.scans]),
        "train_s": train.get("train_s"), "segment_s_per_scan": _mean([s.get("segment_s") for s in outcome.scans]),
        "peak_ram_train_mb": train.get("peak_rss_mb"), "peak_ram_segment_mb": segment.get("peak_rss_mb"),
        "peak_gpu_train_mb": train.get("peak_gpu_mb"), "peak_gpu_segment_mb": segment.get("peak_gpu_mb"),
        "parameters": _parameters(outcome),
        "dice_diff_vs_ref": None, "speed_ratio_vs_ref": None, "total_time_ratio_vs_ref": None,
    }


def method_table(outcomes: Sequence[MethodOutcome], reference: str) -> list[dict]:
    """Summary rows of every method, with ratios against ``reference`` when it ran successfully."""
    rows = [method_row(o) for o in outcomes]
    per_scan = {o.spec.name: {c.name: c.mean_dice for c in o.cases} for o in outcomes}
    ref_row = next((r for r in rows if r["method"] == reference and r["status"] == "ok"), None)
    if ref_row is None:
        return rows
    for row in rows:
        if row["status"] != "ok":
            continue
        row["dice_diff_vs_ref"] = dice_difference(per_scan[row["method"]], per_scan[reference])
        row["speed_ratio_vs_ref"] = speed_ratio(ref_row["segment_s_per_scan"], row["segment_s_per_scan"])
        row["total_time_ratio_vs_ref"] = speed_ratio(_total_s(ref_row), _total_s(row))
    return rows


def scan_rows(outcomes: Sequence[MethodOutcome]) -> list[dict]:
    """One row per method and scan: mean Dice, mean HD95, folding fraction, segment seconds."""
    rows = []
    for outcome in outcomes:
        scores = {c.name: c for c in outcome.cases}
        for scan in outcome.scans:
            case = scores.get(scan["name"])
            rows.append({
                "method": outcome.spec.name, "case": scan["name"],
                "mean_dice": None if case is None else _mean([case.mean_dice]),
                "mean_hd95_mm": None if case is None else _mean([case.mean_hd95]),
                "folding_fraction": scan.get("folding_fraction"), "segment_s": scan.get("segment_s"),
            })
    return rows


def structure_rows(outcomes: Sequence[MethodOutcome], names: dict[int, str]) -> list[dict]:
    """One row per method, scan and structure: Dice and HD95 (mm)."""
    rows = []
    for outcome in outcomes:
        for case in outcome.cases:
            for label, dice in case.dice.items():
                rows.append({"method": outcome.spec.name, "case": case.name, "label": label,
                             "name": names.get(label, f"Label {label}"), "dice": _mean([dice]),
                             "hd95_mm": _mean([case.hd95.get(label, math.nan)])})
    return rows


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """CSV text of ``rows`` (``None`` -> empty cell, floats with 6 significant digits)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]
                         for c in columns])
    return buffer.getvalue()


def _cell(value: object, digits: int, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def markdown_table(rows: Sequence[dict], reference: str) -> str:
    """Markdown summary: accuracy, regularity, time, memory and ratios against ``reference``."""
    lines = [
        ("| method | Dice (mean ± sd) | HD95 mm | folding % | train s | segment s/scan | peak RAM train / segment MiB "
         f"| peak GPU MiB | parameters | ΔDice vs {reference} | speed × vs {reference} | total time × vs {reference} |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | {r['status']} |" + " |" * 11)
            continue
        folding = None if r["mean_folding_fraction"] is None else 100.0 * r["mean_folding_fraction"]
        gpu = "/".join(_cell(r[k], 0) for k in ("peak_gpu_train_mb", "peak_gpu_segment_mb"))
        lines.append(
            f"| {r['method']} | {_cell(r['mean_dice'], 3)} ± {_cell(r['sd_dice'], 3)} | {_cell(r['mean_hd95_mm'], 2)} "
            f"| {_cell(folding, 3)} | {_cell(r['train_s'], 0)} | {_cell(r['segment_s_per_scan'], 1)} "
            f"| {_cell(r['peak_ram_train_mb'], 0)} / {_cell(r['peak_ram_segment_mb'], 0)} | {gpu} "
            f"| {_cell(r['parameters'], 0)} | {_cell(r['dice_diff_vs_ref'], 3)} | {_cell(r['speed_ratio_vs_ref'], 2)} "
            f"| {_cell(r['total_time_ratio_vs_ref'], 2)} |"
        )
    return "\n".join(lines) + "\n"
