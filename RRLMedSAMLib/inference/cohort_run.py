"""One process's share of a cohort: skip finished scans, segment the rest, record each, assemble at the end.

The segmenting itself is injected (``segment_one``), so this loop is tested without a model.
A scan that fails is recorded as failed with its message and the shard goes on; internal errors
also leave their traceback in ``OUT/cohort/shard-K-of-N.errors.log``. With ``prepare`` given, the
next scan is read and pre-aligned in a worker thread while the current one is segmented.
Torch-free.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.inference.cohort import (
    COHORT_FOLDER,
    FAILED,
    SEGMENTED,
    SKIPPED,
    Shard,
    assemble_cohort,
    cohort_row,
    complete_result,
    read_qc,
    read_shard_summaries,
    select_shard,
    unfinished_shards,
    wait_for_shards,
    write_shard_summary,
)
from RRLMedSAMLib.io.folder_lock import lock_holder
from RRLMedSAMLib.io.volumes import volume_stem
from RRLMedSAMLib.progress import ProgressReporter, check_stop

#: How long rank 0 of a torchrun cohort waits for the other ranks' summaries (seconds; environment override).
SHARD_WAIT_ENV = "RRLMEDSAM_SHARD_WAIT_S"
SHARD_WAIT_S = 3600.0

SegmentOne = Callable[[Path, Any], Path]
"""``segment_one(scan, prepared)`` writes ``OUT/<name>/`` and returns it; ``prepared`` is ``prepare(scan)`` or ``None``."""


@dataclass
class ShardOutcome:
    """What a process did with its shard, and the cohort summary if it could be assembled."""

    shard: Shard
    rows: list[dict] = field(default_factory=list)
    cohort_csv: Path | None = None
    note: str = ""

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)


def check_cohort_out(out: Path) -> None:
    """Refuse an ``OUT`` that is a file or that a plain (non-cohort) ``segment`` holds."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder; choose a folder.")
    holder = lock_holder(out) if out.is_dir() else None
    if holder is not None:
        raise InputError(f"{out} is in use by process {holder.get('pid', '?')} ('{holder.get('command', '?')}'); "
                         "wait for it to finish or choose another --out.")


@contextlib.contextmanager
def shard_lock(out: Path, shard: Shard) -> Iterator[None]:
    """Hold ``OUT/cohort/.shard-K-of-N.lock``: two processes never work on the same shard at once."""
    folder = out / COHORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(folder / f".{shard.name}.lock"), timeout=1.0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise InputError(f"Shard {shard} of {out} is already being segmented by another process; wait for it, "
                         "or give this process another shard.") from None
    try:
        yield
    finally:
        lock.release()


def _failure(scan: Path, error: BaseException, log: Path) -> str:
    """The message recorded for a failed scan; internal errors append their traceback to ``log``."""
    if isinstance(error, InputError):
        return str(error)
    with contextlib.suppress(OSError), log.open("a", encoding="utf-8") as handle:
        handle.write(f"{scan}\n{''.join(traceback.format_exception(error))}\n")
    return f"internal error: {type(error).__name__}: {error} (traceback in {log})"


def run_shard(
    scans: Sequence[Path], shard: Shard, cohort: str, out: Path, model_root: Path, segment_one: SegmentOne,
    prepare: Callable[[Path], Any] | None = None, progress: ProgressReporter | None = None,
    report: Callable[[dict], None] | None = None,
) -> ShardOutcome:
    """Segment this process's shard of ``scans`` into ``out``; return its rows (one per scan of the shard).

    Complete results of ``model_root``'s model are skipped; the others are (re)done. The shard's
    summary is rewritten after every scan and marked finished at the end. ``report(row)`` is called
    for each scan as it is decided.
    """
    mine = select_shard(scans, shard)
    outcome = ShardOutcome(shard)
    log = out / COHORT_FOLDER / f"{shard.name}.errors.log"
    with shard_lock(out, shard):
        done = {scan: complete_result(out / volume_stem(scan), model_root) for scan in mine}
        todo = [scan for scan in mine if done[scan] is None]
        if progress is not None:
            progress.start_stage("segment", len(mine), f"shard {shard}: {len(todo)} of {len(mine)} scan(s) to segment, "
                                 f"{len(mine) - len(todo)} already done")
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
            upcoming: dict[Path, Future] = {}

            def prefetch(position: int) -> None:
                if prepare is not None and position < len(todo):
                    upcoming[todo[position]] = pool.submit(prepare, todo[position])

            prefetch(0)
            position = 0
            for scan in mine:
                check_stop()
                if done[scan] is not None:
                    row = cohort_row(scan, SKIPPED, 0.0, done[scan], "complete result already in the output folder")
                else:
                    prefetch(position + 1)
                    row = _segment(scan, upcoming.pop(scan, None), out, segment_one, log)
                    position += 1
                outcome.rows.append(row)
                write_shard_summary(out, shard, cohort, mine, outcome.rows, finished=False)
                if report is not None:
                    report(row)
                if progress is not None:
                    progress.update(len(outcome.rows), message=f"{row['scan']}: {row['status']}")
        write_shard_summary(out, shard, cohort, mine, outcome.rows, finished=True)
    if progress is not None:
        progress.end_stage()
    return outcome


def _segment(scan: Path, prepared: Future | None, out: Path, segment_one: SegmentOne, log: Path) -> dict:
    """Segment one scan (its preparation, if prefetched, counts from when this scan's turn came); its row."""
    start = time.perf_counter()
    try:
        folder = segment_one(scan, None if prepared is None else prepared.result())
    except Exception as error:  # one scan's failure is recorded and the cohort goes on
        return cohort_row(scan, FAILED, time.perf_counter() - start, message=_failure(scan, error, log))
    return cohort_row(scan, SEGMENTED, time.perf_counter() - start, read_qc(folder))


def shard_wait_s() -> float:
    """Seconds rank 0 waits for the other ranks (``RRLMEDSAM_SHARD_WAIT_S`` or :data:`SHARD_WAIT_S`)."""
    try:
        return float(os.environ.get(SHARD_WAIT_ENV, SHARD_WAIT_S))
    except ValueError:
        return SHARD_WAIT_S


def launch_time() -> float | None:
    """When the torchrun agent that started this process started (Unix time; ``None`` if unknown)."""
    import psutil

    with contextlib.suppress(psutil.Error, AttributeError):
        return psutil.Process().parent().create_time()
    return None


def finish_cohort(out: Path, outcome: ShardOutcome, cohort: str, torchrun: bool) -> None:
    """Assemble ``cohort.csv`` if this process should: the only shard, rank 0 of torchrun (after waiting for
    the other ranks), or, for ``--shard``, the last shard to finish. Sets ``outcome.cohort_csv`` / ``note``."""
    shard = outcome.shard
    if torchrun and shard.index != 1:
        outcome.note = "rank 0 assembles the cohort summary"
        return
    if torchrun and shard.count > 1:
        missing = wait_for_shards(out, shard.count, cohort, launch_time(), shard_wait_s())
    else:
        missing = unfinished_shards(read_shard_summaries(out), shard.count, cohort)
    if missing:
        outcome.note = (f"shard(s) {', '.join(str(s) for s in missing)} not finished yet; once they have, "
                        f"run 'rrlmedsam summarize {out}'")
        return
    outcome.cohort_csv, _ = assemble_cohort(out)
