"""Lay out the extension's install tree exactly as ``RRLMedSAM/CMakeLists.txt`` installs it.

No Slicer SDK exists here, so the module's install rules are read from the CMake file itself:
``MODULE_PYTHON_SCRIPTS`` and ``MODULE_PYTHON_RESOURCES`` (what ``slicerMacroBuildScriptedModule``
copies into the scripted-modules folder, relative paths kept) and every ``install(FILES ...)`` /
``install(DIRECTORY ...)`` rule with its ``PATTERN ... EXCLUDE`` filters. Changing the CMake file
changes the tree the install tests use.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import stat
from pathlib import Path

#: Where Slicer puts scripted modules, relative to the extension's install prefix.
SCRIPTED_MODULES_DIR = "lib/Slicer-5.10/qt-scripted-modules"


def _list_variable(text: str, name: str) -> list[str]:
    match = re.search(rf"set\({name}\s+(.*?)\)", text, re.DOTALL)
    if not match:
        raise ValueError(f"{name} not set in the module's CMakeLists.txt")
    return match.group(1).split()


def _expand(token: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        token = token.replace("${" + name + "}", value)
    if "${" in token:
        raise ValueError(f"unknown CMake variable in {token!r}")
    return token


def _copy_directory(source: Path, destination: Path, excluded: list[str]) -> None:
    """``install(DIRECTORY source ...)``: ``source`` (no trailing slash) lands as ``destination/<name>``."""
    def ignore(folder: str, names: list[str]) -> list[str]:
        return [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in excluded)]

    shutil.copytree(source, destination / source.name, ignore=ignore, dirs_exist_ok=True)


def lay_out_install_tree(repo: Path, prefix: Path) -> Path:
    """Install the module and its engine under ``prefix``; returns the scripted-modules folder."""
    cmake = repo / "RRLMedSAM" / "CMakeLists.txt"
    text = re.sub(r"#[^\n]*", "", cmake.read_text(encoding="utf-8"))
    module_source = cmake.parent
    modules = prefix / SCRIPTED_MODULES_DIR
    module_name = _list_variable(text, "MODULE_NAME")[0]
    variables = {"MODULE_NAME": module_name, "CMAKE_CURRENT_SOURCE_DIR": str(module_source),
                 "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR": str(modules)}
    for relative in _list_variable(text, "MODULE_PYTHON_SCRIPTS") + _list_variable(text, "MODULE_PYTHON_RESOURCES"):
        relative = _expand(relative, variables)
        (modules / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module_source / relative, modules / relative)
    for name, value in re.findall(r"set\((\w+)\s+([^\s)]+)\)", text):
        if name not in variables:
            variables[name] = _expand(value, variables)
    for kind, body in re.findall(r"install\((FILES|DIRECTORY)(.*?)\)", text, re.DOTALL):
        tokens = body.split()
        at = tokens.index("DESTINATION")
        sources = [Path(_expand(token, variables)).resolve() for token in tokens[:at]]
        destination = Path(_expand(tokens[at + 1], variables))
        excluded = [tokens[i + 1].strip('"') for i, token in enumerate(tokens) if token == "PATTERN" and tokens[i + 2] == "EXCLUDE"]
        destination.mkdir(parents=True, exist_ok=True)
        for source in sources:
            if kind == "FILES":
                shutil.copyfile(source, destination / source.name)
            else:
                _copy_directory(source, destination, excluded)
    return modules


def make_read_only(folder: Path) -> None:
    """Remove every write permission under ``folder`` (as an installed extension folder may be)."""
    for path in [*folder.rglob("*"), folder]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_writable(folder: Path) -> None:
    """Undo :func:`make_read_only` (so the test's temporary folder can be removed)."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def snapshot(folder: Path) -> list[tuple[str, int, int]]:
    """Every path under ``folder`` with its size and modification time (to prove nothing changed)."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))
