"""Affine pre-alignment of a scan to the atlas (SimpleITK, Mattes mutual information).

The returned transform maps atlas-space points to scan points (SimpleITK's fixed->moving
convention with the atlas as fixed image), which is what resampling a scan onto the atlas's
working grid needs.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity

#: Initial rotations (Euler angles, radians) tried before the rigid stage: none, +-90 degrees about
#: the superior axis, and 180 degrees about the left-right axis (scans stored upside down).
INITIAL_ROTATIONS = ((0.0, 0.0, 0.0), (0.0, 0.0, np.pi / 2), (0.0, 0.0, -np.pi / 2), (np.pi, 0.0, 0.0))


def sampling_seed(seed: int) -> int:
    """The metric-sampling seed handed to ITK for the engine seed ``seed`` (>= 0).

    ITK reads a seed of 0 as "seed from the wall clock", which made every pre-alignment draw new
    sample points and, on ambiguous pairs, land in a different optimum from one run to the next.
    Shifting by one keeps every engine seed, 0 included, reproducible.
    """
    return int(seed) + 1


def _normalized(image: sitk.Image) -> sitk.Image:
    array = normalize_intensity(sitk.GetArrayFromImage(image))
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result


def _register(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, iterations: int, seed: int,
    shrink_factors: tuple[int, ...] = (4, 2, 1),
) -> tuple[sitk.Transform, float]:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.15, sampling_seed(seed))
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel([f / 2.0 if f > 1 else 0.0 for f in shrink_factors])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = _unwrap(method.Execute(fixed, moving))
    return transform, float(method.GetMetricValue())


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """The single concrete transform inside a registration result (which may be a composite)."""
    while transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        transform = composite.GetNthTransform(composite.GetNumberOfTransforms() - 1)
    concrete = {"Euler3DTransform": sitk.Euler3DTransform, "AffineTransform": sitk.AffineTransform}
    return concrete[transform.GetName()](transform) if transform.GetName() in concrete else transform


def prealign_to_atlas(
    atlas_image: sitk.Image, scan: sitk.Image, grid: WorkingGrid, iterations: int = 100, seed: int = 0
) -> sitk.AffineTransform:
    """Affine transform ``T`` with ``T(atlas point) = scan point``.

    Both images are first resampled at the working-grid resolution (the atlas on the working grid
    itself, the scan on its own axes) to keep this fast. A moments-based centring starts a rigid
    stage; a few initial rotations about the atlas's centre are tried at the coarsest level only
    and the best metric wins; the rigid result then seeds a full multi-resolution affine stage.
    An affine result that mirrors or squashes the scan is dropped, and local correlation picks
    the final pose among the stored geometry, the rigid and the affine result.
    The optimisation runs single-threaded: ITK's multi-threaded metric sums in a varying order,
    which made repeated runs on near-symmetric images pick different local optima.
    """
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _prealign(atlas_image, scan, grid, iterations, seed)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _prealign(
    atlas_image: sitk.Image, scan: sitk.Image, grid: WorkingGrid, iterations: int, seed: int
) -> sitk.AffineTransform:
    atlas = sitk.Resample(atlas_image, grid.reference_image(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    atlas = _normalized(atlas)
    scan_small = _normalized(_downsample(scan, grid.spacing_mm))

    centred = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(atlas, scan_small, sitk.Euler3DTransform(),
                                          sitk.CenteredTransformInitializerFilter.MOMENTS)
    )
    starts = []
    for angles in INITIAL_ROTATIONS:
        rigid = sitk.Euler3DTransform(centred)
        rigid.SetRotation(*angles)
        result = _attempt(atlas, scan_small, rigid, max(iterations // 3, 10), seed, shrink_factors=(4,))
        starts.append(result if result is not None else (None, rigid))
    if all(metric is None for metric, _ in starts):
        raise PrealignmentError(
            "the atlas and the scan share too little of their field of view for mutual information from any "
            "start; check that the scan shows the same body region as the atlas"
        )
    coarse = _preferred_start(starts)
    rigid_result = _attempt(atlas, scan_small, coarse, iterations, seed, shrink_factors=(2, 1))
    rigid = as_affine(coarse if rigid_result is None else rigid_result[1])
    candidates = [sitk.AffineTransform(3), rigid]
    affine_result = _attempt(atlas, scan_small, rigid, iterations, seed)
    if affine_result is not None and is_plausible_affine(as_affine(affine_result[1])):
        candidates.append(as_affine(affine_result[1]))
    return _best_by_local_correlation(atlas, scan_small, candidates)


class PrealignmentError(InputError):
    """No start of the affine pre-alignment could be optimised (the images hardly overlap)."""


def _attempt(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, iterations: int, seed: int,
             shrink_factors: tuple[int, ...] = (4, 2, 1)) -> tuple[float, sitk.Transform] | None:
    """:func:`_register` as ``(metric, transform)``, or ``None`` where ITK gives up on this start.

    ITK stops with an exception when too few metric samples fall inside the moving image (a start
    rotated out of a thin slab, or an optimiser step that leaves it); that start is then dropped
    rather than ending the pre-alignment.
    """
    try:
        transform, metric = _register(fixed, moving, initial, iterations, seed, shrink_factors)
    except RuntimeError:
        return None
    return metric, transform


def _best_by_local_correlation(
    atlas: sitk.Image, scan: sitk.Image, candidates: list[sitk.AffineTransform]
) -> sitk.AffineTransform:
    """The candidate whose resampled scan best matches the atlas by local normalised correlation.

    Mutual information drives the optimisation (robust far from the optimum) but, over a cropped
    atlas region, it can prefer a clearly wrong pose. Atlas and scans are of the same kind, so the
    local correlation the registration network also uses arbitrates between the stored geometry
    (identity), the rigid and the affine result; the last candidate with the best value wins ties.
    """
    scores = []
    for transform in candidates:
        try:
            scores.append(_local_correlation(atlas, scan, transform))
        except RuntimeError:  # no atlas sample lands inside the scan through this transform
            scores.append(float("inf"))
    best = min(range(len(candidates)), key=lambda i: (scores[i], -i))
    return candidates[best]


def _local_correlation(atlas: sitk.Image, scan: sitk.Image, transform: sitk.Transform) -> float:
    """ITK's ANTS neighbourhood correlation (radius 2 voxels) of ``scan`` through ``transform``; lower is better."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsANTSNeighborhoodCorrelation(radius=2)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(transform)
    return float(method.MetricEvaluate(atlas, scan))


#: Limits on the singular values of an accepted affine matrix (scaling between two scans of one kind).
SCALE_RANGE = (0.6, 1.6)


def is_plausible_affine(transform: sitk.AffineTransform) -> bool:
    """True when the matrix is a proper (no reflection), moderately scaled map.

    Mutual information over a cropped atlas region can be raised by collapsing the scan along one
    axis; such a result (singular values near 0, or a reflection) is anatomically meaningless.
    """
    matrix = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    singular = np.linalg.svd(matrix, compute_uv=False)
    low, high = SCALE_RANGE
    return bool(np.linalg.det(matrix) > 0 and singular.min() >= low and singular.max() <= high)


def _preferred_start(candidates: list[tuple[float | None, sitk.Transform]]) -> sitk.Transform:
    """The unrotated start unless another start's metric (lower is better) beats it by 25 %.

    A start ITK could not optimise has the metric ``None`` and never wins; when the unrotated start
    is one of those, the best of the others is taken.
    """
    usable = [(metric, transform) for metric, transform in candidates if metric is not None]
    metric, transform = min(usable, key=lambda item: item[0])
    unrotated_metric, unrotated = candidates[0]
    if unrotated_metric is None:
        return transform
    return transform if metric < unrotated_metric - 0.25 * abs(unrotated_metric) else unrotated


def as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    """Flatten a (composite of one) rigid/similarity/affine transform into an AffineTransform."""
    transform = _unwrap(transform)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(transform.GetMatrix())
    affine.SetTranslation(transform.GetTranslation())
    affine.SetCenter(transform.GetCenter())
    return affine


def _downsample(image: sitk.Image, target_mm: float) -> sitk.Image:
    """Resample ``image`` on its own axes to about ``target_mm`` voxels (never upsample)."""
    spacing = np.array(image.GetSpacing())
    new_spacing = np.maximum(spacing, target_mm)
    if np.allclose(new_spacing, spacing):
        return sitk.Cast(image, sitk.sitkFloat32)
    size = np.maximum(np.round(np.array(image.GetSize()) * spacing / new_spacing), 2).astype(int)
    smoothed = sitk.SmoothingRecursiveGaussian(image, float(target_mm) / 2.0)
    return sitk.Resample(
        smoothed, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
        new_spacing.tolist(), image.GetDirection(), 0.0, sitk.sitkFloat32,
    )


def affine_to_dict(transform: sitk.AffineTransform) -> dict:
    """JSON-serialisable form of an affine transform (matrix, translation, centre; LPS mm)."""
    return {
        "matrix": list(transform.GetMatrix()),
        "translation": list(transform.GetTranslation()),
        "center": list(transform.GetCenter()),
    }


def affine_from_dict(data: dict) -> sitk.AffineTransform:
    """Inverse of :func:`affine_to_dict`."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in data["matrix"]])
    transform.SetTranslation([float(v) for v in data["translation"]])
    transform.SetCenter([float(v) for v in data["center"]])
    return transform
