"""InstallLogic's decisions: what is missing, the temporary build copy, constraints, offline wheels.

The real installation into a fresh environment from a read-only install tree is in
``Testing/install/test_install_tree.py``; these tests check the pieces with pip replaced.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from slicer_test_helpers import REPO_ROOT

from RRLMedSAMSlicerLib import InstallLogic as il  # noqa: E402


def test_engine_source_is_found_in_the_checkout_and_its_version_read():
    root = il.engine_root()
    assert root == REPO_ROOT
    assert il.bundled_engine_version(root) == __import__("RRLMedSAMLib").__version__
    dependencies = il.engine_dependencies(root)
    assert dependencies and not any(dep.lower().startswith("torch") for dep in dependencies)


def _read_only_tree(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_ensure_builds_a_temporary_copy_with_constraints_and_never_writes_the_source(monkeypatch, tmp_path):
    versions = {"torch": "2.13.0", "numpy": "2.1.0", "SimpleITK": "2.4.1", il.ENGINE_DISTRIBUTION: "0.0.1"}
    monkeypatch.setattr(il, "installed_version", lambda name: versions.get(name))
    monkeypatch.setattr(il, "requirement_satisfied", lambda req: not req.startswith("monai"))
    root = tmp_path / "RRLMedSAMEngine"
    il.copy_engine_source(REPO_ROOT, root)
    _read_only_tree(root)
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))
    seen = {}

    def fake_pip(arguments):
        source = Path(arguments[0])
        seen["arguments"] = arguments
        seen["constraints"] = Path(arguments[arguments.index("--constraint") + 1]).read_text().split()
        seen["copied"] = sorted(p.name for p in source.iterdir())
        (source / "build").mkdir()  # pip writes here: it must be the copy, and the copy must be writable
        versions[il.ENGINE_DISTRIBUTION] = il.bundled_engine_version(root)
        monkeypatch.setattr(il, "requirement_satisfied", lambda req: True)

    logic = il.InstallLogic(root, install_torch=lambda: pytest.fail("torch is installed"), pip_install=fake_pip,
                            confirm=lambda pending: pytest.fail("no prompt was asked for"))
    pending = logic.missing()
    assert f"{il.ENGINE_DISTRIBUTION}=={il.bundled_engine_version(root)}" in pending and any(p.startswith("monai") for p in pending)
    logic.ensure(prompt=False)
    assert logic.ready()
    assert not Path(seen["arguments"][0]).exists(), "the temporary copy is removed"
    assert not str(seen["arguments"][0]).startswith(str(root))
    assert seen["copied"] == sorted(il.ENGINE_SOURCE_ITEMS)
    assert seen["constraints"] == ["numpy==2.1.0", "SimpleITK==2.4.1", "torch==2.13.0"]
    assert "--no-index" not in seen["arguments"]
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_offline_install_uses_only_the_wheelhouse(monkeypatch, tmp_path):
    monkeypatch.setattr(il, "installed_version", lambda name: "2.13.0" if name == "torch" else None)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    monkeypatch.setenv(il.WHEELHOUSE_ENV, str(wheels))
    calls = []
    logic = il.InstallLogic(REPO_ROOT, install_torch=lambda: True, pip_install=calls.append, confirm=lambda p: True)
    with pytest.raises(il.InstallError, match="Still missing"):
        logic.ensure()
    arguments = calls[0]
    assert arguments[arguments.index("--find-links") + 1] == str(wheels) and "--no-index" in arguments


def test_missing_wheelhouse_and_declined_prompt_are_errors(monkeypatch, tmp_path):
    monkeypatch.setattr(il, "installed_version", lambda name: "2.13.0" if name == "torch" else None)
    declined = il.InstallLogic(REPO_ROOT, install_torch=lambda: True, pip_install=lambda a: pytest.fail("declined"),
                               confirm=lambda pending: False)
    with pytest.raises(il.InstallError, match="cancelled"):
        declined.ensure(prompt=True)
    nowhere = il.InstallLogic(REPO_ROOT, install_torch=lambda: True, pip_install=lambda a: pytest.fail("no wheels"),
                              confirm=lambda pending: True, wheelhouse=tmp_path / "absent")
    with pytest.raises(il.InstallError, match="does not exist"):
        nowhere.ensure()


def test_failed_pip_names_what_to_check(monkeypatch):
    monkeypatch.setattr(il, "installed_version", lambda name: "2.13.0" if name == "torch" else None)

    def failing(arguments):
        raise RuntimeError("pip exited with code 1")

    logic = il.InstallLogic(REPO_ROOT, install_torch=lambda: True, pip_install=failing, confirm=lambda p: True)
    with pytest.raises(il.InstallError, match="network connection"):
        logic.ensure()


def test_declined_torch_install_is_an_error(monkeypatch):
    monkeypatch.setattr(il, "installed_version", lambda name: None)
    logic = il.InstallLogic(REPO_ROOT, install_torch=lambda: False, pip_install=lambda a: None, confirm=lambda p: True)
    with pytest.raises(il.InstallError, match="PyTorch is required"):
        logic.ensure()


def test_incomplete_engine_source_is_reported(tmp_path):
    with pytest.raises(il.InstallError, match="incomplete"):
        il.copy_engine_source(tmp_path / "empty", tmp_path / "copy")
