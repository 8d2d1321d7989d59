"""Registration network: a shared encoder applied to atlas and scan, and a registration decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from RRLMedSAMLib.models.encoder3d import Encoder3D
from RRLMedSAMLib.registration.decoder import RegistrationDecoder


class RegistrationNetwork(nn.Module):
    """``(moving, fixed)`` volumes ``(B, 1, D, H, W)`` in [0, 1] -> ``(ddf, flow)``.

    ``ddf`` is in working-grid voxels, channels ``(dz, dy, dx)``; warping ``moving`` by it
    matches ``fixed``. The encoder may be shared with a segmentation decoder (joint
    registration-segmentation): pass it as ``encoder``.
    """

    def __init__(
        self, encoder: Encoder3D | None = None, channels: Sequence[int] | None = None, diffeomorphic: bool = False
    ) -> None:
        super().__init__()
        self.encoder = encoder if encoder is not None else Encoder3D(1, channels) if channels else Encoder3D(1)
        self.decoder = RegistrationDecoder(self.encoder.channels, diffeomorphic=diffeomorphic)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(torch.cat([moving, fixed], dim=0))
        batch = moving.shape[0]
        return self.decoder([f[:batch] for f in features], [f[batch:] for f in features])
