"""Training data preparation: validate inputs, choose the working grid, pre-align every scan.

The result (all volumes on the working grid, intensities in [0, 1], and each scan's affine) is
cached in the run folder so that a resumed training does not redo it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.geometry.affine import PrealignmentError, affine_to_dict, prealign_to_atlas
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.io.file_hash import sha256_file
from RRLMedSAMLib.io.label_table import labels_to_classes
from RRLMedSAMLib.io.volumes import check_atlas_label, fit_label_to_image, read_label, read_scan, volume_stem
from RRLMedSAMLib.progress import ProgressReporter


@dataclass
class Atlas:
    """The validated atlas: image, its label on the image grid, and the ids present (sorted)."""

    image: sitk.Image
    label: sitk.Image
    label_ids: list[int]


@dataclass
class PreparedData:
    """Everything the networks train on, on the working grid (arrays are ``(D, H, W)``)."""

    grid: WorkingGrid
    label_ids: list[int]
    atlas_image: np.ndarray
    atlas_classes: np.ndarray
    scans: np.ndarray
    scan_names: list[str]
    affines: list[dict]

    @property
    def num_classes(self) -> int:
        """Background plus one class per atlas label id."""
        return len(self.label_ids) + 1


def read_atlas(image_path: str | os.PathLike, label_path: str | os.PathLike) -> Atlas:
    """Read and validate the atlas image and label (same grid, integer ids, not empty)."""
    image = read_scan(image_path, "Atlas image")
    label = fit_label_to_image(read_label(label_path, "Atlas label"), image, label_path)
    check_atlas_label(label, label_path)
    ids = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(label)) if v != 0]
    return Atlas(image, label, ids)


def check_scan_paths(paths: Sequence[str | os.PathLike]) -> None:
    """Reject an empty list and duplicate scan names (results are written per name)."""
    if not paths:
        raise InputError("No unlabelled scans given; pass at least one with --images.")
    names = [volume_stem(p) for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"Several scans share the name {duplicates[0]!r}; give every scan a distinct file name.")


def prepare_training_data(
    atlas: Atlas,
    scans: Sequence[sitk.Image],
    scan_names: Sequence[str],
    grid: WorkingGrid,
    affine_iterations: int,
    seed: int,
    progress: ProgressReporter,
) -> PreparedData:
    """Every (validated) scan pre-aligned to the atlas and resampled onto the working ``grid``."""
    atlas_image = normalize_intensity(resample_to_grid(atlas.image, grid))
    atlas_classes = labels_to_classes(resample_to_grid(atlas.label, grid, is_label=True), atlas.label_ids)
    progress.start_stage("prealign", len(scans), "affine pre-alignment of every scan to the atlas")
    volumes, affines = [], []
    for index, scan in enumerate(scans):
        try:
            transform = prealign_to_atlas(atlas.image, scan, grid, iterations=affine_iterations, seed=seed)
        except PrealignmentError as error:
            raise InputError(f"Cannot pre-align scan {scan_names[index]} to the atlas: {error}.") from None
        affines.append(affine_to_dict(transform))
        volumes.append(normalize_intensity(resample_to_grid(scan, grid, transform)))
        progress.update(index + 1, message=f"pre-aligned {scan_names[index]}")
    progress.end_stage()
    return PreparedData(
        grid=grid,
        label_ids=atlas.label_ids,
        atlas_image=atlas_image,
        atlas_classes=atlas_classes.astype(np.int64),
        scans=np.stack(volumes),
        scan_names=list(scan_names),
        affines=affines,
    )


def save_prepared(data: PreparedData, path: str | os.PathLike) -> None:
    """Cache prepared data (safetensors + JSON metadata), atomically."""
    tensors = {
        "atlas_image": torch.from_numpy(data.atlas_image),
        "atlas_classes": torch.from_numpy(data.atlas_classes.astype(np.int64)),
        "scans": torch.from_numpy(data.scans),
    }
    metadata = {
        "grid": json.dumps(data.grid.to_dict()),
        "label_ids": json.dumps(data.label_ids),
        "scan_names": json.dumps(data.scan_names),
        "affines": json.dumps(data.affines),
    }
    with atomic_path(path) as temp:
        save_file(tensors, str(temp), metadata=metadata)


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Read data written by :func:`save_prepared`."""
    with safe_open(str(Path(path)), framework="pt", device="cpu") as handle:
        meta = handle.metadata()
        arrays = {key: handle.get_tensor(key).numpy() for key in handle.keys()}
    return PreparedData(
        grid=WorkingGrid.from_dict(json.loads(meta["grid"])),
        label_ids=json.loads(meta["label_ids"]),
        atlas_image=arrays["atlas_image"],
        atlas_classes=arrays["atlas_classes"],
        scans=arrays["scans"],
        scan_names=json.loads(meta["scan_names"]),
        affines=json.loads(meta["affines"]),
    )


def prealignment_record(paths: Sequence[str | os.PathLike], data: PreparedData) -> dict[str, dict]:
    """``{sha256 of the scan file: {"name", "affine"}}`` of the training scans, in ``data``'s order.

    ``segment`` looks a scan up by the hash of its file and reuses the training's pre-alignment:
    the same result the pseudo labels were made with, without re-running the affine optimiser.
    """
    return {sha256_file(p): {"name": n, "affine": a} for p, n, a in zip(paths, data.scan_names, data.affines)}
