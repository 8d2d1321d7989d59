"""Pseudo labels: the atlas label warped onto one training scan, on the working grid.

Two ways, chosen by the preset's ``fine_pseudo_labels``:

* off - the registration network refined by instance optimisation on the working grid
  (:func:`RRLMedSAMLib.registration.register.register_on_grid`), the same arrays the networks train on;
* on - the whole registration ``segment`` runs (:func:`RRLMedSAMLib.registration.register.register`),
  the fine registration stage included, on the scan file itself from its training pre-alignment;
  the resulting field is sampled back onto the working grid. Each scan then costs the fine stage's
  budget (``registration_budget_s_cpu`` / ``_gpu``) once more.

Either way a pseudo label is a class map ``(D, H, W)`` (0 = background, ``k`` = the ``k``-th atlas
label id) on the working grid.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from RRLMedSAMLib.geometry.affine import affine_from_dict
from RRLMedSAMLib.geometry.deformation import resample_voxel_ddf
from RRLMedSAMLib.io.volumes import read_label, read_scan
from RRLMedSAMLib.registration.register import Registration, make_registration, register, register_on_grid
from RRLMedSAMLib.registration.spatial_transformer import warp_classes
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.training.prepare import PreparedData


class PseudoLabeller:
    """Makes the pseudo label of training scan ``index`` (``labeller(index)``).

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

    def describe(self) -> str:
        """For the progress line of the stage."""
        return "with the fine registration stage" if self.fine else "on the working grid"

    def __call__(self, index: int) -> np.ndarray:
        data = self.data
        if not self.fine:
            ddf = register_on_grid(self.registration, data.atlas_image, data.scans[index], self.preset, self.device)
            return warp_classes(data.atlas_classes, data.num_classes, ddf)
        scan = read_scan(self.config["inputs"]["images"][index]["path"], "Image")
        field = register(self._fine_registration(), scan, affine_from_dict(data.affines[index]), data.scans[index])
        ddf = resample_voxel_ddf(field.ddf, field.grid, data.grid)
        return warp_classes(data.atlas_classes, data.num_classes, torch.from_numpy(ddf)[None].to(self.device))

    def _fine_registration(self) -> Registration:
        if self._registration is None:
            atlas_image = read_scan(self.run.atlas_image, "Atlas image")
            atlas_label = read_label(self.run.atlas_label, "Atlas label")
            self._registration = make_registration(self.registration, atlas_image, atlas_label, self.data.grid,
                                                   self.preset, self.device)
        return self._registration
