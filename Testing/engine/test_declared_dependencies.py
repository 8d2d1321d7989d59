"""Every third-party import is declared in ``pyproject.toml``.

The engine (``RRLMedSAMLib/``) may import only its ``dependencies`` (and, for the benchmark's
peers, the ``bench`` extra); tests, benchmarks and doc scripts may also use the ``test`` extra.
Import names are mapped to distributions by the installed packages' own metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-") for req in requirements}


def _top_level_imports(folders: list[Path]) -> dict[str, Path]:
    """Absolute imports' top-level names (outside the standard library) -> a file importing it."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path)
    return {name: path for name, path in found.items() if name not in sys.stdlib_module_names}


def _local_modules() -> set[str]:
    """Modules of this repository imported by plain name (test helpers, bench scripts, the Slicer module)."""
    names = {path.stem for path in REPO.rglob("*.py") if ".venv" not in path.parts}
    return names | {"RRLMedSAMLib", "RRLMedSAMSlicerLib"}


def _undeclared(folders: list[Path], declared: set[str]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    local = _local_modules()
    problems = []
    for name, path in sorted(_top_level_imports(folders).items()):
        if name in local:
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(name, [])}
        if not owners:
            problems.append(f"{name} (imported by {path.relative_to(REPO)}) is not installed, so not declared")
        elif not owners & declared:
            problems.append(f"{name} (distribution {', '.join(sorted(owners))}, imported by {path.relative_to(REPO)})")
    return problems


def test_engine_imports_only_declared_dependencies():
    declared = _names(PYPROJECT["project"]["dependencies"]) | _names(PYPROJECT["project"]["optional-dependencies"]["bench"])
    assert _undeclared([REPO / "RRLMedSAMLib"], declared) == []


def test_tests_and_scripts_import_only_declared_dependencies():
    extras = PYPROJECT["project"]["optional-dependencies"]
    declared = _names(PYPROJECT["project"]["dependencies"]) | _names(extras["test"]) | _names(extras["bench"])
    folders = [REPO / "Testing", REPO / "bench", REPO / "docs" / "scripts", REPO / "Resources"]
    assert _undeclared(folders, declared) == []


def test_no_declared_dependency_goes_unused():
    used = _top_level_imports([REPO / "RRLMedSAMLib"])
    distributions = importlib.metadata.packages_distributions()
    imported = {d.lower().replace("_", "-") for name in used for d in distributions.get(name, [])}
    # segment-anything's model code is loaded without its package's top-level import (it needs torchvision)
    loaded_by_path = {"segment-anything"}
    assert _names(PYPROJECT["project"]["dependencies"]) - imported - loaded_by_path == set()
