"""The engine's layers, read from the source with ``ast``: no import cycle, training and inference apart, no Qt.

Every module of ``RRLMedSAMLib`` is parsed; its imports are collected wherever they stand (top
level, inside functions, under ``if TYPE_CHECKING``), relative imports resolved against the
module's package, and ``from package import name`` counted as an import of ``package.name`` when
that is a module. The engine then must have:

(a) no import cycle between its modules;
(b) no edge between ``RRLMedSAMLib.inference`` and ``RRLMedSAMLib.training``, either way (what
    both need lives in ``RRLMedSAMLib.run`` and ``RRLMedSAMLib.registration``);
(c) no Qt or Slicer import (the engine runs headless, outside Slicer's GUI thread).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import RRLMedSAMLib

PACKAGE = "RRLMedSAMLib"
ROOT = Path(RRLMedSAMLib.__file__).resolve().parent
GUI_MODULES = ("qt", "slicer", "ctk", "vtk", "PythonQt", "PyQt5", "PyQt6", "PySide2", "PySide6", "mrml")
FORBIDDEN_LAYERS = (("inference", "training"), ("training", "inference"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _engine_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every module ``name`` imports (engine modules resolved to the longest known prefix, others as written)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in modules)
    return found


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(engine edges, all imports)`` per engine module."""
    paths = _engine_modules()
    modules = set(paths)
    imports = {name: _imports(name, path, modules) for name, path in paths.items()}
    edges = {name: {target for target in targets if target in modules and target != name}
             for name, targets in imports.items()}
    return edges, imports


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_the_parser_sees_the_engine() -> None:
    edges, imports = _graph()
    assert "RRLMedSAMLib.inference.segmenter" in edges and "RRLMedSAMLib.training.trainer" in edges
    assert "RRLMedSAMLib.run.folder" in edges["RRLMedSAMLib.training.trainer"]
    assert "torch" in imports["RRLMedSAMLib.training.trainer"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_engine_modules() -> None:
    cycles = _cycles(_graph()[0])
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize(("source", "target"), FORBIDDEN_LAYERS)
def test_inference_and_training_do_not_import_each_other(source: str, target: str) -> None:
    edges = _graph()[0]
    wrong = sorted(f"{module} -> {imported}" for module, targets in edges.items() if _layer(module) == source
                   for imported in targets if _layer(imported) == target)
    assert not wrong, f"{source} imports {target}: " + ", ".join(wrong)


def test_the_engine_imports_no_qt_or_slicer() -> None:
    imports = _graph()[1]
    wrong = sorted(f"{module} -> {imported}" for module, targets in imports.items() for imported in targets
                   if imported.split(".")[0] in GUI_MODULES)
    assert not wrong, "GUI imports in the engine: " + ", ".join(wrong)
