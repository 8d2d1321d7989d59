"""MIND-SSC: the modality independent neighbourhood descriptor with a self-similarity context.

Heinrich et al., "Towards realtime multimodal fusion for image-guided interventions using
self-similarity context" (MICCAI 2013). For every voxel ``x`` and each of the 12 pairs
``(a, b)`` of its six face neighbours (at ``dilation`` voxels) that lie ``sqrt(2) * dilation``
apart, the patch distance

    D_ab(x) = box_r * (I(x + a) - I(x + b))^2        (mean over a (2r+1)^3 box)

is turned into a descriptor channel ``exp(-D_ab(x) / V(x))``, where the local variance estimate
``V(x)`` is the mean of the 12 distances (after subtracting their minimum), clamped to
``[1e-3, 1e3]`` times its mean over the volume. Dividing by ``V`` makes the descriptor
invariant to a linear change of intensity and close to invariant to a monotone one, which is
what lets an atlas and a scan of different contrast (another scanner, bias field) be compared
by a plain sum of squared differences.

Shapes: image ``(B, 1, D, H, W)`` float -> descriptor ``(B, 12, D, H, W)`` float in ``(0, 1]``.
Borders are handled by replicating the edge voxels.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

#: Face neighbours of a voxel, ``(dz, dy, dx)`` in units of the dilation.
SIX_NEIGHBOURHOOD = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


def neighbour_pairs() -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """The 12 pairs of face neighbours whose squared distance is 2 (the edges of the octahedron)."""
    pairs = []
    for a, b in itertools.combinations(SIX_NEIGHBOURHOOD, 2):
        if sum((p - q) ** 2 for p, q in zip(a, b)) == 2:
            pairs.append((a, b))
    return pairs


def _shifted(padded: torch.Tensor, offset: tuple[int, int, int], pad: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``image(x + offset)`` for every voxel ``x``, read from the replicate-padded image."""
    dz, dy, dx = (pad + o for o in offset)
    depth, height, width = shape
    return padded[:, :, dz:dz + depth, dy:dy + height, dx:dx + width]


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2) -> torch.Tensor:
    """The MIND-SSC descriptor ``(B, 12, D, H, W)`` of ``image`` ``(B, 1, D, H, W)``.

    Args:
        radius: half side (voxels) of the box filter that sums the patch distances.
        dilation: distance (voxels) from a voxel to the neighbours it is compared through.
    """
    if image.dim() != 5 or image.shape[1] != 1:
        raise ValueError(f"MIND-SSC needs a (B, 1, D, H, W) image, not {tuple(image.shape)}")
    image = image.float()
    shape = tuple(image.shape[2:])
    padded = F.pad(image, (dilation,) * 6, mode="replicate")
    distances = torch.cat(
        [(_shifted(padded, a, dilation, shape) - _shifted(padded, b, dilation, shape)) ** 2 for a, b in neighbour_pairs()],
        dim=1,
    )
    if radius > 0:
        side = 2 * radius + 1
        distances = F.avg_pool3d(F.pad(distances, (radius,) * 6, mode="replicate"), side, stride=1)
    distances = distances - distances.min(dim=1, keepdim=True).values
    variance = distances.mean(dim=1, keepdim=True)
    mean_variance = variance.mean()
    if float(mean_variance) <= 0:  # a constant image: every descriptor channel is 1
        return torch.ones_like(distances)
    variance = variance.clamp(mean_variance * 1e-3, mean_variance * 1e3)
    return torch.exp(-distances / variance)
