"""OASIS pair benchmark: atlas A -> scan B (two real T1 scans, coarse 2-label segmentation).

    python bench/oasis_pair.py --work DIR [--data ../shared/data] [bench options, e.g. --device cuda]

Builds ``DIR/datasets/oasis`` (standard layout) and runs ``rrlmedsam bench`` into
``DIR/results/oasis``. The scans are under OASIS data-use terms: they stay in ``DIR`` (keep it
outside the repository); only aggregate tables and plots may be copied into ``docs/``.
The segmentation files carry a slightly different spacing/origin header than their images although
they have the same voxel grid size; they are taken as voxel-aligned with the image (the image's
geometry is copied onto them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.cli import main as rrlmedsam
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.label_table import LabelEntry, write_label_table
from RRLMedSAMLib.io.volumes import write_image

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
FILES = {"oasis_A": "image_A_160x192x144", "oasis_B": "image_B_160x192x144"}
LABELS = [LabelEntry(1, "Coarse label 1", (230, 148, 34)), LabelEntry(2, "Coarse label 2", (245, 245, 245))]


def make_oasis_dataset(data: Path, out: Path) -> Path:
    """Write ``out/images``, ``out/labels`` and ``labels.csv`` for the two OASIS scans."""
    folder = data / "brain_t1"
    for name, stem in FILES.items():
        image_path, label_path = folder / f"{stem}.nii.gz", folder / f"{stem}_seg.nii.gz"
        if not image_path.is_file() or not label_path.is_file():
            raise InputError(f"OASIS files not found: {image_path}, {label_path}.")
        image = sitk.Cast(sitk.ReadImage(str(image_path)), sitk.sitkFloat32)
        raw = sitk.ReadImage(str(label_path))
        if raw.GetSize() != image.GetSize():
            raise InputError(f"{label_path} has size {raw.GetSize()}, its image {image.GetSize()}; cannot pair them.")
        label = sitk.GetImageFromArray(sitk.GetArrayFromImage(raw).astype(np.uint8))
        label.CopyInformation(image)
        write_image(image, out / "images" / f"{name}.nii.gz")
        write_image(label, out / "labels" / f"{name}.nii.gz")
    write_label_table(LABELS, out / "labels.csv")
    return out


def main(argv: list[str] | None = None) -> int:
    """Build the dataset and run the benchmark; extra arguments go to ``rrlmedsam bench``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="working folder (outside the repository)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    args, bench_args = parser.parse_known_args(argv)
    try:
        dataset = make_oasis_dataset(args.data, args.work / "datasets" / "oasis")
    except InputError as error:
        print(f"oasis_pair: error: {error}", file=sys.stderr)
        return 2
    return rrlmedsam(["bench", "--dataset", str(dataset), "--atlas", "oasis_A", "--out",
                      str(args.work / "results" / "oasis"), "--title", "OASIS pair A -> B", *bench_args])


if __name__ == "__main__":
    sys.exit(main())
