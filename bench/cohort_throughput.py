"""Cohort throughput (scans per minute): one process vs two processes over the same scans, side by side.

    python bench/cohort_throughput.py --model RUN_DIR --scans DIR|LIST [--count 8] [--repeats 1] \
        [--threads 2] [--out results.json] [-- SEGMENT OPTIONS...]

Layouts, each segmenting the same ``--count`` scans into a fresh folder, run in turn within one
repeat (the order rotates between repeats, so that a drift of the machine is shared):

- ``1 process x 2 threads``: ``segment --image-list`` with ``--threads`` threads;
- ``1 process x 2 threads, overlap``: the same with ``--overlap-reading on`` (the next scan read
  and pre-aligned in a thread while the current one is segmented);
- ``2 processes x 1 thread``: ``--shard 1/2`` and ``--shard 2/2`` started together, one thread each.

Wall time runs from the first start to the last exit (Python start-up and model loading included:
that is what a cohort costs); the per-scan seconds come from the cohort summaries. The machine is
described as in every benchmark (:mod:`RRLMedSAMLib.bench.machine`). ``--scans`` is a folder (its
first ``--count`` ``*.nii.gz``, sorted) or a list file. Everything after ``--`` goes to ``segment``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from RRLMedSAMLib.bench.machine import describe_machine  # noqa: E402
from RRLMedSAMLib.inference.cohort import read_image_list  # noqa: E402
from RRLMedSAMLib.io.atomic import write_json_atomic  # noqa: E402

#: Layout name -> (processes, segment flags); each process gets ``--threads`` / processes threads.
LAYOUTS = {
    "1 process x 2 threads": (1, ("--overlap-reading", "off")),
    "1 process x 2 threads, overlap": (1, ("--overlap-reading", "on")),
    "2 processes x 1 thread": (2, ("--overlap-reading", "off")),
}


def pick_scans(source: Path, count: int) -> list[Path]:
    """The first ``count`` scans of a folder (``*.nii.gz``, sorted) or of a list file."""
    scans = sorted(source.glob("*.nii.gz")) if source.is_dir() else read_image_list(source)
    if len(scans) < count:
        raise SystemExit(f"cohort_throughput: error: {source} has {len(scans)} scan(s), fewer than --count {count}.")
    return scans[:count]


def _env(threads: int) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def run_layout(name: str, model: Path, listing: Path, out: Path, threads: int, extra: list[str]) -> dict:
    """Segment the list with one layout into ``out``; wall time, throughput and the per-scan seconds."""
    processes, flags = LAYOUTS[name]
    per_process = max(1, threads // processes)
    base = [sys.executable, "-m", "RRLMedSAMLib", "segment", "--model", str(model), "--image-list", str(listing),
            "--out", str(out), "--device", "cpu", *flags, *extra]
    commands = [base] if processes == 1 else [[*base, "--shard", f"{k}/{processes}"] for k in range(1, processes + 1)]
    start = time.perf_counter()
    running = [subprocess.Popen(c, env=_env(per_process), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True) for c in commands]
    errors = [p.communicate()[1] for p in running]
    wall = time.perf_counter() - start
    failed = [e.strip().splitlines()[-1:] for p, e in zip(running, errors) if p.returncode != 0]
    rows = []
    for summary in sorted((out / "cohort").glob("shard-*.json")):
        rows += json.loads(summary.read_text())["rows"]
    segmented = [r for r in rows if r["status"] == "segmented"]
    return {"wall_s": round(wall, 1), "scans": len(segmented), "threads_per_process": per_process,
            "scans_per_minute": round(60.0 * len(segmented) / wall, 2) if wall > 0 else None,
            "seconds_per_scan": sorted(round(r["seconds"], 1) for r in segmented), "errors": failed}


def measure(model: Path, scans: list[Path], repeats: int, threads: int, extra: list[str], work: Path) -> dict:
    """Every layout, ``repeats`` times, in a rotating order; the results keyed by layout."""
    listing = work / "scans.txt"
    listing.write_text("".join(f"{scan.resolve()}\n" for scan in scans))
    names = list(LAYOUTS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            out = work / f"out-{repeat}-{names.index(name)}"
            runs[name].append(run_layout(name, model, listing, out, threads, extra))
            shutil.rmtree(out, ignore_errors=True)
            if runs[name][-1]["errors"]:
                raise SystemExit(f"cohort_throughput: error: {name}: {runs[name][-1]['errors'][0]}")
    return {name: {"runs": results, "median_scans_per_minute": statistics.median(
        r["scans_per_minute"] or 0.0 for r in results)} for name, results in runs.items()}


def table(result: dict) -> str:
    """Markdown: one line per layout."""
    lines = ["| layout | scans/min (median) | wall s per run | s per scan (median) |", "| --- | --- | --- | --- |"]
    for name, entry in result["layouts"].items():
        walls = ", ".join(str(r["wall_s"]) for r in entry["runs"])
        per_scan = [s for r in entry["runs"] for s in r["seconds_per_scan"]]
        lines.append(f"| {name} | {entry['median_scans_per_minute']} | {walls} | "
                     f"{statistics.median(per_scan) if per_scan else '–'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="run folder of 'rrlmedsam train'")
    parser.add_argument("--scans", required=True, type=Path, help="folder of scans (*.nii.gz) or a list file")
    parser.add_argument("--count", type=int, default=8, help="scans in the cohort (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="times each layout runs (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all (default 2)")
    parser.add_argument("--out", type=Path, help="JSON file for the results")
    args = parser.parse_args(argv)
    scans = pick_scans(args.scans, args.count)
    with tempfile.TemporaryDirectory(prefix="cohort_throughput-") as temp:
        layouts = measure(args.model.resolve(), scans, args.repeats, args.threads, extra, Path(temp))
    result = {"machine": describe_machine("cpu"), "model": str(args.model), "scans": [str(s) for s in scans],
              "threads": args.threads, "repeats": args.repeats, "segment_options": extra, "layouts": layouts}
    print(table(result), end="")
    if args.out:
        write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
