"""Volume calibration (our addition): undo the registration's pull of each structure's size towards the atlas's.

Where a boundary carries little contrast (prostate T2), the deformable registration moves it only
part of the way from the atlas's position to the scan's: a gland smaller than the atlas's comes
out too large, a larger one too small (docs/benchmarks.md, prostate: a log-volume slope of 0.45 on the
truth). How far it moves can be measured without labels. After training, each of a few
training scans is registered as it is and again after a known synthetic change of a structure's
size: a sphere about the structure (as the registration places it) is scaled by
:data:`CALIBRATION_SCALES` and the scan outside it is left alone. The median ratio of the
registered log-volume change to the known one is the structure's *recovery* ``s`` (1 = the
registration follows size changes fully). At ``segment`` each structure's volume change from the
atlas is then extrapolated by ``1 / s``: ``V = V_atlas * (V_segmented / V_atlas) ** (1 / s)``,
and the structure is grown or shrunk to that volume along its smoothed boundary
(:mod:`RRLMedSAMLib.inference.label_smoothing`).

Each structure costs ``len(CALIBRATION_SCALES)`` extra registrations per calibration scan, so runs
with more than :data:`MAX_CALIBRATED_STRUCTURES` structures are not calibrated (brain atlases with
dozens of structures would take longer than their training).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: Linear scale factors of the synthetic size changes (volume x0.66 and x1.52).
CALIBRATION_SCALES = (0.87, 1.15)
#: The sphere scaled uniformly has this many times the structure's equivalent-sphere radius...
INNER_RADIUS_FACTOR = 1.3
#: ...and the scaling fades to none over this many mm outside it.
TAPER_MM = 4.0
#: Training scans the calibration registers (the first ones of the run).
MAX_CALIBRATION_SCANS = 4
#: Runs with more structures than this are not calibrated (the cost grows with each structure).
MAX_CALIBRATED_STRUCTURES = 4
#: A measured recovery is clipped to this range (a smaller one would amplify noise; more than 1 would shrink changes).
RECOVERY_RANGE = (0.4, 1.0)
#: The run folder's file holding the calibration.
CALIBRATION_FILE = "volume_calibration.json"


@dataclass
class VolumeCalibration:
    """The recovery ``s`` of each calibrated label id, and the measurements behind it."""

    recovery: dict[int, float]
    measurements: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"recovery": {str(k): v for k, v in self.recovery.items()}, "scales": list(CALIBRATION_SCALES),
                "measurements": self.measurements}

    @classmethod
    def from_dict(cls, data: dict) -> VolumeCalibration:
        return cls({int(k): float(v) for k, v in data["recovery"].items()}, list(data.get("measurements", [])))


def read_volume_calibration(run_root: Path) -> VolumeCalibration | None:
    """The calibration stored in a run folder, or ``None`` when it has none."""
    path = Path(run_root) / CALIBRATION_FILE
    if not path.is_file():
        return None
    return VolumeCalibration.from_dict(json.loads(path.read_text(encoding="utf-8")))


def structure_sphere(labelmap: sitk.Image, label: int) -> tuple[np.ndarray, float] | None:
    """Centroid (LPS mm) and equivalent-sphere radius (mm) of ``label`` in ``labelmap``; ``None`` if absent."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.Cast(labelmap == label, sitk.sitkUInt8))
    if not statistics.HasLabel(1):
        return None
    radius = (3.0 * statistics.GetPhysicalSize(1) / (4.0 * np.pi)) ** (1.0 / 3.0)
    return np.asarray(statistics.GetCentroid(1)), float(radius)


def scaled_about(image: sitk.Image, centre: np.ndarray, scale: float, inner_mm: float, outer_mm: float) -> sitk.Image:
    """``image`` with the ball of radius ``inner_mm`` about ``centre`` (LPS mm) scaled by ``scale``; same grid.

    Inside ``inner_mm`` the content is magnified by ``scale`` about the centre (volumes x scale^3);
    beyond ``outer_mm`` it is unchanged; in between the displacement fades smoothly (smoothstep).
    """
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in size[::-1]], indexing="ij")[::-1], -1)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    points = np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T
    offset = points - centre
    distance = np.linalg.norm(offset, axis=-1)
    weight = np.clip((outer_mm - distance) / (outer_mm - inner_mm), 0.0, 1.0)
    weight = weight * weight * (3.0 - 2.0 * weight)
    displacement = sitk.GetImageFromArray(offset * ((1.0 / scale - 1.0) * weight)[..., None], isVector=True)
    displacement.CopyInformation(image)
    transform = sitk.DisplacementFieldTransform(displacement)
    return sitk.Resample(image, image, transform, sitk.sitkBSpline, 0.0, image.GetPixelID())


def recovery_estimate(known_log_change: list[float], registered_log_change: list[float]) -> float:
    """Median over the measurements of registered / known log-volume change, clipped to :data:`RECOVERY_RANGE`.

    The median, not a least-squares slope: one registration that lands in a wrong optimum (a
    resized scan whose structure comes out smaller) must not decide the calibration.
    """
    ratios = np.asarray(registered_log_change) / np.asarray(known_log_change)
    return float(np.clip(np.median(ratios), *RECOVERY_RANGE))


def measure_volume_recovery(
    register: Callable[[sitk.Image], sitk.Image], scans: list[tuple[str, sitk.Image]], label_ids: list[int],
    on_registration: Callable[[], None] | None = None,
) -> VolumeCalibration:
    """Each label's recovery of synthetic size changes, measured on ``scans`` (name, image).

    ``register(scan)`` returns the atlas label warped onto ``scan`` (the engine's registration);
    ``on_registration()`` is called after each registration.
    """
    tick = on_registration or (lambda: None)
    found: list[tuple[str, int, float, float]] = []
    for name, scan in scans:
        base = register(scan)
        tick()
        for label in label_ids:
            found += [(name, label, scale, ratio) for scale, ratio in _resized_volume_ratios(register, scan, base, label, tick)]
    recovery = {}
    for label in label_ids:
        ratios = [(scale, ratio) for _, of, scale, ratio in found if of == label]
        if ratios:
            recovery[label] = recovery_estimate([3.0 * np.log(s) for s, _ in ratios], [float(np.log(r)) for _, r in ratios])
    measurements = [{"scan": name, "label": label, "scale": scale, "volume_ratio": round(ratio, 4)}
                    for name, label, scale, ratio in found]
    return VolumeCalibration(recovery, measurements)


def _resized_volume_ratios(register: Callable[[sitk.Image], sitk.Image], scan: sitk.Image, base: sitk.Image,
                           label: int, tick: Callable[[], None]) -> list[tuple[float, float]]:
    """(scale, registered volume ratio) of ``label`` for each resize of ``scan`` about it; one ``tick()`` per scale.

    ``base`` is the atlas label registered to ``scan`` itself; a label it lacks gives no ratios
    (its registrations are skipped, the ticks are not), and so does one that vanishes when resized.
    """
    sphere = structure_sphere(base, label)
    if sphere is None:
        for _ in CALIBRATION_SCALES:
            tick()
        return []
    centre, radius = sphere
    inner = INNER_RADIUS_FACTOR * radius
    base_voxels = _voxels(base, label)
    ratios = []
    for scale in CALIBRATION_SCALES:
        ratio = _voxels(register(scaled_about(scan, centre, scale, inner, inner + TAPER_MM)), label) / base_voxels
        tick()
        if ratio > 0:
            ratios.append((scale, ratio))
    return ratios


def calibrated_voxel_counts(
    segmentation: sitk.Image, atlas_volumes_mm3: dict[int, float], recovery: dict[int, float]
) -> dict[int, int]:
    """Voxel count each calibrated label of ``segmentation`` should have: its change from the atlas extrapolated by ``1 / s``."""
    counts = np.bincount(sitk.GetArrayViewFromImage(segmentation).ravel())
    voxel_mm3 = float(np.prod(segmentation.GetSpacing()))
    targets = {}
    for label, s in recovery.items():
        if label < counts.size and counts[label] > 0 and atlas_volumes_mm3.get(label, 0) > 0:
            atlas = atlas_volumes_mm3[label]
            volume = atlas * (counts[label] * voxel_mm3 / atlas) ** (1.0 / s)
            targets[label] = max(1, int(round(volume / voxel_mm3)))
    return targets


def label_volumes_mm3(labelmap: sitk.Image) -> dict[int, float]:
    """Physical volume (mm^3) of every non-zero label of ``labelmap``."""
    counts = np.bincount(sitk.GetArrayViewFromImage(labelmap).ravel())
    voxel_mm3 = float(np.prod(labelmap.GetSpacing()))
    return {label: float(n) * voxel_mm3 for label, n in enumerate(counts) if label > 0 and n > 0}


def _voxels(labelmap: sitk.Image, label: int) -> int:
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(labelmap) == label))
