"""Helpers for the tests of safe outputs, locks and bad input: a quick model, tree snapshots, damaged files."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tiny_case import REPO, train_args

#: The quickest training that still writes a complete run folder.
QUICK = ("--method", "plain", "--set", "registration_steps=2", "--set", "segmentation_steps=2")


def quick_train_args(case: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """Arguments of a quick ``train`` (plain method, two steps per stage, no volume calibration)."""
    return train_args(case, out, *QUICK, *extra)


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file and folder under ``root``: relative name -> (size, mtime_ns) for files, ``None`` for folders."""
    tree: dict[str, tuple[int, int] | None] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        tree[str(path.relative_to(root))] = None if path.is_dir() else (info.st_size, info.st_mtime_ns)
    return tree


def engine_env(**extra: str) -> dict[str, str]:
    """Environment of an engine subprocess run from the repository."""
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


def start_engine(*args: str | os.PathLike, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m RRLMedSAMLib ARGS`` in the background, capturing stdout and stderr as text."""
    return subprocess.Popen([sys.executable, "-m", "RRLMedSAMLib", *map(str, args)], cwd=REPO, env=env or engine_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Poll ``condition()`` until true (failing early if ``process`` ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def write_array(path: Path, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a ``(z, y, x)`` array with SimpleITK (format from the extension)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)
    return path


def write_nifti_raw(path: Path, array: np.ndarray, pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    """Write a NIfTI with nibabel exactly as given (NaN, inf kept); ``pixdim`` is patched into the header bytes
    afterwards, so that a zero or negative spacing really is in the file."""
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), np.eye(4))
    raw = bytearray(image.to_bytes())
    raw[80:92] = np.asarray(pixdim, "<f4").tobytes()
    data = gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw)
    path.write_bytes(data)
    return path


def truncated_copy(source: Path, target: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``source``'s bytes."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def bad_crc_copy(source: Path, target: Path) -> Path:
    """``source`` (gzip) with its CRC trailer flipped: every byte of data is intact, the checksum is not."""
    data = bytearray(source.read_bytes())
    data[-8] ^= 0xFF
    target.write_bytes(bytes(data))
    assert gzip.decompress(source.read_bytes())
    return target


def phantom_with(case: dict[str, Path], folder: Path, name: str, change, role: str = "scan_a") -> Path:
    """``case[role]`` with its voxel array changed by ``change`` (geometry kept), as ``folder/name``."""
    image = sitk.ReadImage(str(case[role]))
    array = change(sitk.GetArrayFromImage(image).astype(np.float32))
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    sitk.WriteImage(result, str(folder / name), True)
    return folder / name


def copy_run(run: Path, target: Path) -> Path:
    """A copy of a run folder (without its lock files)."""
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".rrlmedsam.lock*"))
    return target


