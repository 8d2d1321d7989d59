"""Robustness to the atlas choice: pool several single-atlas benchmark runs of one dataset.

Each atlas has its own ``rrlmedsam bench`` results folder; every (atlas, scan) pair it scored
counts once, except pairs whose scan is a *selection* scan (one that settings were chosen on),
which are never reported. Per method this gives the mean Dice over pairs, the mean per atlas, the
worst pair, the fraction of pairs below affine-only (paired on the same pair; a difference within
:data:`TIE` is a tie, not "below"), folding and time; per structure, the mean Dice beside the
structure's mean volume in the atlases. The script is ``bench/atlas_choices.py``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from RRLMedSAMLib.io.volumes import read_label
from RRLMedSAMLib.registration.volume_calibration import label_volumes_mm3

#: Dice differences smaller than this are ties (not "below affine").
TIE = 5e-4
#: The method every pair is compared with.
AFFINE = "affine"


@dataclass(frozen=True)
class Pair:
    """One method's result on one (atlas, scan) pair."""

    atlas: str
    scan: str
    method: str
    dice: float | None
    hd95_mm: float | None = None
    folding_fraction: float | None = None
    segment_s: float | None = None


def _number(value: object) -> float | None:
    """``value`` as a finite float, else ``None``."""
    if value is None or value == "":
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def read_atlas_run(folder: str | os.PathLike, atlas: str) -> tuple[list[Pair], list[dict], list[dict]]:
    """The pairs, per-structure rows (``atlas`` added) and method rows of one bench ``results.json``."""
    document = json.loads((Path(folder) / "results.json").read_text())
    recorded = document.get("settings", {}).get("atlas")
    if recorded != atlas:
        raise ValueError(f"{folder}/results.json is a run with atlas {recorded!r}, not {atlas!r}")
    pairs = [Pair(atlas, r["case"], r["method"], _number(r.get("mean_dice")), _number(r.get("mean_hd95_mm")),
                  _number(r.get("folding_fraction")), _number(r.get("segment_s"))) for r in document["per_scan"]]
    structures = [r | {"atlas": atlas} for r in document.get("per_structure", [])]
    return pairs, structures, document.get("methods", [])


def reported(rows: Iterable, selection: Iterable[str]) -> list:
    """The rows (pairs or structure rows) whose scan is neither their atlas nor a selection scan."""
    excluded = set(selection)
    out = []
    for row in rows:
        atlas, scan = (row.atlas, row.scan) if isinstance(row, Pair) else (row["atlas"], row["case"])
        if scan != atlas and scan not in excluded:
            out.append(row)
    return out


def below_affine(pairs: Sequence[Pair]) -> dict[tuple[str, str, str], bool]:
    """For each (method, atlas, scan) that affine also scored: is the method's Dice below affine's by more than :data:`TIE`?"""
    affine = {(p.atlas, p.scan): p.dice for p in pairs if p.method == AFFINE and p.dice is not None}
    return {(p.method, p.atlas, p.scan): p.dice < affine[(p.atlas, p.scan)] - TIE
            for p in pairs if p.dice is not None and (p.atlas, p.scan) in affine}


def method_summary(pairs: Sequence[Pair], atlases: Sequence[str], reference: str | None = None) -> list[dict]:
    """One row per method (first-seen order) over the reported ``pairs``.

    Keys: ``method``, ``pairs``, ``mean_dice``, ``sd_dice``, ``per_atlas`` (atlas -> mean Dice or
    ``None``), ``worst_dice``, ``worst_pair`` (``"atlas -> scan"``), ``below_affine`` and
    ``compared_with_affine`` (counts), ``below_affine_fraction``, ``dice_diff_vs_ref`` (paired
    mean difference against ``reference``), ``mean_folding_pct``, ``max_folding_pct``,
    ``segment_s_per_scan``.
    """
    below = below_affine(pairs)
    ref = {(p.atlas, p.scan): p.dice for p in pairs if p.method == reference and p.dice is not None}
    rows = []
    for method in dict.fromkeys(p.method for p in pairs):
        mine = [p for p in pairs if p.method == method]
        scored = [p for p in mine if p.dice is not None]
        worst = min(scored, key=lambda p: p.dice, default=None)  # type: ignore[arg-type, return-value]
        flags = [below[(method, p.atlas, p.scan)] for p in scored if (method, p.atlas, p.scan) in below]
        diffs = [p.dice - ref[(p.atlas, p.scan)] for p in scored if (p.atlas, p.scan) in ref]  # type: ignore[operator]
        folding = [100.0 * p.folding_fraction for p in mine if p.folding_fraction is not None]
        rows.append({
            "method": method, "pairs": len(scored),
            "mean_dice": _mean(p.dice for p in scored),
            "sd_dice": float(np.std([p.dice for p in scored])) if scored else None,
            "per_atlas": {a: _mean(p.dice for p in scored if p.atlas == a) for a in atlases},
            "worst_dice": None if worst is None else worst.dice,
            "worst_pair": None if worst is None else f"{worst.atlas} -> {worst.scan}",
            "below_affine": sum(flags), "compared_with_affine": len(flags),
            "below_affine_fraction": sum(flags) / len(flags) if flags else None,
            "dice_diff_vs_ref": _mean(diffs) if reference and method != reference else None,
            "mean_folding_pct": _mean(folding), "max_folding_pct": max(folding, default=None),
            "segment_s_per_scan": _mean(p.segment_s for p in mine),
        })
    return rows


def mean_train_s(method_rows: Mapping[str, Sequence[dict]]) -> dict[str, float]:
    """Mean training seconds per atlas run of each method that trains (``method_rows``: atlas -> rows)."""
    seconds: dict[str, list[float]] = {}
    for rows in method_rows.values():
        for row in rows:
            if row.get("train_s") is not None and row.get("status") == "ok":
                seconds.setdefault(row["method"], []).append(float(row["train_s"]))
    return {m: float(np.mean(v)) for m, v in seconds.items()}


def structure_volumes_ml(labels: Mapping[str, str | os.PathLike]) -> dict[int, float]:
    """Each label id's mean volume (mL) over the atlas label files ``labels`` (atlas -> path); absent counts as 0."""
    totals: dict[int, float] = {}
    for path in labels.values():
        for label, mm3 in label_volumes_mm3(read_label(path, "Atlas label")).items():
            totals[label] = totals.get(label, 0.0) + mm3 / 1000.0
    return {label: total / len(labels) for label, total in sorted(totals.items())}


def structure_summary(structure_rows: Sequence[dict], volumes_ml: Mapping[int, float]) -> list[dict]:
    """Per method and structure over reported rows: pairs, mean and worst Dice, mean atlas volume (mL).

    Rows are sorted by method (first-seen order), then by volume, smallest first.
    """
    grouped: dict[tuple[str, int], list[float]] = {}
    names: dict[int, str] = {}
    for row in structure_rows:
        label = int(row["label"])
        names[label] = str(row.get("name") or f"Label {label}")
        values = grouped.setdefault((row["method"], label), [])
        dice = _number(row.get("dice"))
        if dice is not None:
            values.append(dice)
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in structure_rows))}
    rows = [{"method": method, "label": label, "name": names[label], "atlas_volume_ml": volumes_ml.get(label),
             "pairs": len(values), "mean_dice": _mean(values), "worst_dice": min(values, default=None)}
            for (method, label), values in grouped.items()]
    rows.sort(key=lambda r: (order[r["method"]], r["atlas_volume_ml"] or 0.0, r["label"]))
    return rows


def pair_rows(pairs: Sequence[Pair]) -> list[dict]:
    """``per_pair.csv`` rows: each reported pair with affine's Dice on it and whether it falls below."""
    below = below_affine(pairs)
    affine = {(p.atlas, p.scan): p.dice for p in pairs if p.method == AFFINE}
    return [{"atlas": p.atlas, "scan": p.scan, "method": p.method, "dice": p.dice,
             "affine_dice": affine.get((p.atlas, p.scan)),
             "below_affine": None if (key := (p.method, p.atlas, p.scan)) not in below else int(below[key]),
             "hd95_mm": p.hd95_mm, "folding_fraction": p.folding_fraction, "segment_s": p.segment_s}
            for p in pairs]


def _cell(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def methods_markdown(rows: Sequence[dict], atlases: Sequence[str], train_s: Mapping[str, float],
                     reference: str | None) -> str:
    """The per-method table of the summary."""
    ref = reference or "reference"
    lines = [f"| method | pairs | mean Dice ± sd | mean per atlas ({' / '.join(atlases)}) | worst pair "
             f"| below affine | ΔDice vs {ref} | folding % mean / max | segment s/scan | train s/atlas |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        per_atlas = " / ".join(_cell(r["per_atlas"][a]) for a in atlases)
        worst = "–" if r["worst_pair"] is None else f"{r['worst_dice']:.3f} ({r['worst_pair']})"
        if r["method"] == AFFINE:
            below = "(itself)"
        elif r["below_affine_fraction"] is None:
            below = "–"
        else:
            below = f"{100 * r['below_affine_fraction']:.0f}% ({r['below_affine']}/{r['compared_with_affine']})"
        lines.append(
            f"| {r['method']} | {r['pairs']} | {_cell(r['mean_dice'])} ± {_cell(r['sd_dice'])} | {per_atlas} | {worst} "
            f"| {below} | {_cell(r['dice_diff_vs_ref'])} | {_cell(r['mean_folding_pct'])} / {_cell(r['max_folding_pct'])} "
            f"| {_cell(r['segment_s_per_scan'], 1)} | {_cell(train_s.get(r['method']), 0)} |")
    return "\n".join(lines) + "\n"


def structures_markdown(rows: Sequence[dict]) -> str:
    """Per-structure mean Dice, one column per method, structures smallest first."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_label: dict[int, dict] = {}
    for r in rows:
        entry = by_label.setdefault(r["label"], {"name": r["name"], "ml": r["atlas_volume_ml"]})
        entry[r["method"]] = r["mean_dice"]
    lines = ["| structure | id | atlas volume mL | " + " | ".join(methods) + " |",
             "| --- | ---: | ---: |" + " ---: |" * len(methods)]
    for label, e in sorted(by_label.items(), key=lambda item: (item[1]["ml"] or 0.0, item[0])):
        cells = " | ".join(_cell(e.get(m)) for m in methods)
        lines.append(f"| {e['name']} | {label} | {_cell(e['ml'], 2)} | {cells} |")
    return "\n".join(lines) + "\n"
