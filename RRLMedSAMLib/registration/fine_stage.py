"""The fine registration stage: instance optimisation on MIND-SSC features, coarse to fine, at the atlas's resolution.

After the network (and its working-grid instance optimisation) has registered the atlas onto a
scan, this stage optimises the displacement again on the levels of a
:class:`~RRLMedSAMLib.registration.fine_plan.FinePlan`, coarsest first:

* MIND-SSC descriptors of the atlas and the scan are computed once, on the finest level's grid
  (the scan resampled through its affine pre-alignment); coarser levels average them.
* The stage starts from the network's field or from no displacement (the affine pre-alignment
  alone), whichever matches better on the coarsest level: a network that failed on an unusual
  scan does not drag the result down.
* On each level Adam optimises a residual displacement (or, with ``diffeomorphic``, a stationary
  velocity integrated by scaling and squaring and composed with the field so far) stored on a
  control grid every ``control_spacing`` voxels and trilinearly upsampled; the objective is the
  SSD of the features plus a diffusion penalty on the whole displacement
  (:class:`~RRLMedSAMLib.registration.fine_objective.FineObjective`).
* Safety: the dissimilarity and the folding fraction are measured before and after each level;
  a level that does not lower the dissimilarity, or folds more than both its start and
  :data:`FOLDING_LIMIT`, is undone (a *fallback*) and the next level starts from its start.

Displacements are ``(1, 3, D, H, W)`` tensors in voxels of their level, ``(dz, dy, dx)``, in the
resampling direction (atlas point = grid point + displacement, in the pre-aligned frame).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from RRLMedSAMLib.geometry.deformation import resample_voxel_ddf
from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.registration.fine_objective import FineObjective, folding_fraction_voxels
from RRLMedSAMLib.registration.fine_plan import FinePlan
from RRLMedSAMLib.registration.mind_ssc import mind_ssc
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer, VelocityIntegrator

#: Largest folding fraction (non-positive Jacobian determinant) a level may leave behind.
FOLDING_LIMIT = 0.005
#: The stage stops iterating once it has run this many times its budget (an overloaded machine).
DEADLINE_FACTOR = 2.0


@dataclass
class LevelInputs:
    """One level's tensors: MIND-SSC features ``(1, 12, D, H, W)`` and intensities ``(1, 1, D, H, W)``."""

    atlas: torch.Tensor
    scan: torch.Tensor
    atlas_image: torch.Tensor
    scan_image: torch.Tensor


def optimise_level(inputs: LevelInputs, start: torch.Tensor, objective: FineObjective, iterations: int,
                   plan: FinePlan, deadline: float) -> tuple[torch.Tensor, int]:
    """The level's optimised displacement (shaped as ``start``) and the iterations run (fewer past ``deadline``)."""
    shape = tuple(start.shape[2:])
    control_shape = tuple(max(math.ceil(side / plan.control_spacing), 2) for side in shape)
    control = torch.zeros((1, 3, *control_shape), device=start.device, requires_grad=True)
    optimizer = torch.optim.Adam([control], lr=plan.learning_rate)
    integrate = VelocityIntegrator().to(start.device) if plan.diffeomorphic else None
    warp = SpatialTransformer().to(start.device)

    def total(parameters: torch.Tensor) -> torch.Tensor:
        residual = F.interpolate(parameters, size=shape, mode="trilinear", align_corners=False)
        if integrate is None:
            return start + residual
        step = integrate(residual)
        return step + warp(start, step)  # the field so far, composed after the new diffeomorphic step

    done = 0
    with torch.enable_grad():
        for _ in range(iterations):
            if time.perf_counter() > deadline:
                break
            loss = objective(inputs.atlas, inputs.scan, total(control), inputs.atlas_image, inputs.scan_image)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
    with torch.no_grad():
        return total(control), done


Optimiser = Callable[[LevelInputs, torch.Tensor, FineObjective, int, FinePlan, float], tuple[torch.Tensor, int]]


class FineStage:
    """A run's fine stage: the plan and the atlas's features on the finest level, computed once.

    Args:
        plan: levels, iterations and objective settings.
        atlas_image: the atlas image (any grid).
        device: where the optimisation runs.
    """

    def __init__(self, plan: FinePlan, atlas_image: sitk.Image, device: torch.device) -> None:
        self.plan = plan
        self.device = device
        finest = plan.levels[-1].grid
        self.atlas_image = torch.from_numpy(normalize_intensity(resample_to_grid(atlas_image, finest)))[None, None].to(device)
        self.atlas_features = mind_ssc(self.atlas_image)

    def describe(self) -> str:
        """For ``qc.json``'s ``registration`` entry."""
        return self.plan.describe()

    def _levels(self, scan_image: torch.Tensor) -> list[LevelInputs]:
        scan_features = mind_ssc(scan_image)
        levels = []
        count = len(self.plan.levels)
        for index in range(count):
            factor = 2 ** (count - 1 - index)

            def pool(tensor: torch.Tensor, factor: int = factor) -> torch.Tensor:
                return F.avg_pool3d(tensor, factor) if factor > 1 else tensor

            levels.append(LevelInputs(pool(self.atlas_features), pool(scan_features), pool(self.atlas_image),
                                      pool(scan_image)))
        return levels

    @torch.no_grad()
    def register(self, scan: sitk.Image, atlas_to_scan: sitk.Transform, working: WorkingGrid, ddf_zyx: np.ndarray,
                 optimise: Optimiser = optimise_level) -> tuple[WorkingGrid, np.ndarray, dict]:
        """Refine the working-grid displacement ``ddf_zyx`` ``(3, D, H, W)`` (``working`` voxels) on ``scan``.

        ``atlas_to_scan`` is the affine pre-alignment. Returns the last level's grid, the
        displacement on it ``(3, D', H', W')`` in its voxels, and what ran (see :func:`_details`).
        """
        tick = time.perf_counter()
        deadline = tick + DEADLINE_FACTOR * max(self.plan.budget_s, self.plan.predicted_s)
        plan = self.plan
        scan_image = normalize_intensity(resample_to_grid(scan, plan.levels[-1].grid, atlas_to_scan))
        levels = self._levels(torch.from_numpy(scan_image)[None, None].to(self.device))
        objective = FineObjective(plan.smoothness_weight, plan.ncc_weight).to(self.device)
        network = torch.from_numpy(resample_voxel_ddf(ddf_zyx, working, plan.levels[0].grid))[None].to(self.device)
        first = levels[0]
        network_score = float(objective.similarity(first.atlas, first.scan, network, first.atlas_image, first.scan_image))
        affine_score = float(objective.similarity(first.atlas, first.scan, torch.zeros_like(network),
                                                  first.atlas_image, first.scan_image))
        field = network if network_score <= affine_score else torch.zeros_like(network)
        records = []
        for index, (level, inputs) in enumerate(zip(plan.levels, levels)):
            if index:
                field = F.interpolate(field, scale_factor=2, mode="trilinear", align_corners=False) * 2.0
            started = time.perf_counter()
            before = float(objective.similarity(inputs.atlas, inputs.scan, field, inputs.atlas_image, inputs.scan_image))
            folding_before = folding_fraction_voxels(field)
            candidate, done = optimise(inputs, field, objective, level.iterations, plan, deadline)
            after = float(objective.similarity(inputs.atlas, inputs.scan, candidate, inputs.atlas_image, inputs.scan_image))
            folding_after = folding_fraction_voxels(candidate)
            accepted = after < before and folding_after <= max(folding_before, FOLDING_LIMIT)
            if accepted:
                field = candidate
            records.append({
                "spacing_mm": round(level.grid.spacing_mm, 4), "shape_zyx": list(level.grid.shape_zyx),
                "iterations": done, "seconds": round(time.perf_counter() - started, 3),
                "similarity_before": round(before, 6), "similarity_after": round(after, 6),
                "folding_before": round(folding_before, 6), "folding_after": round(folding_after, 6),
                "accepted": accepted,
            })
        details = _details(plan, records, network_score, affine_score, folding_fraction_voxels(field),
                           time.perf_counter() - tick)
        return plan.levels[-1].grid, field[0].float().cpu().numpy(), details


def _details(plan: FinePlan, records: list[dict], network_score: float, affine_score: float, folding: float,
             seconds: float) -> dict:
    """What the stage ran, for ``qc.json``: the levels' records plus totals.

    Keys: ``stage``, ``start`` (``"network"`` or ``"affine"``: the start the coarsest level
    preferred), ``start_similarity`` (network, affine), ``levels`` (one record per level:
    spacing, shape, iterations, seconds, dissimilarity and folding before and after, accepted),
    ``resolution_mm``, ``iterations``, ``seconds``, ``budget_s``, ``predicted_s``,
    ``final_similarity`` (MIND-SSC SSD on the last level, lower is better), ``folding_fraction``
    (on the last level's grid), ``fallbacks`` (levels undone), ``diffeomorphic``.
    """
    accepted = [r for r in records if r["accepted"]]
    final = records[-1]["similarity_after"] if records[-1]["accepted"] else records[-1]["similarity_before"]
    return {
        "stage": "fine MIND-SSC instance optimisation",
        "start": "network" if network_score <= affine_score else "affine",
        "start_similarity": {"network": round(network_score, 6), "affine": round(affine_score, 6)},
        "levels": records,
        "resolution_mm": records[-1]["spacing_mm"],
        "iterations": sum(r["iterations"] for r in records),
        "seconds": round(seconds, 3),
        "budget_s": plan.budget_s,
        "predicted_s": round(plan.predicted_s, 3),
        "final_similarity": final,
        "folding_fraction": round(folding, 6),
        "fallbacks": len(records) - len(accepted),
        "diffeomorphic": plan.diffeomorphic,
    }
