"""Load segment-anything's model code without running ``segment_anything/__init__.py``.

The package's top-level ``__init__`` imports its automatic mask generator, which imports
torchvision; torchvision is not installable next to our CPU torch. The model classes themselves
(``modeling/image_encoder.py``, ``mask_decoder.py``, ``transformer.py``, ``prompt_encoder.py``,
``common.py``) only need torch and numpy. We locate the installed package's folder with
:func:`importlib.util.find_spec` (which does not execute the package), register a synthetic
package whose ``__path__`` is that ``modeling`` folder, and import the files as its submodules;
their relative imports (``from .common import ...``) then resolve inside the synthetic package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

from ..errors import InputError

#: Name of the synthetic package that holds segment-anything's ``modeling`` files.
SYNTHETIC_PACKAGE = "_rrlmedsam_segment_anything_modeling"

_LOCK = threading.Lock()


def segment_anything_modeling_dir() -> Path:
    """Folder ``segment_anything/modeling`` of the installed package (not imported)."""
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "The 'segment-anything' package is not installed; install it with "
            "'pip install segment-anything' (its model code is needed for the SAM teacher)."
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "modeling"
        if (folder / "image_encoder.py").is_file():
            return folder
    raise InputError("The installed 'segment-anything' package has no modeling/image_encoder.py; reinstall it.")


def _synthetic_package() -> types.ModuleType:
    package = sys.modules.get(SYNTHETIC_PACKAGE)
    if package is None:
        package = types.ModuleType(SYNTHETIC_PACKAGE)
        package.__path__ = [str(segment_anything_modeling_dir())]
        package.__package__ = SYNTHETIC_PACKAGE
        sys.modules[SYNTHETIC_PACKAGE] = package
    return package


def sam_modeling_module(name: str) -> types.ModuleType:
    """Return segment-anything's ``modeling/<name>.py`` as a module, loaded torchvision-free.

    Args:
        name: one of ``image_encoder``, ``mask_decoder``, ``transformer``, ``prompt_encoder``,
            ``common``.
    """
    allowed = {"image_encoder", "mask_decoder", "transformer", "prompt_encoder", "common"}
    if name not in allowed:
        raise ValueError(f"unknown segment-anything modeling file {name!r}; expected one of {sorted(allowed)}")
    with _LOCK:
        _synthetic_package()
        return importlib.import_module(f"{SYNTHETIC_PACKAGE}.{name}")
