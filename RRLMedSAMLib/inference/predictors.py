"""How each method family turns a pre-aligned working-grid scan into a prediction.

* ``plain``: registration network (+ instance optimisation) and the plain segmentation network.
* ``rrl``: the medical registration network (+ instance optimisation); the general branch gives
  the prompt (its softmax); the AP decoder on the medical encoder's features, prompted by it
  (unprompted for ``rrl-no-prompt``), gives the segmentation.
* ``autosam``: SAM teacher features of the scan (cached) -> head, slice by slice; no deformable
  registration (zero network displacement: the outputs' deformation is the affine alone).

Runs trained with the atlas prior return the segmentation logits as a correction, which ``segment``
fuses with the warped atlas label at the scan's resolution (:mod:`RRLMedSAMLib.models.atlas_prior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from RRLMedSAMLib.models.sam_teacher import SamTeacher
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache
from RRLMedSAMLib.training.autosam_stage import predict_autosam_volume
from RRLMedSAMLib.training.registration_stage import register_atlas_to_scan

REGISTRATION_DEFORMABLE = "affine + deformable network + instance optimisation"
REGISTRATION_AFFINE_ONLY = "affine only"


@dataclass
class Prediction:
    """Working-grid results of one scan.

    Attributes:
        probabilities: class probabilities ``(K, D, H, W)`` of the segmentation (runs without the
            atlas prior), else ``None``.
        prompt: the general branch's probabilities ``(K, D, H, W)`` (RRL family), else ``None``.
        ddf: atlas->scan displacement ``(1, 3, D, H, W)`` in working-grid voxels.
        registration: how the deformation was obtained (for ``qc.json``).
        correction: the segmentation network's logits ``(K, D, H, W)`` that correct the warped
            atlas label (atlas-prior runs), else ``None``.
    """

    probabilities: np.ndarray | None
    prompt: np.ndarray | None
    ddf: torch.Tensor
    registration: str
    correction: np.ndarray | None = None


@dataclass
class PredictorInputs:
    """What a predictor needs besides the scan."""

    method: Method
    preset: Preset
    networks: dict[str, torch.nn.Module]
    atlas_working: np.ndarray
    device: torch.device
    teacher: SamTeacher | None = None
    cache: TeacherFeatureCache | None = None


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits, dim=1)[0].float().cpu().numpy()


def _segmentation(inputs: PredictorInputs, logits: torch.Tensor, ddf: torch.Tensor, prompt: np.ndarray | None) -> Prediction:
    """The prediction from segmentation ``logits`` ``(1, K, D, H, W)``: probabilities, or the correction of atlas-prior runs."""
    if inputs.preset.atlas_prior:
        return Prediction(None, prompt, ddf, REGISTRATION_DEFORMABLE, logits[0].float().cpu().numpy())
    return Prediction(_softmax(logits), prompt, ddf, REGISTRATION_DEFORMABLE)


def predict_plain(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """Plain: registration network + plain segmentation network on the working-grid scan ``(D, H, W)``."""
    fixed = torch.from_numpy(scan_working)[None, None].to(inputs.device)
    ddf = register_atlas_to_scan(inputs.networks["registration"], inputs.atlas_working, scan_working, inputs.preset, inputs.device)
    with torch.no_grad():
        return _segmentation(inputs, inputs.networks["segmentation"](fixed), ddf, None)


def predict_rrl(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """RRL family: medical registration; general branch -> prompt; AP decoder (prompted unless ``rrl-no-prompt``)."""
    networks = inputs.networks
    fixed = torch.from_numpy(scan_working)[None, None].to(inputs.device)
    ddf = register_atlas_to_scan(networks["registration"], inputs.atlas_working, scan_working, inputs.preset, inputs.device)
    with torch.no_grad():
        prompt = torch.softmax(networks["general_decoder"](networks["general_encoder"](fixed)), dim=1)
        medical = networks["registration"].encoder(fixed)
        logits = networks["ap_decoder"](medical, prompt if inputs.method.prompt else None)
        return _segmentation(inputs, logits, ddf, prompt[0].float().cpu().numpy())


def predict_autosam(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """AutoSAM: the scan's (cached) teacher features -> head; zero network displacement (affine only)."""
    assert inputs.teacher is not None
    if inputs.cache is not None:
        features = inputs.cache.features(inputs.teacher, scan_working)
    else:
        features = inputs.teacher.encode_volume(scan_working).to(torch.float16).float()
    probabilities = predict_autosam_volume(inputs.networks["head"], inputs.teacher, features, scan_working.shape)
    ddf = torch.zeros((1, 3, *scan_working.shape), device=inputs.device)
    return Prediction(probabilities, None, ddf, REGISTRATION_AFFINE_ONLY)


PREDICTORS = {"plain": predict_plain, "rrl": predict_rrl, "autosam": predict_autosam}
