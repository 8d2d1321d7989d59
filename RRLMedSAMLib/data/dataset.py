"""Reader of the standard dataset layout used by benchmarks and written by the dataset builders::

    DATASET_DIR/images/<name>.nii.gz    scans (any format of ``SUPPORTED_SUFFIXES``)
    DATASET_DIR/labels/<name>.nii.gz    labelmaps, paired with images by file stem
    DATASET_DIR/labels.csv              id,name,r,g,b
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.label_table import LabelEntry, read_label_table
from RRLMedSAMLib.io.volumes import SUPPORTED_SUFFIXES, volume_stem


@dataclass(frozen=True)
class Case:
    """One subject: its name (file stem), image path and label path (``None`` if unlabelled)."""

    name: str
    image: Path
    label: Path | None


def _volumes(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        volume_stem(p): p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(SUPPORTED_SUFFIXES)
    }


def list_cases(root: str | os.PathLike, require_labels: bool = True) -> list[Case]:
    """Cases of a dataset folder sorted by name.

    Raises :class:`InputError` when ``images/`` holds no volume, when a label has no image, or (with
    ``require_labels``) when an image has no label.
    """
    root = Path(root)
    images, labels = _volumes(root / "images"), _volumes(root / "labels")
    if not images:
        raise InputError(f"No images in {root / 'images'}; a dataset folder holds images/, labels/ and labels.csv.")
    orphans = sorted(set(labels) - set(images))
    if orphans:
        raise InputError(f"Labels without an image in {root}: {', '.join(orphans)}. Names must match image names.")
    missing = sorted(set(images) - set(labels))
    if require_labels and missing:
        raise InputError(f"Images without a label in {root}: {', '.join(missing)}.")
    return [Case(name, path, labels.get(name)) for name, path in images.items()]


def read_dataset_table(root: str | os.PathLike) -> list[LabelEntry]:
    """The dataset's ``labels.csv`` entries (sorted by id)."""
    path = Path(root) / "labels.csv"
    if not path.is_file():
        raise InputError(f"Dataset {root} has no labels.csv (columns id,name,r,g,b).")
    return read_label_table(path)


def get_case(root: str | os.PathLike, name: str) -> Case:
    """The case called ``name``; :class:`InputError` listing the available names otherwise."""
    cases = {c.name: c for c in list_cases(root, require_labels=False)}
    if name not in cases:
        raise InputError(f"No case {name!r} in {root}; available: {', '.join(cases)}.")
    return cases[name]
