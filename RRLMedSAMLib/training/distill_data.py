"""The general unlabelled set of DSKD stage 1 (``--distill-images``).

Stage 1 regresses the teacher's features; it needs no correspondence with the atlas, so the
distillation images are *not* registered to it. Each one is resampled onto its own grid of the
working grid's shape ``(D, H, W)``: isotropic voxels in the image's own axes, just large enough for
the grid to cover the whole image, centred on the image; intensities normalised like the scans.
Without ``--distill-images`` stage 1 uses the pre-aligned training scans (and the atlas).
The resampled set is cached in the run folder (``cache/distill_images.safetensors``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.io.volumes import SUPPORTED_SUFFIXES, read_scan


def collect_distill_paths(entries: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (their image files, sorted) into a list of image files."""
    paths: list[Path] = []
    for entry in entries:
        entry = Path(entry).expanduser()
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
            if not found:
                raise InputError(f"--distill-images folder {entry} holds no NIfTI/NRRD/MHA images.")
            paths += found
        elif entry.is_file():
            paths.append(entry)
        else:
            raise InputError(f"--distill-images: {entry} does not exist.")
    return paths


def own_grid(image: sitk.Image, shape_zyx: Sequence[int]) -> WorkingGrid:
    """Grid of ``shape_zyx`` covering ``image`` entirely: its axes, isotropic voxels, same centre."""
    size_xyz = np.array(shape_zyx[::-1], dtype=float)
    extent = np.array(image.GetSize(), dtype=float) * np.array(image.GetSpacing())
    voxel = float((extent / size_xyz).max())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint(((np.array(image.GetSize()) - 1) / 2.0).tolist()))
    origin = centre - direction @ ((size_xyz - 1) / 2.0 * voxel)
    return WorkingGrid(
        size_xyz=tuple(int(s) for s in size_xyz),  # type: ignore[arg-type]
        spacing_mm=voxel,
        origin_xyz=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction.ravel()),
    )


def prepare_distill_volumes(
    paths: Sequence[Path], shape_zyx: Sequence[int], cache_path: str | os.PathLike
) -> np.ndarray:
    """Distillation volumes ``(N, D, H, W)`` float32 in [0, 1], read from the cache when it matches."""
    cache_path = Path(cache_path)
    names = [str(Path(p).resolve()) for p in paths]
    if cache_path.exists():
        with safe_open(str(cache_path), framework="pt", device="cpu") as handle:
            if json.loads((handle.metadata() or {}).get("paths", "[]")) == names:
                return handle.get_tensor("volumes").numpy()
    volumes = []
    for path in paths:
        image = read_scan(path, "Distillation image")
        volumes.append(normalize_intensity(resample_to_grid(image, own_grid(image, shape_zyx))))
    stacked = np.stack(volumes).astype(np.float32)
    with atomic_path(cache_path) as temp:
        save_file({"volumes": torch.from_numpy(stacked)}, str(temp), metadata={"paths": json.dumps(names)})
    return stacked
