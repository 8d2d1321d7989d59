"""A tiny standard-layout dataset (atlas + two scans of the phantom of ``tiny_case``) for bench tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from tiny_case import LABEL_IDS, make_case

from RRLMedSAMLib.io.label_table import LabelEntry, write_label_table


def make_tiny_dataset(folder: Path) -> Path:
    """Write ``folder/images``, ``folder/labels`` and ``labels.csv`` (cases atlas, scan_a, scan_b)."""
    case = make_case(folder / "source")
    for name in ("atlas", "scan_a", "scan_b"):
        image = case["atlas_image" if name == "atlas" else name]
        label = case["atlas_label" if name == "atlas" else f"{name}_label"]
        for kind, path in (("images", image), ("labels", label)):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / kind / f"{name}.nii.gz")
    shutil.rmtree(folder / "source")
    entries = [LabelEntry(i, f"Structure {i}", (40 * n, 200 - 50 * n, 120)) for n, i in enumerate(LABEL_IDS)]
    write_label_table(entries, folder / "labels.csv")
    return folder
