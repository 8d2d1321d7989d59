"""The extension as Slicer installs it: the module's own InstallLogic, from a read-only install tree.

The tree is laid out from ``RRLMedSAM/CMakeLists.txt``'s rules and made read-only, and a folder of
wheels is built by the user guide's offline recipe. In a fresh
environment holding what Slicer and the PyTorch extension provide (torch, slicer-core's MRML), the
installed module installs the engine from those wheels only (``--no-index``), then its Logic trains, segments and loads the results into
an MRML scene through real engine processes. Nothing is imported from the repository checkout,
and the install tree is byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cmake_install_tree import lay_out_install_tree, make_read_only, make_writable, snapshot
from conftest import REPO, check_run, clean_env

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).with_name("install_tree_driver.py")


def build_wheelhouse(python: Path, engine: Path, wheels: Path, scratch: Path) -> None:
    """The user guide's offline recipe: wheels of the engine and its dependencies, torch removed.

    torch is pinned to the environment's own version (the guide's users delete whatever torch
    wheel pip fetched; here that keeps the test from downloading another build).
    """
    copy = scratch / "engine"
    shutil.copytree(engine, copy)
    make_writable(copy)
    torch_version = check_run([python, "-c", "import torch; print(torch.__version__)"]).stdout.strip()
    pins = scratch / "pins.txt"
    pins.write_text(f"torch=={torch_version}\n")
    check_run([python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", wheels,
               "--constraint", pins, copy, "setuptools>=77"])
    for wheel in [*wheels.glob("torch-*.whl"), *wheels.glob("nvidia_*.whl")]:
        wheel.unlink()


def test_module_installs_the_engine_offline_from_a_read_only_tree_and_runs_it(fresh_python, tmp_path):
    check_run([fresh_python, "-m", "pip", "--disable-pip-version-check", "uninstall", "--yes", "RRLMedSAMLib"])
    prefix = tmp_path / "extension"
    modules = lay_out_install_tree(REPO, prefix)
    make_read_only(prefix)
    wheels = tmp_path / "wheels"
    build_wheelhouse(fresh_python, modules / "RRLMedSAMEngine", wheels, tmp_path)
    before = snapshot(prefix)
    work = tmp_path / "work"
    work.mkdir()
    # As root, permission bits do not stop writes; -B keeps Python from writing bytecode next to the
    # module, as a read-only folder would, so any other write into the tree shows up below.
    env = clean_env(RRLMEDSAM_WEIGHTS_DIR=str(tmp_path / "no-weights"), RRLMEDSAM_WHEELHOUSE=str(wheels))
    try:
        result = check_run([fresh_python, "-I", "-B", DRIVER, modules, work], cwd=work, env=env)
    finally:
        after = snapshot(prefix)
        make_writable(prefix)
    assert after == before, "the install tree was written to"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert any(item.startswith("RRLMedSAMLib==") for item in report["missing_before"]) and report["ready_after"]
    assert report["wheelhouse"] == str(wheels)
    assert Path(report["module_file"]).is_relative_to(modules)
    engine = Path(report["engine_file"])
    assert not engine.is_relative_to(REPO) and not engine.is_relative_to(prefix)
    assert engine.is_relative_to(fresh_python.parent.parent)
    assert report["segmentations"] == ["Case A segmentation", "Case B segmentation"]
    assert report["segment_counts"] == [2, 2]
    assert report["deformations"] == ["vtkOrientedGridTransform"] * 2
