"""Segment one real 160x192x224 T1 scan with a trained run: wall time and peak memory.

The scan is ``brain_t1/vxm_test_scan.npz`` from the shared data (voxelmorph's test scan, 1 mm,
stored without an affine: written here with identity geometry). Segmenting runs in a child
process (``rrlmedsam segment``, CPU), so its peak resident memory is measured on its own.

    python bench/segment_speed.py --model RUN_DIR [--data ../shared/data] [--threads 2] [--repeats 2]
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
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        scan = write_scan(args.data / "brain_t1" / "vxm_test_scan.npz", Path(temp))
        size = sitk.ReadImage(str(scan)).GetSize()
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=str(REPO))
        walls = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "RRLMedSAMLib", "segment", "--model", str(args.model), "--image", str(scan),
                 "--out", str(Path(temp) / f"out{repeat}"), "--device", "cpu"],
                check=True, env=env, stdout=subprocess.DEVNULL,
            )
            walls.append(time.perf_counter() - start)
        qc = json.loads((Path(temp) / "out0" / "vxm_test_scan" / "qc.json").read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    result = {
        "scan_size_xyz": list(size), "threads": args.threads, "wall_s": [round(w, 1) for w in walls],
        "peak_rss_mb": round(peak_mb), "stage_timings_s": qc["timings_s"], "model": str(args.model),
        "note": "wall time includes Python start-up and model loading (one process per run)",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
