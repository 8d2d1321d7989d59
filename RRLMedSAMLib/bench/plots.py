"""Benchmark figures (PNG, matplotlib Agg through the object-oriented API, no pyplot)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from RRLMedSAMLib.io.atomic import atomic_path

DPI = 100


def _save(figure: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(figure)
    with atomic_path(path) as temp:
        figure.savefig(str(temp), format="png", dpi=DPI)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def dice_boxplot(structure_rows: Sequence[dict], path: str | os.PathLike, title: str) -> None:
    """Per-structure Dice box plots, one box per method within each structure (scans are the samples)."""
    methods = list(dict.fromkeys(r["method"] for r in structure_rows))
    structures = list(dict.fromkeys((r["label"], r["name"]) for r in structure_rows))
    structures.sort()
    width = 0.8 / max(len(methods), 1)
    figure = Figure(figsize=(max(8.0, 0.3 * len(structures) * max(len(methods), 2)), 5.5))
    ax = figure.add_subplot(1, 1, 1)
    for m, (method, color) in enumerate(zip(methods, _colors(len(methods)))):
        data, positions = [], []
        for s, (label, _) in enumerate(structures):
            values = [r["dice"] for r in structure_rows
                      if r["method"] == method and r["label"] == label and r["dice"] is not None]
            if values:
                data.append(values)
                positions.append(s + (m - (len(methods) - 1) / 2) * width)
        if not data:
            continue
        boxes = ax.boxplot(data, positions=positions, widths=width * 0.9, patch_artist=True, manage_ticks=False,
                           flierprops={"markersize": 2}, medianprops={"color": "black"})
        for patch in boxes["boxes"]:
            patch.set_facecolor(color)
        ax.plot([], [], color=color, linewidth=6, label=method)
    ax.set_xticks(range(len(structures)))
    ax.set_xticklabels([name for _, name in structures], rotation=75, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Dice")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(len(methods), 4), loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    figure.subplots_adjust(bottom=0.3, left=max(0.03, 0.6 / figure.get_figwidth()), right=0.99)
    _save(figure, path)


def dice_vs_time(method_rows: Sequence[dict], path: str | os.PathLike, title: str) -> None:
    """Mean Dice (± sd over scans) against segment seconds per scan, one point per method, log time axis."""
    rows = [r for r in method_rows if r["mean_dice"] is not None and r["segment_s_per_scan"]]
    figure = Figure(figsize=(7.0, 5.0))
    ax = figure.add_subplot(1, 1, 1)
    for row, color in zip(rows, _colors(len(rows))):
        ax.errorbar([row["segment_s_per_scan"]], [row["mean_dice"]], yerr=[row["sd_dice"] or 0.0], fmt="o",
                    color=color, capsize=3, label=row["method"])
        ax.annotate(row["method"], (row["segment_s_per_scan"], row["mean_dice"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.1)
    ax.set_xlabel("segment wall time per scan (s, log scale)")
    ax.set_ylabel("mean Dice over scans")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12)
    _save(figure, path)


def line_panels(
    x_values: Sequence[float], series: dict[str, dict[str, Sequence[float | None]]], x_label: str,
    panel_labels: dict[str, str], path: str | os.PathLike, title: str, log_y: bool = False,
) -> None:
    """One panel per measured quantity (``panel_labels``: key -> axis label), one line per method.

    ``series[method][key]`` holds one value per ``x_values`` entry (``None`` where not measured).
    """
    keys = list(panel_labels)
    figure = Figure(figsize=(5.0 * len(keys), 4.2))
    for k, key in enumerate(keys):
        ax = figure.add_subplot(1, len(keys), k + 1)
        for (method, values), color in zip(series.items(), _colors(len(series))):
            points = [(x, v[key]) for x, v in zip(x_values, _rows(values)) if v.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, "o-", color=color, label=method)
        ax.set_xlabel(x_label)
        ax.set_ylabel(panel_labels[key])
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.88, wspace=0.3)
    _save(figure, path)


def _rows(values: dict[str, Sequence[float | None]]) -> list[dict]:
    length = max((len(v) for v in values.values()), default=0)
    return [{key: (v[i] if i < len(v) else None) for key, v in values.items()} for i in range(length)]


def dice_by_structure_volume(structure_rows: Sequence[dict], path: str | os.PathLike, title: str) -> None:
    """Mean Dice per structure against the structure's atlas volume (mL, log axis), one line per method.

    ``structure_rows`` carry ``method``, ``atlas_volume_ml`` and ``mean_dice``; the log axis keeps
    the small structures, where registration methods differ most, apart from one another.
    """
    methods = list(dict.fromkeys(r["method"] for r in structure_rows))
    figure = Figure(figsize=(8.0, 5.0))
    ax = figure.add_subplot(1, 1, 1)
    markers = "os^DvP*X"  # distinct markers keep methods with equal scores apart
    for m, (method, color) in enumerate(zip(methods, _colors(len(methods)))):
        points = sorted((r["atlas_volume_ml"], r["mean_dice"]) for r in structure_rows
                        if r["method"] == method and r["mean_dice"] is not None and (r["atlas_volume_ml"] or 0) > 0)
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, "-", marker=markers[m % len(markers)], color=color, label=method, markersize=5,
                    linewidth=1, alpha=0.8, markerfacecolor="none" if m % 2 else color)
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("structure volume, mean over the atlases (mL, log scale)")
    ax.set_ylabel("mean Dice over atlas–scan pairs")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    figure.subplots_adjust(left=0.1, right=0.97, bottom=0.12)
    _save(figure, path)
