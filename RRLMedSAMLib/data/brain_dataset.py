"""Build the synthetic-contrast brain dataset from SynthSeg label maps.

Output (the standard layout read by :mod:`RRLMedSAMLib.data.dataset`)::

    DATASET_DIR/images/<name>.nii.gz   float32 T1-like image in [0, ~1], background 0
    DATASET_DIR/labels/<name>.nii.gz   uint16 labelmap, extra-cerebral ids set to 0
    DATASET_DIR/labels.csv             id,name,r,g,b (FreeSurfer names and colours)
    DATASET_DIR/README.md              origin, license, and that the contrast is synthetic

Both volumes keep the source label map's grid (size, spacing, origin, direction).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.data.synth_brain import IntensityStats, brain_only, load_reference_stats, paint_t1, subject_seed
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.io.label_table import default_entry, write_label_table
from RRLMedSAMLib.io.volumes import SUPPORTED_SUFFIXES, ensure_writable_folder, read_label, volume_stem, write_image

DATASET_README = """# Synthetic-contrast brain dataset

Made by `rrlmedsam make-brain-dataset` (RRL-MedSAM engine) with seed {seed}.

- **Anatomy: real.** Each label map is a real subject's brain segmentation shipped by the SynthSeg
  project (BBillot/SynthSeg, `data/training_label_maps/`, Apache-2.0 license).
- **Contrast: synthetic.** The T1-like images are painted: the mean/std intensity of every aseg
  structure is measured on the real skull-stripped T1 of voxelmorph/voxelmorph `data/test_scan.npz`
  (Apache-2.0), then each label map is painted with those statistics (3 % per-subject jitter, smooth
  texture), blurred (partial volume), multiplied by a smooth bias field and given Rician noise, with
  a fixed seed per subject (derived from the subject name and the seed).
- **Skull-stripped:** extra-cerebral ids (>= 100) and 24 (CSF around the brain) are background (0) in
  both the image and the label map. Ids missing from the reference scan borrow the statistics of a
  related structure (25/57 lesions -> 77 WM-hypointensities) or of their tissue class.
- Geometry: each image and label map is on its source label map's grid (1 mm, 256^3).

Results measured on these images say nothing definite about real scans: report them as
"real anatomy, synthetic contrast".

Subjects: {subjects}
"""


def list_label_maps(folder: str | os.PathLike) -> list[Path]:
    """Image files in ``folder`` (sorted by name); :class:`InputError` when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Label map folder not found: {folder}. Pass the folder holding training_seg_XX.nii.gz files.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES))
    if not files:
        raise InputError(f"No label maps (.nii.gz, .nrrd, .mha) in {folder}.")
    return files


def paint_subject(
    label: sitk.Image, stats: IntensityStats, name: str, seed: int
) -> tuple[sitk.Image, sitk.Image]:
    """Painted float32 image and brain-only uint16 label, both on ``label``'s grid."""
    ids = sitk.GetArrayFromImage(label).astype(np.int32)
    kept = brain_only(ids)
    if not kept.any():
        raise InputError(f"Label map {name} holds no brain structure (ids 1..99 other than 24); is it an aseg label map?")
    rng = np.random.default_rng(subject_seed(name, seed))
    spacing_zyx = tuple(float(s) for s in reversed(label.GetSpacing()))
    painted = paint_t1(kept, stats, spacing_zyx, rng)  # type: ignore[arg-type]
    image = sitk.GetImageFromArray(painted)
    image.CopyInformation(label)
    out_label = sitk.GetImageFromArray(kept.astype(np.uint16))
    out_label.CopyInformation(label)
    return image, out_label


def make_brain_dataset(
    labelmaps: str | os.PathLike,
    reference_scan: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    subjects: int | None = None,
    log: bool = True,
) -> list[str]:
    """Paint every label map (or the first ``subjects``) of ``labelmaps`` into ``out_dir``; return the names."""
    files = list_label_maps(labelmaps)
    if subjects is not None:
        if subjects < 1:
            raise InputError(f"--subjects must be at least 1 (got {subjects}).")
        files = files[:subjects]
    stats = load_reference_stats(reference_scan)
    out = ensure_writable_folder(out_dir, "Dataset folder")
    names: list[str] = []
    present: set[int] = set()
    for path in files:
        start = time.monotonic()
        name = volume_stem(path)
        label = read_label(path, "Label map")
        image, kept = paint_subject(label, stats, name, seed)
        write_image(image, out / "images" / f"{name}.nii.gz")
        write_image(kept, out / "labels" / f"{name}.nii.gz")
        present.update(int(v) for v in np.unique(sitk.GetArrayViewFromImage(kept)) if v)
        names.append(name)
        if log:
            print(f"{name}: painted in {time.monotonic() - start:.1f} s", flush=True)
    write_label_table([default_entry(i) for i in sorted(present)], out / "labels.csv")
    write_text_atomic(out / "README.md", DATASET_README.format(seed=seed, subjects=", ".join(names)))
    return names
