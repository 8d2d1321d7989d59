"""What a stored run configuration (``config.json``) says: its method, preset, RRL settings, teacher and working grid.

Every field is required: a run of another model format is refused before this is read
(:func:`RRLMedSAMLib.run.folder.require_trained_model`).
"""

from __future__ import annotations

from RRLMedSAMLib.geometry.working_grid import WorkingGrid
from RRLMedSAMLib.run.methods import Method, get_method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings


def run_settings(config: dict) -> tuple[Method, Preset, RRLSettings, dict]:
    """Method, preset, RRL settings and teacher record of a stored configuration."""
    return get_method(config["method"]), Preset.from_dict(config["preset"]), RRLSettings.from_dict(config["rrl"]), config["teacher"]


def run_working_grid(config: dict) -> WorkingGrid:
    """The working grid a stored configuration recorded at training."""
    return WorkingGrid.from_dict(config["working_grid"])
