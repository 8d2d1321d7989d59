"""Training presets: how big the working grid and networks are and how long each stage runs.

``tiny`` is for tests (seconds on a laptop), ``fast`` for the CPU demo, ``standard`` and ``full``
for real work (GPU recommended for ``full``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from RRLMedSAMLib.errors import InputError


@dataclass(frozen=True)
class Preset:
    """Resolved training settings (all sizes in voxels of the working grid).

    Attributes:
        grid_size: voxels along the working grid's longest side.
        channels: encoder channels per level (finest first).
        registration_steps: optimiser steps of unsupervised registration training.
        segmentation_steps: optimiser steps of segmentation training on pseudo labels.
        learning_rate: Adam learning rate of both stages.
        ncc_kernel: window (voxels) of the local normalised cross-correlation.
        smoothness_weight: weight of the displacement-gradient (diffusion) penalty.
        diffeomorphic: predict a velocity field integrated by scaling and squaring.
        checkpoint_every: steps between checkpoints (also written at stage ends and on interrupt).
        affine_iterations: optimiser iterations per level of the affine pre-alignment.
        segmentation_patch: side (voxels) of the random patches segmentation trains on; 0 = whole grid.
        instance_optimization_steps: per-pair refinement iterations after the registration network
            (pseudo labels and segment); 0 = network only.
        atlas_prior: the segmentation networks correct the warped atlas label (a prior fused with
            their logits, see :mod:`RRLMedSAMLib.models.atlas_prior`) instead of segmenting alone.
        refinement_grid_size: cap (voxels along the longest side) on the finest grid of the fine
            registration stage that ``segment`` runs after the working-grid pass
            (:mod:`RRLMedSAMLib.registration.fine_stage`; that grid is otherwise the atlas's own
            voxels, at most 1 mm fine unless the working grid is finer); 0 = off.
        refinement_steps: Adam iterations per level of that fine stage (fewer when the budget
            demands); 0 = off, as in every user preset (:data:`FINE_STAGE_STEPS` switches it on).
        refinement_coarse_steps: instance-optimisation iterations on the working grid at ``segment``
            when the fine stage or the fine-grid pass follows (at most ``instance_optimization_steps``; the pseudo labels
            of training use ``instance_optimization_steps`` unless ``fine_pseudo_labels``).
        registration_budget_s_cpu: seconds per scan the fine stage may take on a CPU (levels,
            iterations and resolution are sized to fit, see :mod:`RRLMedSAMLib.registration.fine_plan`).
        registration_budget_s_gpu: the same on a GPU.
        fine_levels: levels of the fine stage, each halving the voxel size of the one before.
        fine_smoothness_weight: weight of the fine stage's diffusion penalty (chosen so that at most
            0.5 % of voxels fold on the selection scans).
        fine_control_spacing: voxels of a level between the control points of the optimised field.
        fine_learning_rate: Adam step of the fine stage (voxels of the level).
        fine_ncc_weight: weight of a local NCC term added to the MIND-SSC SSD (0 = features only).
        diffeomorphic_fine: the fine stage optimises velocities integrated by scaling and squaring.
        fine_grid_size: longest side (voxels) of the finer grid on which ``segment`` refines each
            registration after the working-grid pass with local NCC
            (:mod:`RRLMedSAMLib.registration.fine_refinement`; never finer than the atlas's voxels,
            skipped when not finer than the working grid); 0 = off. The fine registration stage
            replaces this pass when it is on.
        fine_grid_steps: Adam iterations of that pass; 0 = off.
        fine_grid_smoothness_weight: weight of its diffusion penalty (lower than the working grid's:
            the finer grid resolves what a stiffer field would smooth away).
        fine_grid_ncc_kernel: window (voxels of the finer grid) of its local NCC.
        fine_grid_folding_weight: weight of a penalty on Jacobian determinants below 0.1 in that
            pass (:func:`RRLMedSAMLib.registration.losses.folding_penalty`); 0 = off.
        fine_pseudo_labels: training's pseudo labels are made by the whole registration ``segment``
            runs, the fine stage included (:mod:`RRLMedSAMLib.training.pseudo_labels`), instead of
            on the working grid alone; each scan then costs the fine stage's budget once more.
        coarse_start_levels: coarser levels of an instance optimisation from the affine start
            (:mod:`RRLMedSAMLib.registration.coarse_to_fine`) run beside the network's
            registration on the working grid, ``instance_optimization_steps`` on each level and
            the working grid, with ``fine_grid_folding_weight``'s folding penalty; the candidate
            that matches the scan better is kept. 0 = off.
    """

    name: str
    grid_size: int
    channels: tuple[int, ...]
    registration_steps: int
    segmentation_steps: int
    learning_rate: float = 1e-3
    ncc_kernel: int = 7
    smoothness_weight: float = 1.0
    diffeomorphic: bool = True
    checkpoint_every: int = 25
    affine_iterations: int = 100
    segmentation_patch: int = 0
    instance_optimization_steps: int = 50
    atlas_prior: bool = True
    refinement_grid_size: int = 0
    refinement_steps: int = 0
    refinement_coarse_steps: int = 20
    registration_budget_s_cpu: float = 30.0
    registration_budget_s_gpu: float = 5.0
    fine_levels: int = 3
    fine_smoothness_weight: float = 0.3
    fine_control_spacing: int = 2
    fine_learning_rate: float = 1.0
    fine_ncc_weight: float = 0.0
    diffeomorphic_fine: bool = False
    fine_grid_size: int = 0
    fine_grid_steps: int = 0
    fine_grid_smoothness_weight: float = 0.35
    fine_grid_ncc_kernel: int = 5
    fine_grid_folding_weight: float = 10.0
    fine_pseudo_labels: bool = False
    coarse_start_levels: int = 0

    @property
    def grid_divisor(self) -> int:
        """The encoder's down-sampling factor: every side of the working grid is a multiple of it."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preset":
        return cls(**(data | {"channels": tuple(data["channels"])}))


#: Iterations per level that switch the fine registration stage on (``segment --refinement-steps``,
#: ``train --set refinement_steps``). It is off in every user preset: on held-out brain and
#: prostate scans it lowered Dice (see ``docs/benchmarks.md``, add-ons); the per-scan budgets still
#: size it when on. The fine-grid NCC pass (``fine_grid_*``) is the presets' refinement instead.
FINE_STAGE_STEPS = 25

PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", grid_size=32, channels=(4, 8, 8, 16, 16), registration_steps=12, segmentation_steps=12,
                   ncc_kernel=5, checkpoint_every=4, affine_iterations=20, instance_optimization_steps=5,
                   refinement_grid_size=48, refinement_steps=3),
    "fast": Preset("fast", grid_size=64, channels=(16, 32, 64, 96, 128), registration_steps=200,
                   segmentation_steps=250, segmentation_patch=48, refinement_grid_size=256,
                   registration_budget_s_cpu=30.0, registration_budget_s_gpu=5.0, fine_grid_size=128, fine_grid_steps=25),
    "standard": Preset("standard", grid_size=96, channels=(16, 32, 64, 96, 128), registration_steps=1500,
                       segmentation_steps=1500, segmentation_patch=64, checkpoint_every=50,
                       refinement_grid_size=256, registration_budget_s_cpu=90.0,
                       registration_budget_s_gpu=10.0, fine_grid_size=128, fine_grid_steps=25),
    "full": Preset("full", grid_size=128, channels=(16, 32, 64, 96, 128), registration_steps=5000,
                   segmentation_steps=5000, segmentation_patch=96, ncc_kernel=9, checkpoint_every=100,
                   refinement_grid_size=256, registration_budget_s_cpu=240.0,
                   registration_budget_s_gpu=30.0, fine_grid_size=192, fine_grid_steps=50),
}


def get_preset(name: str, **overrides: object) -> Preset:
    """The named preset with ``overrides`` (``None`` values ignored) applied."""
    if name not in PRESETS:
        raise InputError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    changes = {k: v for k, v in overrides.items() if v is not None}
    negative = [k for k, v in changes.items() if isinstance(v, int) and not isinstance(v, bool) and v < 0]
    if negative:
        flag = "--" + negative[0].replace("_", "-")
        raise InputError(f"{flag} must be 0 or more, not {changes[negative[0]]}.")
    preset = replace(PRESETS[name], **changes)
    if preset.fine_pseudo_labels and not (preset.refinement_steps > 0 and preset.refinement_grid_size > 0):
        raise InputError("fine_pseudo_labels=on makes the pseudo labels with the fine registration stage, which is off "
                         f"in this run: also pass --set refinement_steps=N (e.g. {FINE_STAGE_STEPS}).")
    return preset
