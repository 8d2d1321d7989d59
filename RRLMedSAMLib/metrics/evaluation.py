"""Evaluate predicted labelmaps against ground truth: pairing, per-case metrics, summary, files.

Scoring rules: see :data:`SCORING_RULES` (also written into ``metrics.md``).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic
from RRLMedSAMLib.io.label_table import LabelEntry, default_entry, looks_like_aseg
from RRLMedSAMLib.io.volumes import SUPPORTED_SUFFIXES, read_label, same_grid, volume_stem
from RRLMedSAMLib.metrics.overlap import dice_per_label, hd95_per_label, labels_in

#: How labels are scored; repeated in every ``metrics.md`` and ``metrics.json``.
SCORING_RULES = """\
- the labels scored in a case are the non-zero ids present in its truth (restricted to the label
  table's ids when a table is given explicitly); ids only in the prediction are listed as
  ``extra_labels`` and not scored;
- a truth label missing from the prediction scores Dice 0 and HD95 NaN (``null`` in JSON, empty in
  CSV); HD95 means skip NaN and the number of such labels is reported as ``missing``;
- per-label means are over the cases that contain the label; the overall mean is the mean over
  cases of each case's mean over its labels.
"""


@dataclass
class CaseMetrics:
    """Metrics of one case: Dice (0..1) and HD95 (mm, NaN when undefined) per label id."""

    name: str
    dice: dict[int, float]
    hd95: dict[int, float]
    extra_labels: list[int] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        """Mean Dice over the scored labels (NaN when none)."""
        return _nanmean(self.dice.values())

    @property
    def mean_hd95(self) -> float:
        """Mean HD95 (mm) over the scored labels that have one."""
        return _nanmean(self.hd95.values())


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_arrays(
    name: str, pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float], labels: Iterable[int] | None = None
) -> CaseMetrics:
    """Metrics of one case from ``(z, y, x)`` integer arrays; ``labels`` restricts the ids scored."""
    present = labels_in(truth)
    ids = present if labels is None else [i for i in present if i in set(labels)]
    extra = sorted(set(labels_in(pred)) - set(present))
    return CaseMetrics(name, dice_per_label(pred, truth, ids), hd95_per_label(pred, truth, ids, spacing_zyx), extra)


def evaluate_case(
    name: str, pred: sitk.Image, truth: sitk.Image, labels: Iterable[int] | None = None, what: str = ""
) -> CaseMetrics:
    """Metrics of one case from two SimpleITK labelmaps, which must share one grid."""
    if not same_grid(pred, truth):
        raise InputError(
            f"Prediction and truth{(' of ' + what) if what else ''} are on different grids (prediction size "
            f"{pred.GetSize()}, spacing {_fmt(pred.GetSpacing())}, origin {_fmt(pred.GetOrigin())}; truth size "
            f"{truth.GetSize()}, spacing {_fmt(truth.GetSpacing())}, origin {_fmt(truth.GetOrigin())}). Pass the truth "
            "of the same scan, or resample the prediction onto the truth's grid (nearest neighbour) first."
        )
    spacing = tuple(reversed(truth.GetSpacing()))
    return evaluate_arrays(name, sitk.GetArrayViewFromImage(pred), sitk.GetArrayViewFromImage(truth), spacing, labels)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _label_files(folder: Path) -> dict[str, Path]:
    return {
        volume_stem(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES) and not p.name.startswith(".")
    }


def _prediction_files(folder: Path, result_name: str = "segmentation") -> dict[str, Path]:
    """``<stem>.<ext>`` files and the segment command's ``<stem>/<result_name>.<ext>`` files."""
    found = _label_files(folder)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        candidates = [
            p for p in sub.iterdir()
            if p.is_file() and volume_stem(p) == result_name and p.name.lower().endswith(SUPPORTED_SUFFIXES)
        ]
        if candidates:
            found.setdefault(sub.name, sorted(candidates)[0])
    return found


def find_pairs(
    pred: str | os.PathLike, truth: str | os.PathLike, result_name: str = "segmentation"
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair predictions with truths; return ``([(name, pred_path, truth_path)], truth names with no prediction)``.

    In a segment output folder, ``result_name`` picks the file scored in each case folder
    (``segmentation``, or e.g. ``warped_atlas_label`` for the registration-only result).

    Two files form one case named after the truth's stem. Two folders pair by stem; a truth folder
    holding a ``labels/`` subfolder (the standard dataset layout) is read from there.
    """
    pred, truth = Path(pred), Path(truth)
    for path, what in ((pred, "Prediction"), (truth, "Truth")):
        if not path.exists():
            raise InputError(f"{what} path not found: {path}")
    if pred.is_file() and truth.is_file():
        return [(volume_stem(truth), pred, truth)], []
    if pred.is_dir() != truth.is_dir():
        raise InputError("Pass --pred and --truth both as files or both as folders.")
    if (truth / "labels").is_dir():
        truth = truth / "labels"
    truths, preds = _label_files(truth), _prediction_files(pred, result_name)
    if not truths:
        raise InputError(f"No label files (.nii.gz, .nrrd, .mha) in the truth folder {truth}.")
    pairs = [(name, preds[name], path) for name, path in truths.items() if name in preds]
    if not pairs:
        raise InputError(
            f"No prediction in {pred} matches a truth in {truth} by name (truth names: {', '.join(list(truths)[:5])}...). "
            "Name predictions <name>.nii.gz or <name>/segmentation.nii.gz."
        )
    return pairs, [name for name in truths if name not in preds]


def evaluate_pairs(
    pairs: Iterable[tuple[str, str | os.PathLike | sitk.Image, str | os.PathLike | sitk.Image]],
    labels: Iterable[int] | None = None,
) -> list[CaseMetrics]:
    """Evaluate ``(name, prediction, truth)`` triples given as file paths or SimpleITK images."""
    allowed = None if labels is None else list(labels)
    results = []
    for name, pred, truth in pairs:
        pred_image = pred if isinstance(pred, sitk.Image) else read_label(pred, "Prediction")
        truth_image = truth if isinstance(truth, sitk.Image) else read_label(truth, "Truth")
        results.append(evaluate_case(name, pred_image, truth_image, allowed, what=name))
    return results


def _names(cases: Sequence[CaseMetrics], table: Sequence[LabelEntry] | None) -> dict[int, str]:
    """Names from ``table``, else FreeSurfer names when all ids are aseg ids, else ``Label <id>``."""
    ids = sorted({i for c in cases for i in c.dice})
    aseg = looks_like_aseg(ids)
    return {i: default_entry(i, aseg).name for i in ids} | {e.id: e.name for e in table or []}


def summarize(cases: Sequence[CaseMetrics], table: Sequence[LabelEntry] | None = None) -> dict:
    """JSON-ready summary: per-case values, per-label means, overall means (NaN -> None)."""
    names = _names(cases, table)
    ids = sorted({i for c in cases for i in c.dice})
    per_label = []
    for i in ids:
        dices = [c.dice[i] for c in cases if i in c.dice]
        hds = [c.hd95[i] for c in cases if i in c.hd95]
        per_label.append({
            "id": i, "name": names[i], "cases": len(dices),
            "dice_mean": _json(_nanmean(dices)), "dice_std": _json(float(np.std(dices)) if dices else math.nan),
            "hd95_mean_mm": _json(_nanmean(hds)), "missing": sum(1 for v in hds if math.isnan(v)),
        })
    return {
        "cases": [
            {"name": c.name, "mean_dice": _json(c.mean_dice), "mean_hd95_mm": _json(c.mean_hd95),
             "dice": {str(k): _json(v) for k, v in c.dice.items()}, "hd95_mm": {str(k): _json(v) for k, v in c.hd95.items()},
             "extra_labels": c.extra_labels}
            for c in cases
        ],
        "labels": per_label,
        "mean_dice": _json(_nanmean(c.mean_dice for c in cases)),
        "mean_hd95_mm": _json(_nanmean(c.mean_hd95 for c in cases)),
        "rules": SCORING_RULES.strip(),
    }


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


def _num(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_markdown(summary: dict) -> str:
    """Markdown table: per-label mean Dice / HD95 and the overall mean."""
    lines = [
        "| label | name | cases | Dice (mean ± sd) | HD95 mm (mean) | missing |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in summary["labels"]:
        lines.append(
            f"| {row['id']} | {row['name']} | {row['cases']} | {_num(row['dice_mean'], 3)} ± {_num(row['dice_std'], 3)} "
            f"| {_num(row['hd95_mean_mm'], 2)} | {row['missing']} |"
        )
    lines.append(f"| **all** | **mean over cases** | {len(summary['cases'])} | **{_num(summary['mean_dice'], 3)}** "
                 f"| **{_num(summary['mean_hd95_mm'], 2)}** | |")
    return "\n".join(lines) + "\n"


def metrics_csv(cases: Sequence[CaseMetrics], table: Sequence[LabelEntry] | None = None) -> str:
    """CSV text with one row per case per label: ``case,label,name,dice,hd95_mm``."""
    names = _names(cases, table)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "label", "name", "dice", "hd95_mm"])
    for case in cases:
        for i, dice in case.dice.items():
            hd = case.hd95.get(i, math.nan)
            writer.writerow([case.name, i, names[i],
                             "" if math.isnan(dice) else f"{dice:.6f}", "" if math.isnan(hd) else f"{hd:.4f}"])
    return buffer.getvalue()


def write_metrics(
    cases: Sequence[CaseMetrics], out_dir: str | os.PathLike, table: Sequence[LabelEntry] | None = None,
    extra: dict | None = None,
) -> dict:
    """Write ``metrics.json``, ``metrics.csv`` and ``metrics.md`` into ``out_dir``; return the summary."""
    out = Path(out_dir)
    summary = summarize(cases, table) | (extra or {})
    write_json_atomic(out / "metrics.json", summary)
    write_text_atomic(out / "metrics.csv", metrics_csv(cases, table))
    write_text_atomic(
        out / "metrics.md", f"# Segmentation metrics\n\n{metrics_markdown(summary)}\nScoring rules:\n\n{summary['rules']}\n"
    )
    return summary
