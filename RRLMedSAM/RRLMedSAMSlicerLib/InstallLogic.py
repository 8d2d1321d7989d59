"""Install the engine into Slicer's Python: torch through the PyTorch extension, the rest through pip.

Nothing happens at import or when the widget is built: :meth:`InstallLogic.ensure` runs only when
the user presses Train, Segment or Install. The engine's source (``pyproject.toml``, ``setup.py``,
``RRLMedSAMLib/`` and the package data in ``Resources/``) ships with the extension
(``RRLMedSAMEngine/`` beside the module; the repository root in a source checkout). The extension
folder may be read-only: pip builds the engine from a temporary copy, never in place. Packages that
Slicer bundles (numpy, SimpleITK, VTK) and torch are pinned to their installed versions through a
constraints file, so installing the engine never replaces them. For an offline site, a folder of
wheels (``RRLMEDSAM_WHEELHOUSE``) is used instead of the package index.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import tomllib

ENGINE_DISTRIBUTION = "RRLMedSAMLib"
TORCH_REQUIREMENT = ">=2.1"
REQUESTER = "RRL-MedSAM"
MODULE_DIR = Path(__file__).resolve().parents[1]
#: Distributions that must keep the version Slicer (or the PyTorch extension) installed.
PINNED_DISTRIBUTIONS = ("numpy", "SimpleITK", "vtk", "torch")
#: Environment variable naming a folder of wheels for an offline installation.
WHEELHOUSE_ENV = "RRLMEDSAM_WHEELHOUSE"
#: What the engine's build needs from its source folder (everything else is left behind).
ENGINE_SOURCE_ITEMS = ("pyproject.toml", "setup.py", "README.md", ENGINE_DISTRIBUTION, "Resources")


class InstallError(Exception):
    """Installation could not be completed; the message says what to do."""


def engine_root(module_dir: Path = MODULE_DIR) -> Path:
    """Folder holding the engine's ``pyproject.toml``, ``RRLMedSAMLib/`` and ``Resources/``."""
    for candidate in (module_dir / "RRLMedSAMEngine", module_dir.parent):
        if (candidate / "pyproject.toml").is_file() and (candidate / ENGINE_DISTRIBUTION / "__init__.py").is_file():
            return candidate
    raise InstallError(f"The engine source was not found next to {module_dir}; reinstall the RRL-MedSAM extension.")


def extension_resource(relative: str, module_dir: Path = MODULE_DIR) -> Path:
    """A file of the extension-level ``Resources/`` folder (sample data, model manifest)."""
    return engine_root(module_dir) / "Resources" / relative


def bundled_engine_version(root: Path) -> str:
    """``__version__`` of the shipped engine source."""
    text = (root / ENGINE_DISTRIBUTION / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.MULTILINE)
    if not match:
        raise InstallError(f"No __version__ in {root / ENGINE_DISTRIBUTION / '__init__.py'}; reinstall the extension.")
    return match.group(1)


def installed_version(distribution: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def engine_dependencies(root: Path) -> list[str]:
    """The engine's ``[project] dependencies`` without torch (torch comes from the PyTorch extension).

    The module runs in Slicer 5.10 or newer (Python 3.12), so :mod:`tomllib` is always there.
    """
    with open(root / "pyproject.toml", "rb") as handle:
        dependencies = tomllib.load(handle).get("project", {}).get("dependencies", [])
    return [dep for dep in dependencies if re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0].strip().lower() != "torch"]


def requirement_satisfied(requirement: str) -> bool:
    """Whether ``requirement`` (name and version specifier) is met in this Python."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        return installed_version(name) is not None
    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True
    version = installed_version(parsed.name)
    return version is not None and (not parsed.specifier or parsed.specifier.contains(version, prereleases=True))


class InstallLogic:
    """Check and install what the engine needs.

    Args:
        root: engine source folder (default: :func:`engine_root`); only read.
        install_torch: callable installing torch, returning False when the user declined.
        pip_install: ``pip_install(arguments)`` running ``pip install ARGUMENTS`` in Slicer's Python;
            default ``slicer.util.pip_install``.
        confirm: ``confirm(missing) -> bool`` asked before installing when ``ensure(prompt=True)``;
            default: Slicer's OK/Cancel dialog.
        wheelhouse: folder of wheels for an offline install (default: ``$RRLMEDSAM_WHEELHOUSE``).
    """

    def __init__(
        self,
        root: Path | None = None,
        install_torch: Callable[[], bool] | None = None,
        pip_install: Callable[[list[str]], object] | None = None,
        confirm: Callable[[list[str]], bool] | None = None,
        wheelhouse: Path | None = None,
    ) -> None:
        self.root = root or engine_root()
        self.install_torch = install_torch or install_torch_with_pytorch_extension
        self._pip_install = pip_install
        self._confirm = confirm
        configured = os.environ.get(WHEELHOUSE_ENV, "").strip()
        self.wheelhouse = wheelhouse or (Path(configured).expanduser() if configured else None)

    def missing(self) -> list[str]:
        """What is missing or outdated, as pip requirement strings (torch shown as ``torch``)."""
        missing = [] if installed_version("torch") else ["torch"]
        if installed_version(ENGINE_DISTRIBUTION) != bundled_engine_version(self.root):
            missing.append(f"{ENGINE_DISTRIBUTION}=={bundled_engine_version(self.root)}")
        missing += [dep for dep in engine_dependencies(self.root) if not requirement_satisfied(dep)]
        return missing

    def ready(self) -> bool:
        return not self.missing()

    def ensure(self, prompt: bool = True) -> None:
        """Install torch, then the engine and its dependencies; raise :class:`InstallError` on failure."""
        if not installed_version("torch") and not self.install_torch():
            raise InstallError("PyTorch is required; install it (PyTorch extension) and press the button again.")
        pending = [req for req in self.missing() if req != "torch"]
        if not pending:
            return
        if prompt and not self.confirm(pending):
            raise InstallError("Installation cancelled; the engine needs: " + ", ".join(pending) + ".")
        if self.wheelhouse is not None and not self.wheelhouse.is_dir():
            raise InstallError(f"The wheel folder {self.wheelhouse} ({WHEELHOUSE_ENV}) does not exist.")
        try:
            with tempfile.TemporaryDirectory(prefix="rrlmedsam-install-") as scratch:
                source = copy_engine_source(self.root, Path(scratch) / "engine")
                constraints = write_constraints(Path(scratch) / "constraints.txt")
                self.pip_install(install_arguments(source, constraints, self.wheelhouse))
        except InstallError:
            raise
        except Exception as error:
            where = f"the wheels in {self.wheelhouse}" if self.wheelhouse else "the network connection"
            raise InstallError(f"Installing {', '.join(pending)} failed: {error}. Check {where} and retry "
                               "(docs/user_guide.md explains an offline installation).") from error
        importlib.invalidate_caches()
        still = [req for req in self.missing() if req != "torch"]
        if still:
            raise InstallError(f"Still missing after installation: {', '.join(still)}. Restart Slicer and try again.")

    def confirm(self, pending: list[str]) -> bool:
        if self._confirm is not None:
            return self._confirm(pending)
        import slicer.util

        return slicer.util.confirmOkCancelDisplay(
            "RRL-MedSAM needs these Python packages, installed once into Slicer's Python:\n" + "\n".join(pending),
            windowTitle=REQUESTER,
        )

    def pip_install(self, arguments: list[str]) -> None:
        if self._pip_install is not None:
            self._pip_install(arguments)
            return
        import slicer.util

        slicer.util.pip_install(arguments)


def copy_engine_source(root: Path, destination: Path) -> Path:
    """Copy what building the engine needs from ``root`` (possibly read-only) to ``destination``.

    pip writes ``build/`` and ``*.egg-info`` next to the source it builds, so it builds this copy.
    Copied files are made writable (a read-only install tree gives read-only copies).
    """
    destination.mkdir(parents=True)
    for item in ENGINE_SOURCE_ITEMS:
        source = root / item
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                            copy_function=shutil.copyfile)
        elif source.is_file():
            shutil.copyfile(source, destination / item)
        else:
            raise InstallError(f"{source} is missing; the extension is incomplete: reinstall RRL-MedSAM.")
    return destination


def write_constraints(path: Path, distributions: tuple[str, ...] = PINNED_DISTRIBUTIONS) -> Path:
    """A pip constraints file pinning each installed distribution of ``distributions`` to its version."""
    pins = [f"{name}=={version}" for name in distributions if (version := installed_version(name))]
    path.write_text("".join(pin + "\n" for pin in pins), encoding="utf-8")
    return path


def install_arguments(source: Path, constraints: Path, wheelhouse: Path | None) -> list[str]:
    """``pip install`` arguments: the engine (non-editable) and its dependencies under the constraints."""
    arguments = [str(source), "--constraint", str(constraints)]
    if wheelhouse is not None:
        arguments += ["--no-index", "--find-links", str(wheelhouse)]
    return arguments


def install_torch_with_pytorch_extension() -> bool:
    """Install torch with the PyTorch extension's ``PyTorchUtils`` logic (asks the user first)."""
    try:
        import PyTorchUtils
    except ImportError:
        raise InstallError("The PyTorch extension is missing; install 'PyTorch' from the Extensions Manager and restart Slicer.") from None
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if logic.torchInstalled():
        return True
    return logic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is not None
