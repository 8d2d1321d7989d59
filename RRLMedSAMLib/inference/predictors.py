"""How each method family turns a pre-aligned working-grid scan into a segmentation prediction.

* ``plain``: the plain segmentation network; the scan is registered deformably.
* ``rrl``: the general branch gives the prompt (its softmax); the AP decoder on the medical
  encoder's features, prompted by it (unprompted for ``rrl-no-prompt``), gives the segmentation;
  the scan is registered deformably by the medical registration network.
* ``autosam``: SAM teacher features of the scan (cached) -> head, slice by slice; no deformable
  registration (the outputs' deformation is the affine alone).

The deformable registration itself is :func:`RRLMedSAMLib.registration.register.register`.

Runs trained with the atlas prior return the segmentation logits as a correction, which ``segment``
fuses with the warped atlas label at the scan's resolution (:mod:`RRLMedSAMLib.models.atlas_prior`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from RRLMedSAMLib.models.autosam_heads import predict_autosam_volume
from RRLMedSAMLib.models.sam_teacher import SamTeacher
from RRLMedSAMLib.run.methods import Method
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache

#: ``qc.json``'s ``registration`` entry of the methods without deformable registration.
REGISTRATION_AFFINE_ONLY = "affine only"


@dataclass
class Prediction:
    """Working-grid results of one scan.

    Attributes:
        probabilities: class probabilities ``(K, D, H, W)`` of the segmentation (runs without the
            atlas prior), else ``None``.
        prompt: the general branch's probabilities ``(K, D, H, W)`` (RRL family), else ``None``.
        deformable: whether the method registers the scan deformably (else the affine alone).
        correction: the segmentation network's logits ``(K, D, H, W)`` that correct the warped
            atlas label (atlas-prior runs), else ``None``.
    """

    probabilities: np.ndarray | None
    prompt: np.ndarray | None
    deformable: bool
    correction: np.ndarray | None = None


@dataclass
class PredictorInputs:
    """What a predictor needs besides the scan."""

    method: Method
    preset: Preset
    networks: dict[str, torch.nn.Module]
    device: torch.device
    teacher: SamTeacher | None = None
    cache: TeacherFeatureCache | None = None


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits, dim=1)[0].float().cpu().numpy()


def _segmentation(inputs: PredictorInputs, logits: torch.Tensor, prompt: np.ndarray | None) -> Prediction:
    """The prediction from segmentation ``logits`` ``(1, K, D, H, W)``: probabilities, or the correction of atlas-prior runs."""
    if inputs.preset.atlas_prior:
        return Prediction(None, prompt, True, logits[0].float().cpu().numpy())
    return Prediction(_softmax(logits), prompt, True)


def predict_plain(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """Plain: the plain segmentation network on the working-grid scan ``(D, H, W)``."""
    fixed = torch.from_numpy(scan_working)[None, None].to(inputs.device)
    with torch.no_grad():
        return _segmentation(inputs, inputs.networks["segmentation"](fixed), None)


def predict_rrl(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """RRL family: general branch -> prompt; AP decoder on the medical encoder (prompted unless ``rrl-no-prompt``)."""
    networks = inputs.networks
    fixed = torch.from_numpy(scan_working)[None, None].to(inputs.device)
    with torch.no_grad():
        prompt = torch.softmax(networks["general_decoder"](networks["general_encoder"](fixed)), dim=1)
        medical = networks["registration"].encoder(fixed)
        logits = networks["ap_decoder"](medical, prompt if inputs.method.prompt else None)
        return _segmentation(inputs, logits, prompt[0].float().cpu().numpy())


def predict_autosam(inputs: PredictorInputs, scan_working: np.ndarray) -> Prediction:
    """AutoSAM: the scan's (cached) teacher features -> head; no deformable registration (affine only)."""
    assert inputs.teacher is not None
    if inputs.cache is not None:
        features = inputs.cache.features(inputs.teacher, scan_working)
    else:
        features = inputs.teacher.encode_volume(scan_working).to(torch.float16).float()
    probabilities = predict_autosam_volume(inputs.networks["head"], inputs.teacher, features, scan_working.shape)
    return Prediction(probabilities, None, False)


PREDICTORS = {"plain": predict_plain, "rrl": predict_rrl, "autosam": predict_autosam}
