"""What a stored run configuration (``config.json``) says: its method, preset, RRL settings, teacher and working grid.

Runs made before a field existed read with that field's historical meaning (plain method, no
teacher, the working grid recomputed from the atlas label).
"""

from __future__ import annotations

import SimpleITK as sitk

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, stored_or_legacy_grid
from RRLMedSAMLib.run.methods import Method, get_method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings, get_rrl_settings
from RRLMedSAMLib.run.teacher import no_teacher


def run_settings(config: dict) -> tuple[Method, Preset, RRLSettings, dict]:
    """Method, preset, RRL settings and teacher record of a stored configuration (older runs: plain, no teacher)."""
    preset = Preset.from_dict(config["preset"])
    settings = RRLSettings.from_dict(config["rrl"]) if "rrl" in config else get_rrl_settings(preset.name)
    teacher = config.get("teacher") or no_teacher("run made before teachers existed")
    return get_method(config.get("method", "plain")), preset, settings, teacher


def run_working_grid(config: dict, atlas_label: sitk.Image) -> WorkingGrid:
    """The working grid of a stored configuration (recorded at training; older runs: recomputed)."""
    preset = Preset.from_dict(config["preset"])
    return stored_or_legacy_grid(config.get("working_grid"), atlas_label, preset.grid_size, preset.grid_divisor)
