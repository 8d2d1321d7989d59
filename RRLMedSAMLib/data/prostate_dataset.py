"""Build the prostate MR dataset (standard layout) from the DeepReg test cases.

Source layout: ``SOURCE/images/<case>.nii.gz`` (3-D uint8 T2 MR) and ``SOURCE/labels/<case>.nii.gz``,
either 3-D (the gland only) or 4-D one-hot ``(x, y, z, C)`` with C = 2 or 3 whose channel 0 is the
whole gland and the other channels small landmarks. Output: ``images/``, ``labels/`` (uint8, gland =
1, landmarks dropped), ``labels.csv`` (1 = Prostate) and ``README.md``, geometry unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.io.label_table import LabelEntry, write_label_table
from RRLMedSAMLib.io.volumes import ensure_writable_folder, read_scan, same_grid, volume_stem, write_image

PROSTATE = LabelEntry(1, "Prostate", (216, 146, 127))

README = """# Prostate MR dataset

Made by the RRL-MedSAM engine (`RRLMedSAMLib.data.prostate_dataset`) from real prostate T2 MR scans
of the DeepReg project (DeepRegNet/DeepReg, `data/test/nifti/paired/*/moving_*`, Apache-2.0).

- images: copied voxel for voxel (uint8, geometry as stored: 0.4 mm voxels as stored upstream);
- labels: label 1 = whole gland (channel 0 of the one-hot source labels); the landmark channels
  are dropped;
- one-shot use: pick one case as the atlas, segment the others, score against their labels.

Cases: {cases}
"""


def gland_label(path: str | os.PathLike) -> sitk.Image:
    """Whole-gland uint8 mask (0/1) of a 3-D or 4-D one-hot (channel 0 = gland) label file."""
    path = Path(path)
    try:
        raw = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError(f"Cannot read prostate label {path}; expected a NIfTI file.") from None
    if raw.GetDimension() == 4:
        raw = raw[:, :, :, 0]
    if raw.GetDimension() != 3 or raw.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Prostate label {path} must be 3-D or 4-D one-hot (x, y, z, C); got size {raw.GetSize()}.")
    values = sitk.GetArrayFromImage(raw)
    if not np.isin(values, (0, 1)).all():
        raise InputError(f"Prostate label {path}: the gland channel must hold only 0 and 1 (found {np.unique(values)[:5]}).")
    label = sitk.GetImageFromArray(values.astype(np.uint8))
    label.CopyInformation(raw)
    return label


def make_prostate_dataset(source: str | os.PathLike, out_dir: str | os.PathLike) -> list[str]:
    """Write the standard-layout prostate dataset from ``source`` into ``out_dir``; return the case names."""
    source = Path(source)
    image_files = sorted((source / "images").glob("*.nii.gz"))
    if not image_files:
        raise InputError(f"No images in {source / 'images'}; pass the prostate_mr folder (images/, labels/).")
    out = ensure_writable_folder(out_dir, "Dataset folder")
    names = []
    for image_path in image_files:
        label_path = source / "labels" / image_path.name
        if not label_path.is_file():
            raise InputError(f"No label for {image_path.name} in {source / 'labels'}.")
        image = sitk.ReadImage(str(image_path))
        read_scan(image_path, "Prostate image")  # validation only: 3-D, finite
        label = gland_label(label_path)
        if not same_grid(image, label):
            raise InputError(f"Prostate label {label_path} is not on its image's grid; cannot pair them.")
        if not sitk.GetArrayViewFromImage(label).any():
            raise InputError(f"Prostate label {label_path} has an empty gland channel.")
        name = volume_stem(image_path)
        write_image(image, out / "images" / f"{name}.nii.gz")
        write_image(label, out / "labels" / f"{name}.nii.gz")
        names.append(name)
    write_label_table([PROSTATE], out / "labels.csv")
    write_text_atomic(out / "README.md", README.format(cases=", ".join(names)))
    return names
