"""Cohort segmentation's decisions: the image list, the shard a process takes, what counts as done, the summary.

A cohort is a list file (one scan path per line) segmented into one ``OUT`` by one or several
processes. Each process takes a shard of the list: scan ``i`` (0-based, in list order) goes to
shard ``i mod N + 1`` of ``N``. The shard comes from ``--shard K/N`` or from ``torchrun``'s
``RANK`` / ``WORLD_SIZE``. A scan whose result folder is complete (``qc.json`` plus every result
file it names, written by the same model) is skipped, so a killed cohort continues where it stopped.

Every process keeps its own summary, ``OUT/cohort/shard-K-of-N.json``, rewritten atomically after
each scan; ``OUT/cohort/cohort.csv`` is assembled from the summaries of one sharding (rank 0 at the
end, or ``rrlmedsam summarize OUT``). Torch-free.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic, write_text_atomic
from RRLMedSAMLib.io.volumes import volume_stem
from RRLMedSAMLib.run.distributed import launch_from_env

COHORT_FOLDER = "cohort"
COHORT_CSV = "cohort.csv"
SEGMENTED, SKIPPED, FAILED = "segmented", "skipped", "failed"
#: A deformation folding in more than this fraction of voxels is flagged in the cohort summary.
FOLDING_FLAG_FRACTION = 0.005
#: Result files every scan gets, and the one only some methods write (named in ``qc.json``).
REQUIRED_RESULTS = ("segmentation.nii.gz", "labels.csv", "warped_atlas_label.nii.gz", "warped_atlas_image.nii.gz",
                    "deformation.nrrd", "qc.json")
_SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_SUMMARY_PATTERN = re.compile(r"^shard-(\d+)-of-(\d+)\.json$")
_FIXED_COLUMNS = ("scan", "status", "seconds", "folding_percent", "missing_labels", "qc_flags")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` (1 <= K <= N) as a :class:`Shard`, or one clear :class:`InputError`."""
    match = _SHARD_PATTERN.match(text)
    if match is None:
        raise InputError(f"--shard {text!r} is not of the form K/N (e.g. 2/8: the second of eight shards).")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"--shard {text}: K must be between 1 and N (N at least 1), e.g. 1/{max(count, 2)}.")
    return Shard(index, count)


def shard_from_environment(env: Mapping[str, str] | None = None) -> Shard | None:
    """The shard of a process started by ``torchrun`` (its rank and world size); ``None`` for a single process."""
    launch = launch_from_env(env)
    return None if launch is None else Shard(launch.rank + 1, launch.world_size)


def choose_shard(option: str | None, env: Mapping[str, str] | None = None) -> tuple[Shard, bool]:
    """The shard of this process and whether it comes from torchrun: ``--shard`` or torchrun's, never both."""
    launched = shard_from_environment(env)
    if option is not None:
        if launched is not None and launched.count > 1:
            raise InputError(f"--shard {option} cannot be combined with torchrun's {launched.count} processes "
                             "(WORLD_SIZE); use one or the other.")
        return parse_shard(option), False
    if launched is not None:
        return launched, True
    return Shard(1, 1), False


def read_image_list(path: Path) -> list[Path]:
    """The scans of a list file: one path per line; blank lines and ``#`` comments ignored.

    Relative paths are relative to the list file's folder. Refuses (:class:`InputError`) an
    unreadable or empty list, missing scans and scans sharing a name (results are kept per name).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--image-list {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise InputError(f"--image-list {path} cannot be read ({reason}); give a text file with one scan path "
                         "per line.") from None
    base = Path(path).resolve().parent
    scans = []
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            scans.append(Path(os.path.normpath(Path(entry) if Path(entry).is_absolute() else base / entry)))
    if not scans:
        raise InputError(f"--image-list {path} names no scan (only blank lines or # comments); give one path per line.")
    missing = [p for p in scans if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"--image-list {path}: {missing[0]} is not a file{more}; fix the list before segmenting.")
    names = [volume_stem(p) for p in scans]
    seen: dict[str, Path] = {}
    for name, scan in zip(names, scans):
        if name in seen:
            raise InputError(f"--image-list {path}: {seen[name]} and {scan} share the name {name!r} (results are "
                             "written per name); give every scan a distinct file name.")
        seen[name] = scan
    return scans


def select_shard(scans: Sequence[Path], shard: Shard) -> list[Path]:
    """The scans of ``shard``: list position ``i`` (0-based) goes to shard ``i mod N + 1``."""
    return [scan for position, scan in enumerate(scans) if position % shard.count == shard.index - 1]


def read_qc(folder: Path) -> dict | None:
    """A result folder's ``qc.json`` (``None``: missing or unreadable)."""
    try:
        qc = json.loads((folder / "qc.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return qc if isinstance(qc, dict) else None


def complete_result(folder: Path, model_root: Path | None = None) -> dict | None:
    """``qc.json`` of ``folder`` when it holds a complete result (of ``model_root``'s model if given), else ``None``.

    Complete: ``qc.json`` readable and every result file present, the prompt mask included when
    ``qc.json`` names one. ``qc.json`` is written last, so an interrupted scan has none.
    """
    qc = read_qc(folder)
    if qc is None:
        return None
    needed = list(REQUIRED_RESULTS) + ([str(qc["prompt_mask"])] if qc.get("prompt_mask") else [])
    if not all((folder / name).is_file() for name in needed):
        return None
    if model_root is not None and qc.get("model") != str(Path(model_root).resolve()):
        return None
    return qc


def cohort_row(scan: Path, status: str, seconds: float, qc: dict | None = None, message: str = "") -> dict:
    """One scan's summary row: status, time, and (from ``qc.json``) volumes per label and QC flags."""
    row: dict = {"scan": volume_stem(scan), "image": str(scan), "status": status, "seconds": round(seconds, 2),
                 "message": " ".join(message.split())}
    if qc is not None:
        row["volumes_ml"] = {str(k): v for k, v in (qc.get("label_volumes_ml") or {}).items()}
        row["label_names"] = {str(k): v for k, v in (qc.get("label_names") or {}).items()}
        row["folding_fraction"] = qc.get("folding_fraction")
        row["missing_labels"] = [int(i) for i in qc.get("missing_labels") or []]
    return row


def qc_flags(row: Mapping) -> list[str]:
    """What a reviewer should look at: folding above :data:`FOLDING_FLAG_FRACTION`, missing structures, failure."""
    flags = []
    if row["status"] == FAILED:
        flags.append("failed")
    folding = row.get("folding_fraction")
    if folding is not None and folding > FOLDING_FLAG_FRACTION:
        flags.append(f"folding>{FOLDING_FLAG_FRACTION:.1%}")
    if row.get("missing_labels"):
        flags.append("missing labels " + " ".join(str(i) for i in row["missing_labels"]))
    return flags


def summary_path(out: Path, shard: Shard) -> Path:
    return Path(out) / COHORT_FOLDER / f"{shard.name}.json"


def cohort_id(scans: Sequence[Path], model_root: Path) -> str:
    """What identifies a cohort: its whole scan list (in order) and the model (short sha256)."""
    text = "\n".join([str(Path(model_root).resolve()), *(str(Path(s).resolve()) for s in scans)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_shard_summary(out: Path, shard: Shard, cohort: str, scans: Sequence[Path], rows: Sequence[dict],
                        finished: bool) -> Path:
    """Write (atomically) ``OUT/cohort/shard-K-of-N.json``: this shard's scans, its rows so far, whether it is done."""
    path = summary_path(out, shard)
    write_json_atomic(path, {"shard": shard.index, "of": shard.count, "cohort": cohort, "finished": finished,
                             "updated": time.time(), "scans": [str(s) for s in scans], "rows": list(rows)})
    return path


def read_shard_summaries(out: Path) -> dict[Shard, dict]:
    """Every readable shard summary in ``OUT/cohort``, keyed by shard."""
    folder = Path(out) / COHORT_FOLDER
    summaries = {}
    for path in sorted(folder.glob("shard-*-of-*.json")) if folder.is_dir() else []:
        match = _SUMMARY_PATTERN.match(path.name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if match and isinstance(data, dict):
            data["mtime"] = path.stat().st_mtime
            summaries[Shard(int(match.group(1)), int(match.group(2)))] = data
    return summaries


def latest_sharding(summaries: Mapping[Shard, dict]) -> tuple[int, str] | None:
    """Shard count N and cohort id of the most recent summary (older shardings or cohorts in OUT are ignored)."""
    if not summaries:
        return None
    shard, data = max(summaries.items(), key=lambda item: item[1]["mtime"])
    return shard.count, str(data.get("cohort"))


def unfinished_shards(summaries: Mapping[Shard, dict], count: int, cohort: str, since: float | None = None) -> list[Shard]:
    """Shards of ``count`` without a finished summary of ``cohort`` (written after ``since``, a Unix time, if given)."""
    waiting = []
    for index in range(1, count + 1):
        data = summaries.get(Shard(index, count))
        if (data is None or not data.get("finished") or data.get("cohort") != cohort
                or (since is not None and data["mtime"] < since)):
            waiting.append(Shard(index, count))
    return waiting


def wait_for_shards(out: Path, count: int, cohort: str, since: float | None, timeout_s: float,
                    poll_s: float = 0.5) -> list[Shard]:
    """Wait until every shard has a finished summary of ``cohort`` written after ``since``; return those still missing."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = unfinished_shards(read_shard_summaries(out), count, cohort, since)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(poll_s)


def cohort_table(rows: Sequence[Mapping]) -> tuple[list[str], list[list]]:
    """Header and rows of ``cohort.csv``: fixed columns, one ``<name> (ml)`` column per label id, image, message."""
    names: dict[int, str] = {}
    for row in rows:
        for key, name in (row.get("label_names") or {}).items():
            names.setdefault(int(key), str(name))
        for key in row.get("volumes_ml") or {}:
            names.setdefault(int(key), f"Label {key}")
    ids = sorted(names)
    counts = {n: list(names.values()).count(n) for n in names.values()}
    volume_columns = [f"{names[i]} (ml)" if counts[names[i]] == 1 else f"{names[i]} [{i}] (ml)" for i in ids]
    header = [*_FIXED_COLUMNS, *volume_columns, "image", "message"]
    table = []
    for row in sorted(rows, key=lambda r: r["scan"]):
        folding = row.get("folding_fraction")
        volumes = row.get("volumes_ml") or {}
        table.append([row["scan"], row["status"], row["seconds"],
                      "" if folding is None else round(100.0 * folding, 4),
                      " ".join(str(i) for i in row.get("missing_labels") or []), "; ".join(qc_flags(row)),
                      *[volumes.get(str(i), "") for i in ids], row["image"], row.get("message", "")])
    return header, table


def assemble_cohort(out: Path) -> tuple[Path, dict[str, int]]:
    """Write ``OUT/cohort/cohort.csv`` from the latest sharding's summaries; return it and the count per status.

    Raises :class:`InputError` (nothing written) when ``OUT`` has no summaries or a shard has not
    finished (a summary of an older cohort or sharding in ``OUT`` counts as not finished).
    """
    out = Path(out)
    summaries = read_shard_summaries(out)
    latest = latest_sharding(summaries)
    if latest is None:
        raise InputError(f"{out} has no cohort summaries ({COHORT_FOLDER}/shard-K-of-N.json); run 'rrlmedsam segment "
                         "--image-list ...' into it first.")
    count, cohort = latest
    missing = unfinished_shards(summaries, count, cohort)
    if missing:
        raise InputError(f"{out}: shard(s) {', '.join(str(s) for s in missing)} have not finished (no complete "
                         f"{COHORT_FOLDER}/{missing[0].name}.json); run or wait for them, then summarize again.")
    rows: dict[str, dict] = {}
    for index in range(1, count + 1):
        for row in summaries[Shard(index, count)]["rows"]:
            rows[row["scan"]] = row
    header, table = cohort_table(list(rows.values()))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(table)
    path = out / COHORT_FOLDER / COHORT_CSV
    write_text_atomic(path, buffer.getvalue())
    statuses = {status: sum(r["status"] == status for r in rows.values()) for status in (SEGMENTED, SKIPPED, FAILED)}
    return path, statuses
