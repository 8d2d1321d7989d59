"""Training augmentation for the segmentation networks (MONAI dictionary transforms).

Spatial: random rotation, scaling and translation applied to image and label together, then an
optional random patch (crop) of the working grid.
Intensity: bias field, gamma, scaling/shift and Gaussian noise (image only). Each call is seeded
from the step's generator, so a resumed run sees the same augmented samples.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
)


def make_augmentation(patch_size: int = 0) -> Compose:
    """Transforms over ``{"image": (1, D, H, W) float, "label": (1, D, H, W) float class map}``.

    ``patch_size`` > 0 crops a random cube of that many voxels per side (clipped to the volume).
    """
    crop = [RandSpatialCropd(keys=("image", "label"), roi_size=(patch_size,) * 3, random_size=False)] if patch_size else []
    return Compose(
        crop
        + [
            RandAffined(
                keys=("image", "label"),
                mode=("bilinear", "nearest"),
                prob=0.8,
                rotate_range=(0.2, 0.2, 0.2),
                scale_range=(0.1, 0.1, 0.1),
                translate_range=(3, 3, 3),
                padding_mode="zeros",
            ),
            RandBiasFieldd(keys="image", prob=0.3, coeff_range=(0.0, 0.2)),
            RandAdjustContrastd(keys="image", prob=0.3, gamma=(0.7, 1.5)),
            RandScaleIntensityd(keys="image", prob=0.3, factors=0.1),
            RandShiftIntensityd(keys="image", prob=0.3, offsets=0.05),
            RandGaussianNoised(keys="image", prob=0.3, std=0.03),
        ]
    )


def augment(
    transform: Compose, image: np.ndarray, classes: np.ndarray, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one ``(D, H, W)`` image and class map; returns ``(1, D, H, W)`` float and long tensors."""
    transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
    sample = transform({"image": image[None].astype(np.float32), "label": classes[None].astype(np.float32)})
    image_t = torch.as_tensor(np.asarray(sample["image"]), dtype=torch.float32)
    label_t = torch.as_tensor(np.asarray(sample["label"])).round().long()
    return image_t, label_t
