"""CT plumbing check: recover a known synthetic deformation of the chest CT and score it.

    python bench/ct_plumbing.py --work DIR [--data ../shared/data] [--cases 2] [--amplitude-mm 10] [bench options]

The atlas is the real CT with its (model-made) 41-class segmentation. Each scan is that CT warped
by a known smooth B-spline deformation (seeded), with the segmentation warped the same way, so
the truth is exact. ``rrlmedsam bench`` runs on this dataset (fields kept), then the engine's
recovered ``deformation.nrrd`` is compared with the known field: mean end-point error in mm inside
the body (HU > -500), next to the error of doing nothing (the known field's mean magnitude).
A plumbing check (HU input, 3 mm anisotropic-free grid, flipped axes), not an accuracy claim.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.cli import main as rrlmedsam
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic
from RRLMedSAMLib.io.label_table import default_entry, write_label_table
from RRLMedSAMLib.io.volumes import write_image

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def known_deformation(image: sitk.Image, amplitude_mm: float, seed: int, mesh: int = 4) -> sitk.BSplineTransform:
    """A smooth random B-spline transform (scan point -> atlas point) with displacements of about ``amplitude_mm``."""
    transform = sitk.BSplineTransformInitializer(image, [mesh, mesh, max(mesh // 2, 1)])
    rng = np.random.default_rng(seed)
    coefficients = rng.normal(0.0, amplitude_mm / 2.0, len(transform.GetParameters()))
    transform.SetParameters(coefficients.tolist())
    return transform


def make_ct_dataset(data: Path, out: Path, cases: int, amplitude_mm: float) -> dict[str, sitk.Image]:
    """Write the standard-layout dataset (atlas + ``cases`` deformed copies); return the known fields by case."""
    ct_path, seg_path = data / "ct_chest" / "example_ct_sm.nii.gz", data / "ct_chest" / "example_seg.nii.gz"
    if not ct_path.is_file() or not seg_path.is_file():
        raise InputError(f"CT files not found under {data / 'ct_chest'}.")
    ct = sitk.Cast(sitk.ReadImage(str(ct_path)), sitk.sitkFloat32)
    seg = sitk.Cast(sitk.ReadImage(str(seg_path)), sitk.sitkUInt8)
    seg.CopyInformation(ct)
    write_image(ct, out / "images" / "ct_atlas.nii.gz")
    write_image(seg, out / "labels" / "ct_atlas.nii.gz")
    fields = {}
    for index in range(1, cases + 1):
        name = f"ct_deformed_{index:02d}"
        transform = known_deformation(ct, amplitude_mm, seed=index)
        write_image(sitk.Resample(ct, ct, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32),
                    out / "images" / f"{name}.nii.gz")
        write_image(sitk.Resample(seg, ct, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8),
                    out / "labels" / f"{name}.nii.gz")
        fields[name] = sitk.TransformToDisplacementField(
            transform, sitk.sitkVectorFloat64, ct.GetSize(), ct.GetOrigin(), ct.GetSpacing(), ct.GetDirection())
    ids = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(seg)) if v]
    write_label_table([default_entry(i, aseg=False) for i in ids], out / "labels.csv")
    return fields


def field_errors(known: dict[str, sitk.Image], dataset: Path, predictions: Path) -> dict[str, dict[str, float]]:
    """Mean end-point error (mm) of each recovered field inside the body, and of the identity."""
    report = {}
    for name, truth in known.items():
        path = predictions / name / "deformation.nrrd"
        if not path.is_file():
            continue
        body = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "images" / f"{name}.nii.gz"))) > -500
        true = sitk.GetArrayFromImage(truth)[body]
        found = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkVectorFloat64))[body]
        report[name] = {"endpoint_error_mm": float(np.linalg.norm(found - true, axis=1).mean()),
                        "identity_error_mm": float(np.linalg.norm(true, axis=1).mean())}
    return report


def main(argv: list[str] | None = None) -> int:
    """Build the dataset, run the benchmark with fields kept, and write ``field_errors.json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="working folder")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--cases", type=int, default=2, help="deformed copies (default 2)")
    parser.add_argument("--amplitude-mm", type=float, default=10.0, help="scale of the B-spline coefficients (default 10 mm)")
    args, bench_args = parser.parse_known_args(argv)
    dataset, out = args.work / "datasets" / "ct", args.work / "results" / "ct"
    try:
        known = make_ct_dataset(args.data, dataset, args.cases, args.amplitude_mm)
    except InputError as error:
        print(f"ct_plumbing: error: {error}", file=sys.stderr)
        return 2
    code = rrlmedsam(["bench", "--dataset", str(dataset), "--atlas", "ct_atlas", "--out", str(out), "--keep-fields",
                      "--title", "CT plumbing (known synthetic deformation)", *bench_args])
    errors = {method.name: field_errors(known, dataset, method / "pred")
              for method in sorted((out / "methods").iterdir()) if (method / "pred").is_dir()}
    errors = {k: v for k, v in errors.items() if v}
    write_json_atomic(out / "field_errors.json", errors)
    print(json.dumps(errors, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
