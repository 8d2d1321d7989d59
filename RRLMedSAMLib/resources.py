"""Where the extension-level resources live (``Resources/`` at the repository root).

Override with the environment variable ``RRLMEDSAM_RESOURCES`` (e.g. for an installed copy).
"""

from __future__ import annotations

import os
from pathlib import Path

from RRLMedSAMLib.errors import InputError


def resources_dir() -> Path:
    """The ``Resources`` folder: ``$RRLMEDSAM_RESOURCES`` or the repository's own."""
    configured = os.environ.get("RRLMEDSAM_RESOURCES")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "Resources"


def sample_data_dir() -> Path:
    """The embedded demo data (atlas, unlabelled scans, their labels for evaluation)."""
    folder = resources_dir() / "SampleData"
    if not (folder / "atlas_image.nii.gz").exists():
        raise InputError(
            f"Sample data not found in {folder}; run from a repository checkout or set RRLMEDSAM_RESOURCES "
            "to the extension's Resources folder."
        )
    return folder
