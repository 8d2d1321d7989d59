"""Training stages of RRL-MedSAM and its ablations.

Order (each stage a :func:`~RRLMedSAMLib.training.stage_runner.run_stage` with its own checkpoint,
so a run resumes exactly at any stage):

1. ``teacher_features`` - SAM features of the atlas, the scans and the distillation images (cached).
2. ``distill_stage1`` - DSKD stage 1: the general encoder + projection regress the teacher's
   features on the general set (un-augmented whole volumes).
3. ``registration`` - warm-up of the registration network built around the medical encoder
   (the plain pipeline's registration step), so that pre-training starts from usable warps.
4. ``medical_pretrain`` - joint registration-segmentation: one medical-encoder pass over an
   atlas/scan pair feeds the registration decoder (NCC + smoothness) and the AP decoder (no
   prompt) supervised by the atlas label and, on the scan, by the atlas label warped with the
   current (detached) displacement.
5. ``pseudo_labels`` - the atlas label warped onto every scan by the medical registration network.
6. ``joint_stage2`` - DSKD stage 2 with both branches: general branch (general encoder + decoder,
   Dice-CE on (pseudo) labels, plus the distillation term on an un-augmented volume), medical branch
   (medical encoder + AP decoder prompted by the general branch's detached softmax), a
   registration term every few steps, one Adam over everything, then mutual-EMA.

With the atlas prior (the default, :mod:`RRLMedSAMLib.models.atlas_prior`) the AP decoder's
logits are fused with a perturbed copy of the target before its loss in stages 4 and 6: the
medical branch learns to correct the warped atlas label. The general branch (the prompt) segments
alone.

Without a teacher (or for ``rrl-no-distill``) steps 1-2 are skipped and the general encoder starts
stage 2 as a copy of the pre-trained medical encoder.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn

from RRLMedSAMLib.models.atlas_prior import fuse_with_prior, perturbed_prior, torch_generator
from RRLMedSAMLib.models.distillation_losses import DistillationCriterion
from RRLMedSAMLib.models.mutual_ema import MutualEMA
from RRLMedSAMLib.registration.losses import RegistrationObjective
from RRLMedSAMLib.registration.spatial_transformer import SpatialTransformer
from RRLMedSAMLib.run.networks import build_rrl_networks
from RRLMedSAMLib.run.teacher import build_teacher
from RRLMedSAMLib.training.augmentation import augment, make_augmentation
from RRLMedSAMLib.training.context import TrainingContext
from RRLMedSAMLib.training.distill_data import collect_distill_paths, prepare_distill_volumes
from RRLMedSAMLib.training.registration_stage import make_registration_step, registration_pair
from RRLMedSAMLib.training.segmentation_stage import batch_dice, sample_training_volumes
from RRLMedSAMLib.training.stage_runner import StepResult


def _volume(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(device)


def encoder_gap(general: nn.Module, medical: nn.Module) -> float:
    """Relative distance ``|theta_g - theta_m| / |theta_m|`` between the two encoders' parameters."""
    with torch.no_grad():
        diff = sum(float((g - m).pow(2).sum()) for g, m in zip(general.parameters(), medical.parameters()))
        norm = sum(float(m.pow(2).sum()) for m in medical.parameters())
    return (diff / max(norm, 1e-12)) ** 0.5


def make_distill_step(
    encoder: nn.Module, criterion: DistillationCriterion, optimizer: torch.optim.Optimizer,
    volumes: list[np.ndarray], features: list[torch.Tensor], device: torch.device,
):
    """DSKD stage 1: one random whole volume ``(1, 1, D, H, W)`` against its teacher features per step."""

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        index = int(rng.integers(len(volumes)))
        loss = criterion(encoder(_volume(volumes[index], device)), features[index].to(device).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"distillation": float(loss.detach())}, None

    return step


def medical_logits(
    logits: torch.Tensor, targets: torch.Tensor, ctx: TrainingContext, rng: np.random.Generator
) -> torch.Tensor:
    """The AP decoder's logits, fused with a perturbed prior of ``targets`` when the run uses the atlas prior."""
    if not ctx.preset.atlas_prior:
        return logits
    generator = torch_generator(int(rng.integers(2**62)))
    return fuse_with_prior(logits, perturbed_prior(targets, ctx.data.num_classes, generator))


def make_medical_pretrain_step(
    registration: nn.Module, ap_decoder: nn.Module, optimizer: torch.optim.Optimizer, ctx: TrainingContext
):
    """Joint registration-segmentation pre-training of the medical encoder (atlas -> random scan per step)."""
    data, device = ctx.data, ctx.device
    objective = RegistrationObjective(ctx.preset.ncc_kernel, ctx.preset.smoothness_weight).to(device)
    segmentation_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    warp = SpatialTransformer()
    atlas_classes = torch.from_numpy(data.atlas_classes).long()[None, None].to(device)
    atlas_one_hot = nn.functional.one_hot(atlas_classes[0, 0], data.num_classes).permute(3, 0, 1, 2)[None].float()

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        moving, fixed = registration_pair(data, int(rng.integers(len(data.scans))), True, device)
        features = registration.encoder(torch.cat([moving, fixed], dim=0))
        ddf, _ = registration.decoder([f[:1] for f in features], [f[1:] for f in features])
        registration_loss, parts = objective(moving, fixed, ddf)
        with torch.no_grad():
            pseudo = warp(atlas_one_hot, ddf.detach()).argmax(dim=1, keepdim=True)
        targets = torch.cat([atlas_classes, pseudo], dim=0)
        logits = medical_logits(ap_decoder(features, None), targets, ctx, rng)
        seg = segmentation_loss(logits, targets)
        loss = registration_loss + seg
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses = {"registration": float(registration_loss.detach()), **parts, "segmentation": float(seg.detach())}
        return losses, batch_dice(logits[1:].detach(), pseudo, data.num_classes)

    return step


def make_joint_step(
    ctx: TrainingContext,
    networks: dict[str, nn.Module],
    optimizer: torch.optim.Optimizer,
    pseudo_labels: np.ndarray,
    teacher_features: list[torch.Tensor] | None,
    ema: MutualEMA | None,
):
    """Stage 2 (see the module docstring). ``teacher_features[i]`` belongs to ``[atlas, *scans][i]``."""
    data, device, preset, settings = ctx.data, ctx.device, ctx.preset, ctx.settings
    general, general_decoder = networks["general_encoder"], networks["general_decoder"]
    registration, ap_decoder = networks["registration"], networks["ap_decoder"]
    criterion = networks.get("distillation")
    objective = RegistrationObjective(preset.ncc_kernel, preset.smoothness_weight).to(device)
    segmentation_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    transform = make_augmentation(preset.segmentation_patch)
    volumes = [data.atlas_image, *data.scans]
    every = settings.joint_registration_every

    def step(step_index: int, rng: np.random.Generator) -> StepResult:
        pairs = [augment(transform, image, classes, rng)
                 for image, classes in sample_training_volumes(data, pseudo_labels, rng, 2, 0.25)]
        images = torch.stack([p[0] for p in pairs]).to(device)
        targets = torch.stack([p[1] for p in pairs]).to(device)
        logits_general = general_decoder(general(images))
        loss_general = segmentation_loss(logits_general, targets)
        prompt = torch.softmax(logits_general, dim=1).detach() if ctx.method.prompt else None
        logits_medical = medical_logits(ap_decoder(registration.encoder(images), prompt), targets, ctx, rng)
        loss_medical = segmentation_loss(logits_medical, targets)
        loss = loss_general + loss_medical
        losses = {"general": float(loss_general.detach()), "medical": float(loss_medical.detach())}
        if teacher_features is not None and criterion is not None:
            index = int(rng.integers(len(volumes)))
            distillation = criterion(general(_volume(volumes[index], device)), teacher_features[index].to(device).float())
            loss = loss + settings.distill_weight * distillation
            losses["distillation"] = float(distillation.detach())
        if every and step_index % every == 0:
            moving, fixed = registration_pair(data, int(rng.integers(len(data.scans))), step_index % (2 * every) == 0, device)
            ddf, _ = registration(moving, fixed)
            registration_loss, _ = objective(moving, fixed, ddf)
            loss = loss + registration_loss
            losses["registration"] = float(registration_loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step()
        losses["encoder_gap"] = encoder_gap(general, registration.encoder)
        return losses, batch_dice(logits_medical.detach(), targets, data.num_classes)

    return step


def _teacher_stage(ctx: TrainingContext) -> tuple[list[torch.Tensor], list[np.ndarray], list[torch.Tensor]]:
    """Teacher features of ``[atlas, *scans]`` and the stage-1 set ``(volumes, features)``."""
    data = ctx.data
    volumes = {"atlas": data.atlas_image, **{f"scan:{n}": s for n, s in zip(data.scan_names, data.scans)}}
    distill: dict[str, np.ndarray] = {}
    if ctx.settings.distill_images:
        paths = collect_distill_paths(ctx.settings.distill_images)
        cache = ctx.run.root / "cache" / "distill_images.safetensors"
        stacked = ctx.group.main_first(lambda: prepare_distill_volumes(paths, data.atlas_image.shape, cache))
        distill = {f"distill:{i}:{p.name}": v for i, (p, v) in enumerate(zip(paths, stacked))}
    teacher = build_teacher(ctx.teacher, ctx.settings, ctx.device)
    assert teacher is not None
    features = ctx.teacher_features(teacher, volumes | distill)
    del teacher
    target = [features[name] for name in volumes]
    if distill:
        return target, list(distill.values()), [features[name] for name in distill]
    return target, list(volumes.values()), target


def train_rrl(ctx: TrainingContext) -> dict[str, nn.Module]:
    """Run (or resume) every RRL stage of ``ctx.method``; returns the trained networks."""
    preset, settings, device = ctx.preset, ctx.settings, ctx.device
    distill = ctx.method.distill and ctx.teacher["name"] != "none"
    torch.manual_seed(ctx.seed)
    networks = build_rrl_networks(preset, ctx.data.num_classes, settings, distill)
    for module in networks.values():
        module.to(device)
    registration, general = networks["registration"], networks["general_encoder"]

    target_features = None
    if distill:
        target_features, stage1_volumes, stage1_features = _teacher_stage(ctx)
        criterion = networks["distillation"]
        adam = torch.optim.Adam([*general.parameters(), *criterion.parameters()], lr=preset.learning_rate)
        ctx.stage("distill_stage1", settings.distill_steps,
                  make_distill_step(general, criterion, adam, stage1_volumes, stage1_features, device),
                  {"general_encoder": general, "distillation": criterion}, {"adam": adam})

    adam = torch.optim.Adam(registration.parameters(), lr=preset.learning_rate)
    ctx.stage("registration", preset.registration_steps,
              make_registration_step(registration, adam, ctx.data, preset, device), {"registration": registration}, {"adam": adam})

    ap_decoder = networks["ap_decoder"]
    if settings.pretrain_continues_optimizer:
        adam.add_param_group({"params": list(ap_decoder.parameters())})
    else:
        adam = torch.optim.Adam([*registration.parameters(), *ap_decoder.parameters()], lr=preset.learning_rate)
    ctx.stage("medical_pretrain", settings.pretrain_steps, make_medical_pretrain_step(registration, ap_decoder, adam, ctx),
              {"registration": registration, "ap_decoder": ap_decoder}, {"adam": adam})

    pseudo_labels = ctx.pseudo_labels(registration)

    if not distill and not ctx.run.checkpoint("joint_stage2").exists():
        general.load_state_dict(registration.encoder.state_dict())
    adam = torch.optim.Adam([p for module in networks.values() for p in module.parameters()], lr=preset.learning_rate)
    ema = MutualEMA(general, registration.encoder, settings.ema_alpha) if ctx.method.ema else None
    ctx.stage("joint_stage2", settings.joint_steps,
              make_joint_step(ctx, networks, adam, pseudo_labels, target_features, ema), networks, {"adam": adam})
    return networks
