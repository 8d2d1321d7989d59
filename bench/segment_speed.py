"""Segment one real 160x192x224 T1 scan with a trained run: wall time and peak memory.

The scan is ``brain_t1/vxm_test_scan.npz`` from the shared data (voxelmorph's test scan, 1 mm,
stored without an affine: written here with identity geometry). Segmenting runs in a child
process (``rrlmedsam segment``, CPU), so its peak resident memory is measured on its own.

    python bench/segment_speed.py --model RUN_DIR [--data ../shared/data] [--threads 2] [--repeats 2] \
        [--label-smoothing-mm auto 0]

With several ``--label-smoothing-mm`` settings the runs alternate between them (repeat 1 of each,
then repeat 2 of each, ...), so their times are measured side by side; ``wall_s`` and
``stage_timings_s`` are keyed by setting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]


def write_scan(npz: Path, folder: Path) -> Path:
    """The npz's ``vol`` as NIfTI (1 mm, identity direction); returns its path."""
    volume = np.load(npz)["vol"].astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.transpose(2, 1, 0)))
    path = folder / "vxm_test_scan.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label-smoothing-mm", nargs="+", default=["auto"], metavar="SIGMA|auto",
                        help="segment's smoothing setting(s) (default: auto, the engine's default)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    settings = args.label_smoothing_mm
    with tempfile.TemporaryDirectory() as temp:
        scan = write_scan(args.data / "brain_t1" / "vxm_test_scan.npz", Path(temp))
        size = sitk.ReadImage(str(scan)).GetSize()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
        walls: dict[str, list[float]] = {setting: [] for setting in settings}
        for repeat in range(args.repeats):
            for number, setting in enumerate(settings):
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "RRLMedSAMLib", "segment", "--model", str(args.model), "--image", str(scan),
                     "--out", str(Path(temp) / f"out{repeat}_{number}"), "--device", "cpu",
                     "--label-smoothing-mm", setting],
                    check=True, env=env, stdout=subprocess.DEVNULL,
                )
                walls[setting].append(round(time.perf_counter() - start, 1))
        timings = {setting: json.loads((Path(temp) / f"out0_{number}" / "vxm_test_scan" / "qc.json").read_text())["timings_s"]
                   for number, setting in enumerate(settings)}
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    result = {
        "scan_size_xyz": list(size), "threads": args.threads, "label_smoothing_mm": settings,
        "wall_s": walls, "peak_rss_mb": round(peak_mb), "stage_timings_s": timings, "model": str(args.model),
        "note": "wall time includes Python start-up and model loading (one process per run); "
                "peak RSS is the largest of all runs",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
