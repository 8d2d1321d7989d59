"""A tiny one-shot case for pipeline tests: an atlas and two scans of a 3-structure phantom.

Every volume is oblique and anisotropic, and the scans differ from the atlas by a rotation, a
shift and a smooth non-linear deformation, so pre-alignment and registration both have work to
do. Label ids are deliberately not 1..N (5, 9, 12) to check that ids survive the round trip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
LABEL_IDS = (5, 9, 12)
SHAPE_ZYX = (30, 40, 36)
SPACING = (1.3, 1.0, 1.8)


def _direction(z_deg: float, x_deg: float) -> tuple[float, ...]:
    a, b = np.deg2rad(z_deg), np.deg2rad(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).ravel())


def phantom(shift_mm: tuple[float, float, float], wobble: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32) and label (uint16) arrays ``(z, y, x)`` of the phantom in physical mm units."""
    z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(SHAPE_ZYX, SPACING[::-1])], indexing="ij")
    x, y, z = x - shift_mm[0], y - shift_mm[1], z - shift_mm[2]
    y = y + wobble * np.sin(x / 6.0)
    outer = (x / 15) ** 2 + (y / 16) ** 2 + (z / 18) ** 2 < 1
    inner = ((x - 3) / 7) ** 2 + (y / 8) ** 2 + (z / 9) ** 2 < 1
    small = ((x + 7) ** 2 + (y + 6) ** 2 + (z - 4) ** 2) < 4.5**2
    label = np.zeros(SHAPE_ZYX, np.uint16)
    label[outer] = LABEL_IDS[0]
    label[inner] = LABEL_IDS[1]
    label[small] = LABEL_IDS[2]
    rng = np.random.default_rng(seed)
    intensity = {0: 0.05, LABEL_IDS[0]: 0.45, LABEL_IDS[1]: 0.9, LABEL_IDS[2]: 0.2}
    image = np.vectorize(intensity.get)(label).astype(np.float32) + rng.normal(0, 0.03, SHAPE_ZYX).astype(np.float32)
    return image, label


def write_pair(folder: Path, name: str, image: np.ndarray, label: np.ndarray, direction: tuple[float, ...],
               origin: tuple[float, float, float]) -> tuple[Path, Path]:
    """Write ``<name>_image.nii.gz`` and ``<name>_label.nii.gz`` with the given geometry."""
    paths = []
    for suffix, array in (("image", image), ("label", label)):
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(SPACING)
        volume.SetDirection(direction)
        volume.SetOrigin(origin)
        path = folder / f"{name}_{suffix}.nii.gz"
        sitk.WriteImage(volume, str(path), True)
        paths.append(path)
    return paths[0], paths[1]


def make_case(folder: Path) -> dict[str, Path]:
    """Write the atlas and two scans into ``folder``; returns their paths by role."""
    folder.mkdir(parents=True, exist_ok=True)
    atlas = write_pair(folder, "atlas", *phantom((0, 0, 0), 0.0, 0), _direction(20, 10), (-10.0, 25.0, 5.0))
    scan_a = write_pair(folder, "scan_a", *phantom((2.0, -1.5, 1.0), 1.5, 1), _direction(28, 6), (-8.0, 22.0, 7.0))
    scan_b = write_pair(folder, "scan_b", *phantom((-1.5, 2.0, -1.0), -1.5, 2), _direction(14, 14), (-12.0, 27.0, 3.0))
    return {
        "atlas_image": atlas[0], "atlas_label": atlas[1],
        "scan_a": scan_a[0], "scan_a_label": scan_a[1],
        "scan_b": scan_b[0], "scan_b_label": scan_b[1],
    }


def engine(*args: str | os.PathLike, timeout: float = 600, module: str = "RRLMedSAMLib",
           **popen: object) -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` (by default the engine's command line) in a real subprocess, capturing text output."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=REPO,
        env=env, timeout=timeout, **popen,
    )


def train_args(case: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """Arguments of a tiny ``train`` on ``case``."""
    return [
        "train", "--atlas-image", str(case["atlas_image"]), "--atlas-label", str(case["atlas_label"]),
        "--images", str(case["scan_a"]), str(case["scan_b"]), "--out", str(out), "--preset", "tiny", *extra,
    ]


def start_training(args: list[str]) -> subprocess.Popen:
    """Start ``python -m RRLMedSAMLib ARGS`` in the background (stderr captured, stdout discarded)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "RRLMedSAMLib", *args], cwd=REPO, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_for_step(run: Path, stage: str, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Block until ``run/progress.jsonl`` reports ``step`` of ``stage`` (the process must still be running)."""
    deadline = time.monotonic() + timeout
    log = run / "progress.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"training ended before {stage} step {step}: {process.stderr.read()}"
        if log.exists():
            for line in log.read_text().splitlines():
                event = json.loads(line)
                if event["stage"] == stage and event["event"] == "progress" and event["step"] >= step:
                    return
        time.sleep(0.05)
    raise AssertionError(f"{stage} step {step} not reached in {timeout} s")


def copy_prepared(finished_run: Path, out: Path) -> None:
    """A run folder holding only ``finished_run``'s configuration and prepared data (no training yet).

    Resume tests start from the same prepared data as their reference: the affine pre-alignment
    (ITK) is not bitwise repeatable, everything after it is.
    """
    shutil.copytree(finished_run, out, ignore=shutil.ignore_patterns("checkpoints", "model*", "pseudo_labels*", "progress.jsonl",
                                                                 "volume_calibration.json"))


def assert_same_weights(expected_run: Path, actual_run: Path) -> None:
    """Both runs' ``model.safetensors`` hold identical tensors."""
    expected = load_file(str(expected_run / "model.safetensors"))
    actual = load_file(str(actual_run / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert (expected[key] == actual[key]).all(), key
