"""Files the engine ships as package data: the SAM checkpoint manifest and the demo's sample data.

They live in the data package ``RRLMedSAMLib.bundled`` (the repository's ``Resources/`` folder,
mapped by ``pyproject.toml``) and are found through :mod:`importlib.resources`, so an installed
engine (wheel, ``pip install``, the Slicer extension) reads them from wherever it is installed,
whatever the working directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from RRLMedSAMLib.errors import InputError

BUNDLED_PACKAGE = "RRLMedSAMLib.bundled"


def bundled_path(*parts: str) -> Path:
    """Path of a shipped file or folder, e.g. ``bundled_path("models", "sam_checkpoints.json")``.

    Raises :class:`InputError` when the installation lacks it (a broken or partial install).
    """
    try:
        root = resources.files(BUNDLED_PACKAGE)
    except ModuleNotFoundError:
        raise InputError(
            f"The engine's package data ({BUNDLED_PACKAGE}) is missing: reinstall RRLMedSAMLib "
            "(pip install of the repository or of its wheel)."
        ) from None
    path = Path(str(root.joinpath(*parts)))
    if not path.exists():
        raise InputError(f"{'/'.join(parts)} is missing from the installed engine ({path}); reinstall RRLMedSAMLib.")
    return path


def sample_data_dir() -> Path:
    """The embedded demo data (atlas, unlabelled scans, their labels for evaluation, ``labels.csv``)."""
    folder = bundled_path("SampleData")
    if not (folder / "atlas_image.nii.gz").is_file():
        raise InputError(f"The sample data in {folder} is incomplete (no atlas_image.nii.gz); reinstall RRLMedSAMLib.")
    return folder


def manifest_path() -> Path:
    """The SAM checkpoint manifest (names, URLs and published sha256 of the known weights)."""
    return bundled_path("models", "sam_checkpoints.json")
