"""Settings of the SAM-guided methods (RRL-MedSAM, its ablations and the AutoSAM baselines).

They sit beside the :class:`~RRLMedSAMLib.run.presets.Preset` (grid, network widths, plain
stage lengths): the teacher, the distillation, mutual-EMA and the lengths of the new stages. Stage
lengths default per preset (:data:`STAGE_DEFAULTS`); every field can be overridden from the
command line. The resolved settings are stored in ``config.json`` under ``"rrl"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.distillation_losses import LOSS_KINDS

#: ``--teacher`` choices: ``auto`` = official vit_b when found and verified, else no teacher.
TEACHER_CHOICES = ("auto", "none", "vit_b", "vit_l", "vit_h", "medsam", "random-vit_b", "tiny")
SLICE_SIZES = (128, 256, 1024)


@dataclass(frozen=True)
class RRLSettings:
    """Resolved settings of the SAM-guided stages.

    Attributes:
        teacher: one of :data:`TEACHER_CHOICES`.
        sam_checkpoint: explicit SAM weights file (takes precedence over the weights folder).
        allow_custom_weights: accept ``sam_checkpoint`` even if its sha256 is in no manifest entry.
        weights_dir: SAM weights folder (else ``$RRLMEDSAM_WEIGHTS_DIR``, else the default cache).
        slice_size: side (pixels) of the square slices fed to SAM: 128, 256 or 1024.
        slice_axis: working-grid axis (0, 1, 2 of ``(D, H, W)``) the teacher slices along.
        teacher_batch: slices per teacher forward pass.
        distill_loss: ``mse`` (published), ``l1`` or ``kl``.
        distill_weight: weight of the distillation term in stage 2.
        distill_images: files or folders of the general unlabelled set of DSKD stage 1
            (empty: the training scans).
        ema_alpha: mutual-EMA weight kept by each encoder per step.
        distill_steps: DSKD stage-1 optimiser steps.
        pretrain_steps: joint registration-segmentation pre-training steps of the medical encoder.
        joint_steps: stage-2 steps (both branches, distillation, mutual-EMA).
        joint_registration_every: a registration loss term every this many stage-2 steps (0 = never).
        pretrain_continues_optimizer: the joint pre-training continues the registration warm-up's
            Adam (its moment estimates; the AP decoder joins as a new parameter group) instead of
            starting a fresh one, whose first steps move every trained weight by about the learning rate.
        autosam_steps: optimiser steps of an AutoSAM head on the atlas.
        autosam_slices: slices per AutoSAM step.
        autosam_learning_rate: Adam learning rate of the AutoSAM heads.
    """

    distill_steps: int
    pretrain_steps: int
    joint_steps: int
    autosam_steps: int
    teacher: str = "auto"
    sam_checkpoint: str | None = None
    allow_custom_weights: bool = False
    weights_dir: str | None = None
    slice_size: int = 128
    slice_axis: int = 0
    teacher_batch: int = 8
    distill_loss: str = "mse"
    distill_weight: float = 1.0
    distill_images: tuple[str, ...] = ()
    ema_alpha: float = 0.99
    joint_registration_every: int = 4
    pretrain_continues_optimizer: bool = True
    autosam_slices: int = 8
    autosam_learning_rate: float = 1e-4

    def to_dict(self) -> dict:
        data = asdict(self)
        data["distill_images"] = list(self.distill_images)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "RRLSettings":
        return cls(**(data | {"distill_images": tuple(data["distill_images"])}))

    def validate(self) -> "RRLSettings":
        """Raise :class:`InputError` for values outside their ranges; return ``self``."""
        if self.teacher not in TEACHER_CHOICES:
            raise InputError(f"Unknown teacher {self.teacher!r}; choose one of {', '.join(TEACHER_CHOICES)}.")
        if self.slice_size not in SLICE_SIZES:
            raise InputError(f"--set slice_size must be one of {', '.join(map(str, SLICE_SIZES))}, got {self.slice_size}.")
        if self.slice_axis not in (0, 1, 2):
            raise InputError(f"--set slice_axis must be 0, 1 or 2, got {self.slice_axis}.")
        if self.distill_loss not in LOSS_KINDS:
            raise InputError(f"--set distill_loss must be one of {', '.join(LOSS_KINDS)}, got {self.distill_loss!r}.")
        if not 0.0 <= self.ema_alpha <= 1.0:
            raise InputError(f"--set ema_alpha must lie in [0, 1], got {self.ema_alpha}.")
        for name in ("distill_steps", "pretrain_steps", "joint_steps", "autosam_steps"):
            if getattr(self, name) < 0:
                raise InputError(f"--set {name} must not be negative.")
        return self


#: Stage lengths per preset: (distill_steps, pretrain_steps, joint_steps, autosam_steps).
STAGE_DEFAULTS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (4, 6, 8, 6),
    "fast": (50, 60, 120, 300),
    "standard": (300, 1000, 1500, 1500),
    "full": (1000, 3000, 5000, 3000),
}


def get_rrl_settings(preset_name: str, **overrides: object) -> RRLSettings:
    """Settings for ``preset_name`` with ``overrides`` (``None`` values ignored) applied and validated."""
    distill, pretrain, joint, autosam = STAGE_DEFAULTS.get(preset_name, STAGE_DEFAULTS["fast"])
    base = RRLSettings(distill_steps=distill, pretrain_steps=pretrain, joint_steps=joint, autosam_steps=autosam)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "distill_images" in changes:
        changes["distill_images"] = tuple(str(p) for p in changes["distill_images"])  # type: ignore[union-attr]
    known = {f.name for f in fields(RRLSettings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown RRL settings: {unknown}")
    return replace(base, **changes).validate()
