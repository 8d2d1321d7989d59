"""Install the engine into Slicer's Python: torch through the PyTorch extension, the rest through pip.

Nothing happens at import or when the widget is built: :meth:`InstallLogic.ensure` runs only when
the user presses Train, Segment or Install. The engine's source (``pyproject.toml`` +
``RRLMedSAMLib/``) ships with the extension (``RRLMedSAMEngine/`` beside the module; the repository
root in a source checkout) and is pip-installed from there, with its dependencies.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable
from pathlib import Path

ENGINE_DISTRIBUTION = "RRLMedSAMLib"
TORCH_REQUIREMENT = ">=2.1"
REQUESTER = "RRL-MedSAM"
MODULE_DIR = Path(__file__).resolve().parents[1]


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
    """The engine's ``[project] dependencies`` without torch (torch comes from the PyTorch extension)."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11 (Slicer < 5.9): read the one list this needs
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
        block = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.MULTILINE | re.DOTALL)
        dependencies = re.findall(r"[\"']([^\"']+)[\"']", block.group(1)) if block else []
    else:
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
        root: engine source folder (default: :func:`engine_root`).
        install_torch: callable installing torch, returning False when the user declined.
        pip_ensure: ``pip_ensure(requirements, requester=...)``; default ``slicer.packaging.pip_ensure``.
        pip_install: ``pip_install(requirements)``; default ``slicer.util.pip_install``.
    """

    def __init__(
        self,
        root: Path | None = None,
        install_torch: Callable[[], bool] | None = None,
        pip_ensure: Callable[..., object] | None = None,
        pip_install: Callable[..., object] | None = None,
    ) -> None:
        self.root = root or engine_root()
        self.install_torch = install_torch or install_torch_with_pytorch_extension
        self._pip_ensure = pip_ensure
        self._pip_install = pip_install

    def missing(self) -> list[str]:
        """What is missing or outdated, as pip requirement strings (torch shown as ``torch``)."""
        missing = [] if installed_version("torch") else ["torch"]
        if installed_version(ENGINE_DISTRIBUTION) != bundled_engine_version(self.root):
            missing.append(f"{ENGINE_DISTRIBUTION} @ {self.root.as_uri()}")
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
        engine_outdated = installed_version(ENGINE_DISTRIBUTION) is not None and any(r.startswith(ENGINE_DISTRIBUTION) for r in pending)
        try:
            if engine_outdated:  # pip_ensure would accept any installed version of a direct-URL requirement
                self.pip_install([str(self.root)])
                pending = [req for req in pending if not req.startswith(ENGINE_DISTRIBUTION)]
            if pending:
                self.pip_ensure(pending, prompt)
        except InstallError:
            raise
        except Exception as error:
            raise InstallError(f"Installing {', '.join(pending) or ENGINE_DISTRIBUTION} failed: {error}. Check the network "
                               "connection (or install the wheels offline with slicer.util.pip_install) and retry.") from error
        importlib.invalidate_caches()
        still = [req for req in self.missing() if req != "torch"]
        if still:
            raise InstallError(f"Still missing after installation: {', '.join(still)}. Restart Slicer and try again.")

    def pip_ensure(self, requirements: list[str], prompt: bool) -> None:
        """``slicer.packaging.pip_ensure`` (Slicer >= 5.12; ``slicer.pydeps`` in 5.11), else ``pip_install``."""
        if self._pip_ensure is not None:
            self._pip_ensure(requirements, requester=REQUESTER, prompt_install=prompt, skip_in_testing=False)
            return
        for module_name in ("slicer.packaging", "slicer.pydeps"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(module, "pip_ensure"):
                module.pip_ensure(requirements, requester=REQUESTER, prompt_install=prompt, skip_in_testing=False)
                return
        self.pip_install(requirements)

    def pip_install(self, requirements: list[str]) -> None:
        if self._pip_install is not None:
            self._pip_install(requirements)
            return
        import slicer.util

        slicer.util.pip_install(requirements)


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
