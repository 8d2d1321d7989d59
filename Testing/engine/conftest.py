"""Shared fixtures: tiny synthetic volumes written with SimpleITK, including an oblique anisotropic one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Oblique, anisotropic geometry: 20 degrees about z then 10 about x; spacing differs per axis.
OBLIQUE_SPACING = (0.9, 1.1, 1.7)
OBLIQUE_ORIGIN = (-12.5, 30.25, 7.0)


def _rotation(z_deg: float, x_deg: float) -> tuple[float, ...]:
    a, b = np.deg2rad(z_deg), np.deg2rad(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


OBLIQUE_DIRECTION = _rotation(20.0, 10.0)


def make_image(array_zyx: np.ndarray, oblique: bool = True) -> sitk.Image:
    """SimpleITK image of a numpy ``(z, y, x)`` array, with the oblique geometry (or the default one)."""
    image = sitk.GetImageFromArray(array_zyx)
    if oblique:
        image.SetSpacing(OBLIQUE_SPACING)
        image.SetOrigin(OBLIQUE_ORIGIN)
        image.SetDirection(OBLIQUE_DIRECTION)
    return image


def write_volume(path: Path, array_zyx: np.ndarray, oblique: bool = True) -> Path:
    """Write ``array_zyx`` to ``path`` (format from the extension) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(make_image(array_zyx, oblique), str(path), True)
    return path


def synthetic_brain_labels(shape: tuple[int, int, int] = (28, 32, 30)) -> np.ndarray:
    """Nested ellipsoids with aseg ids: 24 CSF shell and 165 'skull' outside, 3/42 cortex,
    2/41 white matter, 4/43 ventricles, 17 hippocampus, 25 (absent from reference scans), float32."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(z**2 + y**2 + x**2)
    labels = np.zeros(shape, dtype=np.float32)
    labels[r < 1.0] = 165
    labels[r < 0.9] = 24
    left = x < 0
    labels[r < 0.8] = np.where(left, 3, 42)[r < 0.8]
    labels[r < 0.6] = np.where(left, 2, 41)[r < 0.6]
    labels[r < 0.25] = np.where(left, 4, 43)[r < 0.25]
    labels[(np.abs(z - 0.3) < 0.1) & (np.abs(y) < 0.1) & (np.abs(x + 0.35) < 0.1)] = 17
    labels[(np.abs(z + 0.3) < 0.1) & (np.abs(y) < 0.1) & (np.abs(x - 0.35) < 0.1)] = 25
    return labels


@pytest.fixture
def oblique_labelmap_dir(tmp_path: Path) -> Path:
    """Folder with two small oblique, anisotropic float32 brain label maps (subj_a, subj_b)."""
    folder = tmp_path / "labelmaps"
    base = synthetic_brain_labels()
    write_volume(folder / "subj_a.nii.gz", base)
    write_volume(folder / "subj_b.nii.gz", np.roll(base, 2, axis=1))
    return folder


@pytest.fixture
def reference_npz(tmp_path: Path) -> Path:
    """Tiny reference 'scan' .npz (keys vol, seg) with WM bright, GM darker, CSF dark; id 77 present."""
    seg = synthetic_brain_labels((20, 20, 20)).astype(np.int64)
    seg[seg == 165] = 0
    seg[0, 0, :3] = 77
    means = {0: 0.0, 2: 0.4, 41: 0.4, 3: 0.25, 42: 0.25, 4: 0.09, 43: 0.09, 17: 0.26, 24: 0.15, 77: 0.3}
    rng = np.random.default_rng(0)
    vol = np.vectorize(lambda i: means.get(int(i), 0.2))(seg) + rng.normal(0, 0.01, seg.shape)
    vol = np.clip(vol, 0, 1)
    path = tmp_path / "reference.npz"
    np.savez(path, vol=vol, seg=seg.astype(np.float64))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m RRLMedSAMLib ARGS`` in a real subprocess and capture its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "RRLMedSAMLib", *args],
        capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=timeout,
    )


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one non-empty line on stderr, no traceback, and every fragment in the message."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


from pipeline_fixtures import tiny_case, tiny_results, tiny_run  # noqa: E402,F401  (session fixtures)
