"""Packaging metadata: every module file is listed in CMake, the extension CMakeLists and catalog entry are complete."""

from __future__ import annotations

import json
import re

from slicer_test_helpers import MODULE_DIR, REPO_ROOT

IGNORED_PARTS = {"__pycache__", ".pytest_cache"}


def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"{variable} is not set"
    return [item.replace("${MODULE_NAME}", "RRLMedSAM") for item in match.group(1).split()]


def module_files() -> set[str]:
    return {
        path.relative_to(MODULE_DIR).as_posix()
        for path in MODULE_DIR.rglob("*")
        if path.is_file() and not IGNORED_PARTS & set(path.parts) and path.suffix != ".pyc" and path.name != "CMakeLists.txt"
    }


def test_every_module_file_is_listed_and_every_listed_file_exists():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    listed = set(scripts) | set(resources)
    assert all(item.endswith(".py") for item in scripts)
    assert not any(item.endswith(".py") for item in resources)
    assert module_files() - listed == set(), "files under RRLMedSAM/ missing from RRLMedSAM/CMakeLists.txt"
    assert listed - module_files() == set(), "RRLMedSAM/CMakeLists.txt lists files that do not exist"


def test_extension_cmakelists_follows_the_template():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert values.get(key), f"{key} is empty"
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert values["EXTENSION_DEPENDS"] == "PyTorch"
    for url_key in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        relative = values[url_key].split("/main/", 1)[1]
        assert (REPO_ROOT / relative).is_file(), f"{url_key} points to {relative}, which is not in the repository"
    assert "add_subdirectory(RRLMedSAM)" in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text


def test_catalog_entry_matches_the_cmakelists():
    entry = json.loads((REPO_ROOT / "RRLMedSAM.json").read_text())
    assert entry["$schema"].startswith("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema")
    assert entry["category"] == "Segmentation" and "PyTorch" in entry["build_dependencies"]
    homepage = re.search(r'EXTENSION_HOMEPAGE\s+"([^"]+)"', (REPO_ROOT / "CMakeLists.txt").read_text()).group(1)
    assert entry["scm_url"].removesuffix(".git") == homepage
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type", "scm_url", "tier"}
    assert set(entry) <= allowed, "the catalog schema allows no other keys"


def test_entry_file_is_short():
    lines = (MODULE_DIR / "RRLMedSAM.py").read_text().splitlines()
    assert len(lines) <= 100, "keep RRLMedSAM.py thin: module class, widget wrapper, self-test entry"
