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
    shared_stages.json   which stages were copied from another run (``--share-stages-from``), if any
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
    """Configuration of a run whose training finished (``model.safetensors`` present)."""
    config = read_config(run)
    if not run.model.exists():
        raise InputError(f"Training in {run.root} has not finished (no model.safetensors); resume it with 'rrlmedsam train --resume'.")
    return config


def path_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Absolute path and size of an input file (to check that a resume uses the same inputs)."""
    path = Path(path).resolve()
    return {"path": str(path), "bytes": path.stat().st_size}
