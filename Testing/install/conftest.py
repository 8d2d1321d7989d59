"""One fresh virtual environment per test run, shared by the install tests.

It holds what a user's Python holds before the engine arrives: torch (as the PyTorch extension
or ``pip install torch`` gives it) and ``slicer-core`` (Slicer's MRML, for the module's Logic).
The engine is then installed into it the way each test's user installs it: a wheel built from the
repository, or the module's own InstallLogic from the extension's install tree. Nothing in it
comes from the repository checkout (no editable install, no PYTHONPATH).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: What building the engine reads from the repository (as pip copies it for a non-editable build).
ENGINE_SOURCE_ITEMS = ("pyproject.toml", "setup.py", "README.md", "RRLMedSAMLib", "Resources")


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without anything that would point Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(extra)
    return env


def check_run(command: list[str | os.PathLike], timeout: float = 1200, **options) -> subprocess.CompletedProcess:
    """Run ``command``; fail the test with its output tail when it exits non-zero."""
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout,
                            env=options.pop("env", clean_env()), **options)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def fresh_python(tmp_path_factory) -> Path:
    """Interpreter of a new virtual environment with torch and slicer-core, and no engine."""
    env_dir = tmp_path_factory.mktemp("fresh-env") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    check_run([base, "-m", "venv", env_dir])
    python = env_dir / "bin" / "python"
    torch = os.environ.get("TORCH_REQUIREMENT", "torch==2.13.0")
    check_run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", torch, "slicer-core"])
    return python


@pytest.fixture(scope="session")
def engine_wheel(tmp_path_factory) -> Path:
    """A wheel of the engine, built from a copy of the repository's engine files."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for item in ENGINE_SOURCE_ITEMS:
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, source / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(REPO / item, source / item)
    check_run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
               "--wheel-dir", work / "dist", source])
    (wheel,) = (work / "dist").glob("*.whl")
    return wheel
