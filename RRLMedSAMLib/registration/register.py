"""Registering the atlas onto one scan: the single path every caller goes through.

Two levels, both here:

* :func:`register_on_grid` - the registration network's prediction refined by instance
  optimisation, between two arrays already on the working grid. Training's pseudo labels call it
  directly (their scans are prepared working-grid arrays), and :func:`register` builds on it.
* :func:`register` - one scan on its own grid, from an affine start: resample onto the working
  grid, :func:`register_on_grid`, then the fine-grid NCC pass of the presets
  (:mod:`RRLMedSAMLib.registration.fine_refinement`) or, when switched on instead, the fine
  registration stage (:mod:`RRLMedSAMLib.registration.fine_stage`: MIND-SSC instance optimisation,
  coarse to fine, at the atlas's resolution). ``segment`` (every registration, ensemble members included) and the
  volume calibration call it.

Displacements follow the working grid's conventions (:mod:`RRLMedSAMLib.geometry.working_grid`):
arrays ``(3, D, H, W)`` (tensors ``(1, 3, D, H, W)``) in voxels of the grid they live on,
components in ``(z, y, x)`` order, resampling direction (atlas point = grid point + displacement,
in the pre-aligned frame). :func:`RRLMedSAMLib.geometry.deformation.compose_scan_displacement`
turns one into a physical field on the scan's grid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
import torch

from RRLMedSAMLib.geometry.working_grid import WorkingGrid, normalize_intensity, resample_to_grid
from RRLMedSAMLib.registration.coarse_to_fine import coarse_to_fine_displacement
from RRLMedSAMLib.registration.fine_plan import plan_fine_stage
from RRLMedSAMLib.registration.fine_refinement import FineRefinement, plan_fine_refinement
from RRLMedSAMLib.registration.fine_stage import FineStage
from RRLMedSAMLib.registration.instance_optimization import refine_displacement, refine_registration
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.registration.network import RegistrationNetwork
from RRLMedSAMLib.registration.scan_folding import SCAN_GRID_STEP, ScanFoldingOfTensor, ScanGridFolding, shorten_until_unfolded
from RRLMedSAMLib.registration.step_checks import StepCheck, StepJudge, labelled_region
from RRLMedSAMLib.run.presets import Preset

#: ``qc.json``'s ``registration_checks`` step names of the two working-grid candidates.
NETWORK_STEP = "deformable registration (working grid)"
COARSE_STEP = "coarse-to-fine instance optimisation from the affine start"
#: ``qc.json``'s ``registration`` entry for the working-grid part of :func:`register`.
REGISTRATION_DEFORMABLE = "affine + deformable network + instance optimisation"
#: The same when the network's registration lost to the affine start (see :func:`register`).
REGISTRATION_AFFINE_FALLBACK = "affine + instance optimisation (the network's registration lost to the affine start)"
#: ... and when instance optimisation from the affine start lost to it too.
REGISTRATION_AFFINE_KEPT = "affine (the deformable registration lost to it)"
#: ... and when the coarse-to-fine candidate matched the scan better than the network's registration.
REGISTRATION_COARSE = "affine + coarse-to-fine instance optimisation (it matched better than the network's registration)"
#: ... and when every length of the kept step folded too many of the scan's voxels.
REGISTRATION_AFFINE_UNFOLDED = "affine (the deformable registration folded the scan's voxels at every step length)"


def register_on_grid(
    network: RegistrationNetwork, atlas: np.ndarray, scan: np.ndarray, preset: Preset, device: torch.device
) -> torch.Tensor:
    """Displacement ``(1, 3, D, H, W)`` (working-grid voxels) warping ``atlas`` onto ``scan``.

    ``atlas`` and ``scan`` are working-grid arrays ``(D, H, W)`` with intensities in [0, 1] (the
    scan already pre-aligned). The network's prediction refined by
    ``preset.instance_optimization_steps`` of instance optimisation.
    """
    network.eval()
    moving = torch.from_numpy(atlas)[None, None].to(device)
    fixed = torch.from_numpy(scan)[None, None].to(device)
    with torch.no_grad():
        _, flow = network(moving, fixed)
    objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight).to(device)
    return refine_registration(network.decoder, objective, moving, fixed, flow, preset.instance_optimization_steps)


@dataclass
class Registration:
    """A run's registration, ready to apply to scans.

    Attributes:
        network: the trained registration network (eval mode, on ``device``).
        atlas_working: the atlas image on ``grid``, ``(D, H, W)`` float32 in [0, 1].
        atlas_mask_working: the atlas's labelled region on ``grid``, ``(D, H, W)`` float32, 1 inside.
        grid: the run's working grid (atlas space).
        preset: the run's preset, its ``instance_optimization_steps`` already those of the
            working-grid pass (fewer when the fine stage follows).
        refinement: the fine registration stage or the fine-grid NCC pass, or ``None`` (off).
        device: where the network and the optimisation run.
    """

    network: RegistrationNetwork
    atlas_working: np.ndarray
    atlas_mask_working: np.ndarray
    grid: WorkingGrid
    preset: Preset
    refinement: FineStage | FineRefinement | None
    device: torch.device


def make_registration(
    network: RegistrationNetwork, atlas_image: sitk.Image, atlas_label: sitk.Image, grid: WorkingGrid,
    preset: Preset, device: torch.device, refinement_steps: int | None = None,
) -> Registration:
    """The :class:`Registration` of a run.

    After the working-grid pass comes the fine registration stage when it is on (the preset's
    ``refinement_steps``, or ``refinement_steps`` here, > 0), else the fine-grid NCC pass when the
    preset has one; ``refinement_steps=0`` switches both off.
    """
    plan = plan_fine_stage(atlas_image, atlas_label, grid, preset, device, refinement_steps)
    refinement: FineStage | FineRefinement | None = None
    if plan is not None:
        refinement = FineStage(plan, atlas_image, device)
    elif refinement_steps is None:
        refinement = plan_fine_refinement(atlas_image, atlas_label, grid, preset, device)
    coarse_steps = preset.instance_optimization_steps
    if refinement is not None:
        coarse_steps = min(coarse_steps, preset.refinement_coarse_steps)
    atlas_working = normalize_intensity(resample_to_grid(atlas_image, grid))
    return Registration(network, atlas_working, labelled_region(atlas_label, grid), grid, replace(preset, instance_optimization_steps=coarse_steps),
                        refinement, device)


@dataclass
class Field:
    """An atlas->scan displacement: ``ddf`` ``(3, D, H, W)`` float32 in voxels of ``grid`` (see the module notes).

    ``describe`` says how it was made (``qc.json``'s ``registration`` entry); ``refinement_s`` the
    seconds the fine stage took (``None`` without one); ``details`` what the fine stage ran
    (levels, resolution, iterations, seconds, final similarity, folding, fallbacks: see
    :func:`RRLMedSAMLib.registration.fine_stage._details`), empty without one; ``checks`` the
    safety check of each step (:class:`RRLMedSAMLib.registration.step_checks.StepCheck` as dicts);
    ``scan_displacement`` the field already composed onto the scan's grid when a check composed it
    (:func:`RRLMedSAMLib.geometry.deformation.compose_scan_displacement` of ``grid`` and ``ddf``), else ``None``.
    """

    grid: WorkingGrid
    ddf: np.ndarray
    describe: str
    refinement_s: float | None = None
    details: dict = field(default_factory=dict)
    checks: list[dict] = field(default_factory=list)
    scan_displacement: sitk.Image | None = None


@torch.no_grad()
def register(
    model: Registration, scan: sitk.Image, start: sitk.Transform, scan_working: np.ndarray | None = None
) -> Field:
    """The run's deformable registration of the atlas onto ``scan`` (any grid) from the affine ``start``.

    ``start`` is the atlas->scan pre-alignment (a SimpleITK transform in LPS mm, mapping atlas
    points to scan points, as :func:`RRLMedSAMLib.geometry.affine.prealign_to_atlas` returns).
    ``scan_working`` is the scan already resampled onto ``model.grid`` through ``start`` and
    normalised (computed here when ``None``). Returns the field on the fine stage's last level
    when the run has the stage, else on the working grid.

    No step may leave the match worse than the step before it
    (:mod:`RRLMedSAMLib.registration.step_checks`): when the working-grid registration loses to
    the affine start, instance optimisation is run again from the affine start instead, and when
    that loses too the affine start is kept; the fine-grid pass judges itself the same way.
    """
    if scan_working is None:
        scan_working = normalize_intensity(resample_to_grid(scan, model.grid, start))
    on_scan = ScanGridFolding(scan, start)
    # the fine stage and the fine-grid pass judge the final field; without them the working-grid field is final
    ddf, checks = checked_registration_on_grid(model.network, model.atlas_working, model.atlas_mask_working,
                                               scan_working, model.preset, model.device,
                                               on_scan.of_tensor(model.grid) if model.refinement is None else None)
    ddf_zyx = ddf[0].float().cpu().numpy()
    described = describe_working_registration(checks)
    if model.refinement is None:
        return Field(model.grid, ddf_zyx, described, checks=[check.to_dict() for check in checks],
                     scan_displacement=on_scan.displacement_of(model.grid, ddf_zyx))
    tick = time.perf_counter()
    if isinstance(model.refinement, FineRefinement):
        grid, refined, details = model.refinement.register(scan, start, model.grid, ddf_zyx, on_scan)
    else:
        grid, refined, details = model.refinement.register(scan, start, model.grid, ddf_zyx)
    fine_check = details.pop("check", None)
    if fine_check is not None:
        checks.append(fine_check)
    return Field(grid, refined, f"{described} + {model.refinement.describe()}",
                 time.perf_counter() - tick, details, [check.to_dict() for check in checks],
                 on_scan.displacement_of(grid, refined))


def checked_registration_on_grid(
    network: RegistrationNetwork, atlas: np.ndarray, atlas_mask: np.ndarray, scan: np.ndarray, preset: Preset,
    device: torch.device, on_scan: ScanFoldingOfTensor | None = None,
) -> tuple[torch.Tensor, list[StepCheck]]:
    """:func:`register_on_grid` kept only when it beats the affine start; the displacement and the checks made.

    ``atlas``, ``scan`` as for :func:`register_on_grid`; ``atlas_mask`` the atlas's labelled region
    on the same grid ``(D, H, W)``, 1 inside (what the volume check warps). When the network's
    registration loses to the affine start (zero displacement), instance optimisation is run again
    from the affine start; when that loses too, the affine start is returned. With
    ``preset.coarse_start_levels`` a coarse-to-fine candidate from the affine start
    (:mod:`RRLMedSAMLib.registration.coarse_to_fine`) is judged instead of that retry, shortened
    until it passes the checks, and kept when it matches better than the network's registration
    (or that lost to the affine start). ``on_scan``, when
    given, measures the folding of the scan's own voxels; a kept step that folds more than
    :data:`~RRLMedSAMLib.registration.step_checks.FOLDING_LIMIT` of them is shortened
    (:func:`RRLMedSAMLib.registration.scan_folding.shorten_until_unfolded`). Returns the
    displacement ``(1, 3, D, H, W)`` (working-grid voxels) and one
    :class:`~RRLMedSAMLib.registration.step_checks.StepCheck` per step tried.
    """
    fixed = torch.from_numpy(scan)[None, None].to(device)
    moving = torch.from_numpy(atlas)[None, None].to(device)
    mask = torch.from_numpy(atlas_mask)[None, None].to(device=device, dtype=moving.dtype)
    judge = StepJudge(preset.ncc_kernel, moving, fixed, mask)
    affine_start = torch.zeros((1, 3, *scan.shape), dtype=moving.dtype, device=device)
    before = judge.measure(affine_start)
    ddf = register_on_grid(network, atlas, scan, preset, device)
    checks = [judge.compare(NETWORK_STEP, before, judge.measure(ddf))]
    if preset.coarse_start_levels > 0:
        # one vector per voxel: without the folding penalty Adam's per-voxel steps fold cells
        objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight, preset.fine_grid_folding_weight).to(device)
        candidate, tried = judge.longest_kept_fraction(COARSE_STEP, before, coarse_to_fine_displacement(
            objective, moving, fixed, preset.coarse_start_levels, preset.instance_optimization_steps))
        checks[0], coarse = keep_the_better(checks[0], tried[-1])
        checks.append(coarse)
        if coarse.kept:
            ddf = candidate
    elif not checks[0].kept:
        objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight).to(device)
        ddf = refine_displacement(objective, moving, fixed, affine_start, preset.instance_optimization_steps)
        checks.append(judge.compare("instance optimisation from the affine start", before, judge.measure(ddf)))
    if not any(check.kept for check in checks):
        return affine_start, checks
    if on_scan is None:
        return ddf, checks
    ddf, shortened = shorten_until_unfolded(judge, before, ddf, on_scan)
    return ddf, checks + shortened


def keep_the_better(network: StepCheck, coarse: StepCheck) -> tuple[StepCheck, StepCheck]:
    """The checks of the network's registration and of the coarse-to-fine candidate, only the better one kept.

    When both passed, the one with the lower similarity (``ncc_after``) is marked not kept, saying why.
    """
    if not (network.kept and coarse.kept):
        return network, coarse
    if coarse.ncc_after <= network.ncc_after:
        return network, replace(coarse, kept=False, reason=f"the network's registration matched better ({network.ncc_after:.4f})")
    return replace(network, kept=False, reason=f"the coarse-to-fine candidate matched better ({coarse.ncc_after:.4f})"), coarse


def describe_working_registration(checks: list[StepCheck]) -> str:
    """``qc.json``'s ``registration`` entry for what :func:`checked_registration_on_grid` kept."""
    steps = [check for check in checks if not check.step.startswith(SCAN_GRID_STEP)]
    if steps[0].kept:
        described = REGISTRATION_DEFORMABLE
    elif steps[-1].kept:
        described = REGISTRATION_COARSE if steps[-1].step.startswith(COARSE_STEP) else REGISTRATION_AFFINE_FALLBACK
    else:
        return REGISTRATION_AFFINE_KEPT
    on_scan = [check for check in checks if check.step.startswith(SCAN_GRID_STEP)]
    if not on_scan:
        return described
    if not on_scan[-1].kept:
        return REGISTRATION_AFFINE_UNFOLDED
    return f"{described}, {on_scan[-1].step.removeprefix(SCAN_GRID_STEP + ', ')} ({on_scan[0].reason} at the whole step)"
