"""Rebuild the embedded sample data (``Resources/SampleData``) from the shared brain label maps.

Usage (from the repository root)::

    python Resources/SampleData/make_sample_data.py \
        --labelmaps ../shared/data/brain_labelmaps \
        --reference-scan ../shared/data/brain_t1/vxm_test_scan.npz

What it does, per subject (1 atlas + 4 targets, all Apache-2.0 SynthSeg label maps):

1. paint a T1-like image on the 1 mm label map with ``RRLMedSAMLib.data`` (real anatomy, synthetic
   contrast, skull-stripped: ids >= 100 and 24 become background);
2. merge the ~37 aseg structures into 15: left and right joined (the id is the FreeSurfer left id),
   inferior lateral ventricles joined to the lateral ventricles, and minor structures (accumbens,
   vessels, choroid plexus, optic chiasm, lesions, 5th ventricle, WM hypointensities) given the id
   of the nearest major structure;
3. crop a fixed 176 x 160 x 144 mm box centred on the brain and average 2 x 2 x 2 blocks (image:
   mean; label: majority of the lightly smoothed one-hot maps), giving 2 mm voxels and 88 x 80 x 72
   arrays (numpy z, y, x) whose geometry (origin, direction) stays exact in the source frame;
4. store images as uint8 (brain 99.9th percentile -> 230) and labels as uint8, gzip-compressed.

Deterministic: the same inputs and seed give the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from RRLMedSAMLib.data.brain_dataset import paint_subject
from RRLMedSAMLib.data.synth_brain import IntensityStats, bounding_box, load_reference_stats
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.io.label_table import LabelEntry, default_entry, write_label_table
from RRLMedSAMLib.io.volumes import read_label, write_image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"
ATLAS = "training_seg_01"
TARGETS = {
    "brain05": "training_seg_05",
    "brain09": "training_seg_09",
    "brain11": "training_seg_11",
    "brain13": "training_seg_13",
}
BOX_MM = (176, 160, 144)  # numpy (z, y, x) order of the source grid
FACTOR = 2
SEED = 0

#: merged id -> (name, source aseg ids)
MERGED: dict[int, tuple[str, tuple[int, ...]]] = {
    2: ("Cerebral-White-Matter", (2, 41)),
    3: ("Cerebral-Cortex", (3, 42)),
    4: ("Lateral-Ventricle", (4, 5, 43, 44)),
    7: ("Cerebellum-White-Matter", (7, 46)),
    8: ("Cerebellum-Cortex", (8, 47)),
    10: ("Thalamus", (10, 49)),
    11: ("Caudate", (11, 50)),
    12: ("Putamen", (12, 51)),
    13: ("Pallidum", (13, 52)),
    14: ("3rd-Ventricle", (14,)),
    15: ("4th-Ventricle", (15,)),
    16: ("Brain-Stem", (16,)),
    17: ("Hippocampus", (17, 53)),
    18: ("Amygdala", (18, 54)),
    28: ("VentralDC", (28, 60)),
}


def merge_labels(brain: np.ndarray) -> np.ndarray:
    """Map brain-only aseg ids to :data:`MERGED` ids; other brain voxels take the nearest merged id."""
    lut = np.zeros(max(int(brain.max()) + 1, 256), dtype=np.uint8)
    for merged_id, (_, sources) in MERGED.items():
        lut[list(sources)] = merged_id
    merged = lut[brain]
    orphans = (brain > 0) & (merged == 0)
    if orphans.any():
        _, nearest = ndimage.distance_transform_edt(merged == 0, return_indices=True)
        merged[orphans] = merged[tuple(axis[orphans] for axis in nearest)]
    return merged


def crop_box(mask: np.ndarray, size: tuple[int, ...]) -> tuple[int, ...]:
    """Start index (z, y, x) of a ``size`` box centred on ``mask``'s bounding box."""
    box = bounding_box(mask)
    return tuple(int(round((s.start + s.stop - n) / 2)) for s, n in zip(box, size))


def take(array: np.ndarray, start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """``array[start:start+size]`` with zero padding where the box leaves the array."""
    out = np.zeros(size, dtype=array.dtype)
    src = tuple(slice(max(a, 0), min(a + n, s)) for a, n, s in zip(start, size, array.shape))
    dst = tuple(slice(sl.start - a, sl.stop - a) for sl, a in zip(src, start))
    out[dst] = array[src]
    return out


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``^3 blocks (shape divisible by ``factor``)."""
    z, y, x = (n // factor for n in array.shape)
    return array.reshape(z, factor, y, factor, x, factor).mean(axis=(1, 3, 5))


def block_majority(labels: np.ndarray, factor: int) -> np.ndarray:
    """Most frequent id per block, ties broken by a 0.5-voxel Gaussian smoothing of each one-hot map."""
    ids = np.unique(labels)
    scores = np.stack([block_mean(ndimage.gaussian_filter((labels == i).astype(np.float32), 0.5), factor) for i in ids])
    return ids[np.argmax(scores, axis=0)].astype(np.uint8)


def downsampled_geometry(source: sitk.Image, start_zyx: tuple[int, ...], shape_zyx: tuple[int, ...]) -> sitk.Image:
    """Empty image whose voxels are the centres of the ``FACTOR``^3 blocks starting at ``start_zyx``."""
    start_xyz = [float(v) + (FACTOR - 1) / 2 for v in reversed(start_zyx)]
    reference = sitk.Image([int(n) for n in reversed(shape_zyx)], sitk.sitkUInt8)
    reference.SetSpacing([s * FACTOR for s in source.GetSpacing()])
    reference.SetDirection(source.GetDirection())
    reference.SetOrigin(source.TransformContinuousIndexToPhysicalPoint(start_xyz))
    return reference


def to_uint8(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scale so the brain's 99.9th percentile maps to 230; clip to 0..255."""
    top = float(np.percentile(image[mask], 99.9)) if mask.any() else 1.0
    return np.clip(np.round(image / top * 230.0), 0, 255).astype(np.uint8)


def make_subject(path: Path, stats: IntensityStats) -> tuple[sitk.Image, sitk.Image]:
    """Painted, merged, cropped and downsampled (image, label), both uint8 on the same 2 mm grid."""
    source = read_label(path, "Label map")
    painted, brain = paint_subject(source, stats, path.name.split(".")[0], SEED)
    brain_ids = sitk.GetArrayFromImage(brain).astype(np.int32)
    merged = merge_labels(brain_ids)
    size = tuple(int(round(mm / sp)) for mm, sp in zip(BOX_MM, reversed(source.GetSpacing())))
    start = crop_box(merged > 0, size)
    label_small = block_majority(take(merged, start, size), FACTOR)
    image_small = block_mean(take(sitk.GetArrayFromImage(painted), start, size), FACTOR)
    reference = downsampled_geometry(source, start, label_small.shape)
    image = sitk.GetImageFromArray(to_uint8(image_small, label_small > 0))
    label = sitk.GetImageFromArray(label_small)
    image.CopyInformation(reference)
    label.CopyInformation(reference)
    return image, label


NOTICE = """RRL-MedSAM sample data: origin and license
==========================================

Every file here is derived from Apache-2.0 sources; no OASIS or other restricted data.
Rebuild with: python Resources/SampleData/make_sample_data.py (see its docstring).

Anatomy (label maps): SynthSeg training label maps of real subjects
  Repository: https://github.com/BBillot/SynthSeg, path data/training_label_maps/
  License: Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0)
Contrast reference: voxelmorph test scan (used only to measure per-structure intensity statistics;
  no voxel of it is stored here)
  Repository: https://github.com/voxelmorph/voxelmorph, path data/test_scan.npz
  License: Apache License 2.0

Files and sources
{files}

Changes made to the sources
- Synthetic T1-like contrast painted on each label map (per-structure mean/std measured on the
  voxelmorph scan, 3 % per-subject jitter, smooth texture, partial-volume blur, smooth bias field,
  Rician noise; seed {seed}). The anatomy is real, the contrast is synthetic: say so in any result.
- Skull-stripped: extra-cerebral ids (>= 100) and 24 (CSF around the brain) set to background.
- Structures merged into 15 labels (labels.csv): left/right joined under the FreeSurfer left id,
  inferior lateral ventricles joined to the lateral ventricles, minor structures (accumbens,
  vessels, choroid plexus, optic chiasm, lesions, 5th ventricle, WM hypointensities) given the id
  of the nearest major structure.
- Cropped to a 176 x 160 x 144 mm box centred on the brain, downsampled from 1 mm to 2 mm
  (2 x 2 x 2 block mean for images, block majority for labels): 72 x 80 x 88 voxels (SimpleITK
  size; numpy shape 88 x 80 x 72).
  Orientation (direction cosines) kept; origins moved to the cropped block centres.
- Images stored as uint8 (brain 99.9th percentile -> 230); labels as uint8.

Target labels (labels/) are for evaluation only; the demo segments the target images from the atlas.
"""


def main(argv: list[str] | None = None) -> int:
    """Write the sample data into ``--out`` (default: this folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labelmaps", default=str(SHARED / "brain_labelmaps"))
    parser.add_argument("--reference-scan", default=str(SHARED / "brain_t1" / "vxm_test_scan.npz"))
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)
    labelmaps, out = Path(args.labelmaps), Path(args.out)
    stats = load_reference_stats(args.reference_scan)
    lines = []
    jobs = [("atlas", ATLAS)] + list(TARGETS.items())
    for name, source in jobs:
        image, label = make_subject(labelmaps / f"{source}.nii.gz", stats)
        if name == "atlas":
            image_path, label_path = out / "atlas_image.nii.gz", out / "atlas_label.nii.gz"
        else:
            image_path, label_path = out / "images" / f"{name}.nii.gz", out / "labels" / f"{name}.nii.gz"
        write_image(image, image_path)
        write_image(label, label_path)
        for path, kind in ((image_path, "painted image"), (label_path, "merged label map")):
            lines.append(f"- {path.relative_to(out)}: {kind} from data/training_label_maps/{source}.nii.gz")
        print(f"{name}: {image.GetSize()} voxels of {image.GetSpacing()} mm", flush=True)
    entries = [LabelEntry(i, n, default_entry(i).color) for i, (n, _) in MERGED.items()]
    write_label_table(entries, out / "labels.csv")
    lines.append("- labels.csv: names (FreeSurfer, hemisphere dropped) and FreeSurfer colours of the merged labels")
    write_text_atomic(out / "NOTICE", NOTICE.format(files="\n".join(lines), seed=SEED))
    return 0


if __name__ == "__main__":
    sys.exit(main())
