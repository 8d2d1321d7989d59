"""What the fine registration stage runs for one scan: its levels, their grids and iterations, from a time budget.

The stage works coarse to fine on grids nested in one another: the finest grid covers the
working grid's region at the atlas's own voxel size, never finer than
:data:`MIN_VOXEL_MM` (unless the working grid already is) and never coarser than the working
grid; each coarser level halves it (twice the voxel size, half the voxels along each side, the
same outer corner, so ``align_corners=False`` interpolation moves a field between levels
exactly). The preset names a budget in seconds per scan for the CPU and for a GPU; a cost model
(seconds per million voxel-iterations, measured per device kind) turns it into iterations per
level, and drops the finest level when even the fewest iterations would not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, make_working_grid
from RRLMedSAMLib.run.presets import Preset

#: Voxels finer than this (mm) add cost but, for the anatomy the engine registers, no accuracy.
MIN_VOXEL_MM = 1.0
#: Seconds per million voxel-iterations of one level (MIND-SSC warp + SSD + diffusion, forward and
#: backward). CPU: measured with one thread on the development machine (2 cores, shared). GPU: a
#: conservative guess, not measured here.
SECONDS_PER_MEGAVOXEL_ITERATION = {"cpu": 1.0, "cuda": 0.01, "mps": 0.05}
#: Seconds per million voxels of the fixed costs (resampling the scan, MIND-SSC, field transfers).
SECONDS_PER_MEGAVOXEL_FIXED = {"cpu": 1.5, "cuda": 0.1, "mps": 0.3}
#: How much more an iteration costs when the stage integrates a velocity (7 squarings; measured
#: 1.7 to 3.6 times on the development machine).
DIFFEOMORPHIC_COST_FACTOR = 2.5
#: The fewest iterations a level is run with; below that the finest level is dropped instead.
MIN_ITERATIONS = 8


@dataclass(frozen=True)
class FineLevel:
    """One level: its grid (atlas frame) and Adam iterations."""

    grid: WorkingGrid
    iterations: int


@dataclass(frozen=True)
class FinePlan:
    """The fine stage of a run.

    Attributes:
        levels: coarsest first; the last one's grid is the one the result lives on.
        finest: the finest grid the atlas allows (the plan may stop coarser to fit the budget).
        budget_s: seconds per scan the plan was sized for.
        predicted_s: what the cost model predicts the levels take.
        smoothness_weight: diffusion penalty weight (displacement gradients in voxels of the level).
        control_spacing: voxels of the level between two control points of the optimised field.
        learning_rate: Adam step (voxels of the level).
        diffeomorphic: optimise a stationary velocity integrated by scaling and squaring.
        ncc_weight: weight of a local NCC term on intensities added to the MIND-SSC SSD (0 = none).
    """

    levels: tuple[FineLevel, ...]
    finest: WorkingGrid
    budget_s: float
    predicted_s: float
    smoothness_weight: float
    control_spacing: int
    learning_rate: float
    diffeomorphic: bool
    ncc_weight: float

    def describe(self) -> str:
        """For ``qc.json``'s ``registration`` entry."""
        iterations = "/".join(str(level.iterations) for level in self.levels)
        return (f"fine MIND-SSC stage ({len(self.levels)} levels to {self.levels[-1].grid.spacing_mm:.2f} mm, "
                f"{iterations} iterations)")


def coarsen(grid: WorkingGrid, factor: int) -> WorkingGrid:
    """The grid with ``factor`` times larger voxels over the same region (sides must divide by ``factor``)."""
    if any(side % factor for side in grid.size_xyz):
        raise ValueError(f"grid sides {grid.size_xyz} are not multiples of {factor}")
    direction = np.asarray(grid.direction).reshape(3, 3)
    corner = np.asarray(grid.origin_xyz) - direction @ np.full(3, grid.spacing_mm / 2)
    spacing = grid.spacing_mm * factor
    origin = corner + direction @ np.full(3, spacing / 2)
    return WorkingGrid(tuple(side // factor for side in grid.size_xyz), spacing,  # type: ignore[arg-type]
                       tuple(float(v) for v in origin), grid.direction)  # type: ignore[arg-type]


def finest_grid(atlas_image: sitk.Image, atlas_label: sitk.Image, working: WorkingGrid, levels: int,
                max_side: int) -> WorkingGrid:
    """The finest grid: the working grid's region at the atlas's voxel size, within the limits in the module notes.

    ``max_side`` caps its longest side (voxels); sides are multiples of ``2 ** (levels - 1)``.
    """
    atlas_voxel = float(min(atlas_image.GetSpacing()))
    voxel = max(atlas_voxel, min(MIN_VOXEL_MM, working.spacing_mm))
    extent = max(working.size_xyz) * working.spacing_mm
    voxel = max(voxel, extent / max(max_side, 1))
    return make_working_grid(atlas_label, max(int(math.ceil(extent / voxel - 1e-6)), 1),
                             divisor=2 ** (levels - 1), min_voxel_mm=voxel)


def _megavoxels(grid: WorkingGrid) -> float:
    return float(np.prod(grid.size_xyz)) / 1e6


def predicted_seconds(grids: list[WorkingGrid], iterations: list[int], device: str, factor: float = 1.0) -> float:
    """The cost model's seconds for these levels on a device of kind ``device`` (``cpu``, ``cuda``, ``mps``).

    ``factor`` scales the cost of an iteration (:data:`DIFFEOMORPHIC_COST_FACTOR` for velocities).
    """
    per_iteration = factor * SECONDS_PER_MEGAVOXEL_ITERATION.get(device, SECONDS_PER_MEGAVOXEL_ITERATION["cpu"])
    fixed = SECONDS_PER_MEGAVOXEL_FIXED.get(device, SECONDS_PER_MEGAVOXEL_FIXED["cpu"])
    return fixed * _megavoxels(grids[-1]) + per_iteration * sum(
        _megavoxels(grid) * steps for grid, steps in zip(grids, iterations))


def fit_to_budget(finest: WorkingGrid, levels: int, iterations: int, budget_s: float,
                  device: str, factor: float = 1.0) -> tuple[list[WorkingGrid], list[int], float]:
    """Level grids (coarsest first), iterations per level and predicted seconds that fit ``budget_s``.

    Coarser levels cost little and get ``iterations`` each; the finest level gets ``iterations``
    when they fit, else as many as the rest of the budget pays for. When that is fewer than
    :data:`MIN_ITERATIONS` the finest level is dropped (the result then lives one level coarser)
    and the rest is sized again; a single level left is never dropped.
    """
    grids = [coarsen(finest, 2 ** k) for k in reversed(range(levels))]
    while True:
        steps = [iterations] * len(grids)
        cost = predicted_seconds(grids, steps, device, factor)
        if cost > budget_s:
            without_last = predicted_seconds(grids, steps[:-1] + [0], device, factor)
            per_iteration = predicted_seconds(grids, [0] * (len(grids) - 1) + [1], device, factor) - \
                predicted_seconds(grids, [0] * len(grids), device, factor)
            steps[-1] = int(max(budget_s - without_last, 0.0) / per_iteration)
            if steps[-1] < min(MIN_ITERATIONS, iterations) and len(grids) > 1:
                grids = grids[:-1]
                continue
            steps[-1] = max(steps[-1], min(MIN_ITERATIONS, iterations))
            cost = predicted_seconds(grids, steps, device, factor)
        return grids, steps, cost


def plan_fine_stage(
    atlas_image: sitk.Image, atlas_label: sitk.Image, working: WorkingGrid, preset: Preset, device: torch.device,
    iterations: int | None = None,
) -> FinePlan | None:
    """The fine stage of a run (``iterations`` overrides the preset's per level), or ``None`` when it is off.

    Off when the iterations or ``preset.refinement_grid_size`` are 0.
    """
    iterations = preset.refinement_steps if iterations is None else iterations
    if iterations <= 0 or preset.refinement_grid_size <= 0:
        return None
    levels = max(preset.fine_levels, 1)
    finest = finest_grid(atlas_image, atlas_label, working, levels, preset.refinement_grid_size)
    kind = device.type if device.type in SECONDS_PER_MEGAVOXEL_ITERATION else "cpu"
    budget = preset.registration_budget_s_gpu if kind != "cpu" else preset.registration_budget_s_cpu
    factor = DIFFEOMORPHIC_COST_FACTOR if preset.diffeomorphic_fine else 1.0
    grids, steps, cost = fit_to_budget(finest, levels, iterations, budget, kind, factor)
    return FinePlan(tuple(FineLevel(g, s) for g, s in zip(grids, steps)), finest, budget, cost,
                    preset.fine_smoothness_weight, preset.fine_control_spacing, preset.fine_learning_rate,
                    preset.diffeomorphic_fine, preset.fine_ncc_weight)

