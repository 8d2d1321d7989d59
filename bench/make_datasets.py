"""Build the benchmark datasets in the standard layout (images/, labels/, labels.csv, README.md).

    python bench/make_datasets.py --out DIR [--data ../shared/data] [--seed 0] [--subjects N]

writes DIR/brain (SynthSeg label maps painted with a T1-like synthetic contrast: real anatomy,
synthetic contrast) and DIR/prostate (DeepReg prostate T2 MR, gland = label 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from RRLMedSAMLib.data.brain_dataset import make_brain_dataset
from RRLMedSAMLib.data.prostate_dataset import make_prostate_dataset
from RRLMedSAMLib.errors import InputError

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    """Build both datasets; return the exit code (2 on bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder that receives brain/ and prostate/")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="shared data folder (default: ../shared/data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the brain painting (default 0)")
    parser.add_argument("--subjects", type=int, default=None, help="brain: only the first N label maps")
    args = parser.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    try:
        start = time.monotonic()
        brain = make_brain_dataset(
            data / "brain_labelmaps", data / "brain_t1" / "vxm_test_scan.npz", out / "brain", args.seed, args.subjects
        )
        print(f"brain: {len(brain)} subjects in {time.monotonic() - start:.0f} s -> {out / 'brain'}")
        start = time.monotonic()
        prostate = make_prostate_dataset(data / "prostate_mr", out / "prostate")
        print(f"prostate: {len(prostate)} cases in {time.monotonic() - start:.0f} s -> {out / 'prostate'}")
    except InputError as error:
        print(f"make_datasets: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
