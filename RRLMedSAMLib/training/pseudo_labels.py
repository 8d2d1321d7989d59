"""Pseudo labels: the atlas label warped onto one training scan, on the working grid.

Two ways, chosen by the preset's ``fine_pseudo_labels``:

* off - the registration network refined by instance optimisation on the working grid, the same
  arrays the networks train on, with the safety check against the affine start
  (:func:`RRLMedSAMLib.registration.register.checked_registration_on_grid`);
* on - the whole registration ``segment`` runs (:func:`RRLMedSAMLib.registration.register.register`),
  the fine registration stage included, on the scan file itself from its training pre-alignment;
  the resulting field is sampled back onto the working grid. Each scan then costs the fine stage's
  budget (``registration_budget_s_cpu`` / ``_gpu``) once more.

Either way a pseudo label is a class map ``(D, H, W)`` (0 = background, ``k`` = the ``k``-th atlas
label id) on the working grid, and the registration that made it is recorded: a scan whose
deformable registration lost to its affine start gets the fallback's label, and says so
(:attr:`PseudoLabel.registration`, kept in the pseudo-label file's metadata and the model card).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from torch import nn

from RRLMedSAMLib.geometry.affine import affine_from_dict
from RRLMedSAMLib.geometry.deformation import resample_voxel_ddf
from RRLMedSAMLib.io.volumes import read_label, read_scan
from RRLMedSAMLib.registration.register import (
    REGISTRATION_DEFORMABLE,
    Registration,
    checked_registration_on_grid,
    describe_working_registration,
    make_registration,
    register,
)
from RRLMedSAMLib.registration.spatial_transformer import warp_classes
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.training.prepare import PreparedData

#: Metadata key of a pseudo-label file: JSON list, per scan, of the registration that made its label.
REGISTRATION_KEY = "registration"
#: What :func:`load_pseudo_labels` says of a file written without that record.
NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class PseudoLabel:
    """One scan's pseudo label: the class map ``classes`` ``(D, H, W)`` and what made it, ``registration``
    (in the words of ``qc.json``'s ``registration`` entry)."""

    classes: np.ndarray
    registration: str

    @property
    def fell_back(self) -> bool:
        """True when the deformable working-grid registration lost to the affine start."""
        return fell_back(self.registration)


def fell_back(registration: str) -> bool:
    """Whether a pseudo label made by ``registration`` (:attr:`PseudoLabel.registration`) came from a fallback."""
    return not registration.startswith((REGISTRATION_DEFORMABLE, NOT_RECORDED))


class PseudoLabeller:
    """Makes the pseudo label of training scan ``index`` (``labeller(index)`` -> :class:`PseudoLabel`).

    Args:
        run: the run folder (its copy of the atlas image and label).
        config: the run's ``config.json`` (the scan files, in ``data``'s order).
        data: the prepared working-grid data (scans, atlas classes, affines).
        preset: the run's preset.
        device: where the registration runs.
        registration: the trained registration network.
    """

    def __init__(self, run: RunFolder, config: dict, data: PreparedData, preset: Preset, device: torch.device,
                 registration: nn.Module) -> None:
        self.run, self.config, self.data, self.preset, self.device = run, config, data, preset, device
        self.registration = registration
        self.fine = preset.fine_pseudo_labels and preset.refinement_steps > 0 and preset.refinement_grid_size > 0
        self._registration: Registration | None = None
        self._atlas_mask = (data.atlas_classes > 0).astype(np.float32)

    def describe(self) -> str:
        """For the progress line of the stage."""
        return "with the fine registration stage" if self.fine else "on the working grid"

    def __call__(self, index: int) -> PseudoLabel:
        data = self.data
        if not self.fine:
            ddf, checks = checked_registration_on_grid(
                self.registration, data.atlas_image, self._atlas_mask, data.scans[index], self.preset, self.device
            )
            return PseudoLabel(warp_classes(data.atlas_classes, data.num_classes, ddf), describe_working_registration(checks))
        scan = read_scan(self.config["inputs"]["images"][index]["path"], "Image")
        field = register(self._fine_registration(), scan, affine_from_dict(data.affines[index]), data.scans[index])
        ddf = resample_voxel_ddf(field.ddf, field.grid, data.grid)
        return PseudoLabel(warp_classes(data.atlas_classes, data.num_classes, torch.from_numpy(ddf)[None].to(self.device)), field.describe)

    def _fine_registration(self) -> Registration:
        if self._registration is None:
            atlas_image = read_scan(self.run.atlas_image, "Atlas image")
            atlas_label = read_label(self.run.atlas_label, "Atlas label")
            self._registration = make_registration(self.registration, atlas_image, atlas_label, self.data.grid,
                                                   self.preset, self.device)
        return self._registration


def progress_message(scan_name: str, label: PseudoLabel) -> str:
    """The progress line of one pseudo label; a fallback is named."""
    return f"pseudo label of {scan_name}" + (f" ({label.registration})" if label.fell_back else "")


def save_pseudo_labels(path: Path, labels: list[PseudoLabel]) -> None:
    """Writes ``labels`` to ``path`` (safetensors ``classes`` ``(N, D, H, W)``, what made each in the metadata).

    ``path`` is written as it is: callers write to a temporary name and rename.
    """
    registrations = json.dumps([label.registration for label in labels])
    save_file({"classes": np.stack([label.classes for label in labels])}, str(path), metadata={REGISTRATION_KEY: registrations})


def load_pseudo_labels(path: Path) -> list[PseudoLabel]:
    """The labels :func:`save_pseudo_labels` wrote; a file without the record says ``"not recorded"``."""
    with safe_open(str(path), framework="numpy") as handle:
        classes = handle.get_tensor("classes")
        registrations = _registrations(handle.metadata(), len(classes))
    return [PseudoLabel(value, registration) for value, registration in zip(classes, registrations, strict=True)]


def pseudo_label_registrations(path: Path) -> list[str]:
    """What made each label of a pseudo-label file (:attr:`PseudoLabel.registration`), without reading the labels."""
    with safe_open(str(path), framework="numpy") as handle:
        return _registrations(handle.metadata(), handle.get_slice("classes").get_shape()[0])


def _registrations(metadata: dict[str, str] | None, count: int) -> list[str]:
    return json.loads((metadata or {}).get(REGISTRATION_KEY, "[]")) or [NOT_RECORDED] * count


def fallback_summary(registrations: list[str], scan_names: list[str]) -> dict:
    """The model card's ``pseudo_labels`` entry: how many labels were made, and which fell back and to what."""
    return {"scans": len(registrations),
            "fell_back": {name: made for name, made in zip(scan_names, registrations, strict=True) if fell_back(made)}}
