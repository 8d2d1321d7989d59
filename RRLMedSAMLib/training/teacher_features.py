"""Training's ``teacher_features`` stage: the run's SAM teacher applied to every working-grid volume, cached.

Features are computed once per volume and cached (float16) under the run folder's
``cache/teacher/`` by :class:`~RRLMedSAMLib.sam.feature_cache.TeacherFeatureCache`; which teacher a
run has is :mod:`RRLMedSAMLib.run.teacher`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from RRLMedSAMLib.models.sam_teacher import SamTeacher
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache


def compute_teacher_features(
    teacher: SamTeacher,
    volumes: Mapping[str, np.ndarray],
    cache_folder: str | os.PathLike,
    progress: ProgressReporter,
) -> dict[str, torch.Tensor]:
    """Stage ``teacher_features``: features ``(256, n, S/16, S/16)`` float16 (CPU) of every named volume.

    Cached on disk, so a resumed run or a second stage reads them back instead of re-encoding.
    """
    cache = TeacherFeatureCache(Path(cache_folder))
    progress.start_stage("teacher_features", len(volumes), f"SAM teacher features of {len(volumes)} volume(s)")
    features: dict[str, torch.Tensor] = {}
    for index, (name, volume) in enumerate(volumes.items()):
        features[name] = cache.features(teacher, volume).to(torch.float16)
        progress.update(index + 1, message=f"{name} ({'cached' if cache.hits else 'encoded'})")
        cache.hits = 0
    progress.end_stage(f"{cache.misses} encoded, {len(volumes) - cache.misses} read from the cache")
    return features
