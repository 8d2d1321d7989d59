"""The run folder: where a training keeps its configuration, caches, checkpoints and model.

Layout::

    config.json          resolved configuration (inputs, preset, method, seed, versions)
    labels.csv           label table of the atlas (id, name, r, g, b)
    atlas/               the validated atlas image and label (segment needs them)
    cache/               prepared working-grid data and pseudo labels
    checkpoints/         one checkpoint per stage, written atomically
    progress.jsonl       every progress event
    model.safetensors    final weights of every network
    model_card.json      data used, date, configuration hash, engine version, parameter counts
    shared_stages.json   which stages the benchmark copied from another run (``bench/stage_sharing.py``), if any
    volume_calibration.json  the run's measured volume calibration, if any
    run_state.json       running / interrupted / failed / finished (``run/state.py``)
    .rrlmedsam.lock      the folder's lock (and ``.rrlmedsam.lock.owner`` while held)

:func:`clear_run_layout` deletes exactly these files (and the engine's temporary files beside
them) when a failed run is started afresh; anything else in the folder is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from RRLMedSAMLib import MODEL_FORMAT_VERSION, __version__
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.file_hash import sha256_file


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def labels(self) -> Path:
        return self.root / "labels.csv"

    @property
    def atlas_image(self) -> Path:
        return self.root / "atlas" / "atlas_image.nii.gz"

    @property
    def atlas_label(self) -> Path:
        return self.root / "atlas" / "atlas_label.nii.gz"

    @property
    def prepared(self) -> Path:
        return self.root / "cache" / "prepared.safetensors"

    @property
    def prealignment(self) -> Path:
        """Each training scan's affine keyed by the sha256 of its file (``segment`` reuses them)."""
        return self.root / "cache" / "prealignment.json"

    @property
    def pseudo_labels(self) -> Path:
        return self.root / "cache" / "pseudo_labels.safetensors"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / f"{stage}.safetensors"

    @property
    def progress(self) -> Path:
        return self.root / "progress.jsonl"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def model_card(self) -> Path:
        return self.root / "model_card.json"

    @property
    def shared_stages(self) -> Path:
        return self.root / "shared_stages.json"


def config_hash(config: dict[str, Any]) -> str:
    """Short sha256 of the configuration's canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def read_config(run: RunFolder) -> dict[str, Any]:
    """The run's configuration; refuses folders that are not runs or come from another format."""
    if not run.config.exists():
        raise InputError(f"{run.root} is not a training run folder (no config.json); pass the --out folder of 'rrlmedsam train'.")
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"Cannot read {run.config}: {error}.") from None
    version = config.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise InputError(
            f"Run folder {run.root} was written by an incompatible engine (model format {version!r}, "
            f"engine {config.get('engine_version', 'unknown')}); this engine {__version__} reads format "
            f"{MODEL_FORMAT_VERSION}. Retrain with this version or use the matching engine."
        )
    return config


def require_trained_model(run: RunFolder) -> dict[str, Any]:
    """Configuration of a run whose training finished (``model.safetensors`` present, matching its recorded sha256)."""
    config = read_config(run)
    if not run.model.exists():
        raise InputError(f"Training in {run.root} has not finished (no model.safetensors); resume it with 'rrlmedsam train --resume'.")
    verify_model_checksum(run)
    return config


def verify_model_checksum(run: RunFolder) -> None:
    """Compare ``model.safetensors`` with the sha256 in ``model_card.json`` (runs whose card has none are not checked)."""
    if not run.model_card.is_file():
        return
    try:
        card = json.loads(run.model_card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read {run.model_card}: {error}. Copy the run folder again or retrain.") from None
    expected = card.get("model_sha256") if isinstance(card, dict) else None
    if expected and sha256_file(run.model) != expected:
        raise InputError(f"{run.model} does not match the sha256 recorded in {run.model_card.name}: the file is damaged "
                         "or was replaced. Copy the run folder again or retrain.")


def path_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Absolute path and size of an input file (to check that a resume uses the same inputs)."""
    path = Path(path).resolve()
    return {"path": str(path), "bytes": path.stat().st_size}


#: Files of the layout above, relative to the run folder (``clear_run_layout`` removes them).
RUN_FILES = ("config.json", "labels.csv", "progress.jsonl", "model.safetensors", "model_card.json",
             "shared_stages.json", "volume_calibration.json", "run_state.json", "atlas/atlas_image.nii.gz",
             "atlas/atlas_label.nii.gz", "cache/prepared.safetensors", "cache/prealignment.json",
             "cache/pseudo_labels.safetensors", "cache/distill_images.safetensors")
#: Folders whose ``*.safetensors`` files are all the engine's (stage checkpoints, teacher feature cache).
ENGINE_FOLDERS = ("checkpoints", "cache/teacher")


def _is_engine_file(path: Path, names: list[str]) -> bool:
    """One of ``names``, or a leftover temporary of :func:`RRLMedSAMLib.io.atomic.atomic_path` for one of them."""
    return path.name in names or (path.name.startswith(".") and any(path.name.startswith(f".{n.split('.')[0]}.")
                                                                     for n in names))


def clear_run_layout(run: RunFolder) -> None:
    """Delete the files of the run layout (and the engine's temporary files beside them), then the folders
    of the layout left empty; never anything else."""
    by_folder: dict[Path, list[str]] = {}
    for relative in RUN_FILES:
        by_folder.setdefault((run.root / relative).parent, []).append(Path(relative).name)
    for folder, names in by_folder.items():
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and _is_engine_file(path, names):
                    path.unlink()
    for relative in ENGINE_FOLDERS:
        folder = run.root / relative
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_file() and path.name.endswith(".safetensors"):
                    path.unlink()
    for relative in (*ENGINE_FOLDERS, "atlas", "cache"):
        folder = run.root / relative
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def stored_run_state(run: RunFolder) -> str | None:
    """The ``state`` recorded in ``run_state.json`` (``None``: no file, or unreadable)."""
    try:
        return json.loads((run.root / "run_state.json").read_text(encoding="utf-8")).get("state")
    except (OSError, ValueError, AttributeError):
        return None
