"""On-disk cache of SAM teacher feature volumes (float16 safetensors).

The teacher is frozen, so its features for a given volume never change: each volume is encoded
once and read back afterwards. A cache entry is keyed by the sha256 of

* the volume's content (:func:`array_sha256` of the array fed to the teacher, or a caller-supplied
  hash such as the sha256 of the volume file's bytes), and
* the teacher's identity (model type, weights sha256, slice size, slice axis, preprocessing
  version; see ``SamTeacher.identity``),

so changing any setting or the weights misses and recomputes. Files are written atomically
(temporary name, then rename); an unreadable or mismatching file counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..errors import InputError
from ..io.atomic import atomic_path

#: Bumped when the on-disk layout changes; part of every key.
CACHE_FORMAT = "rrlmedsam-teacher-features-v1"
_TENSOR_NAME = "features"

log = logging.getLogger(__name__)


class FeatureTeacher(Protocol):
    """What the cache needs from a teacher (``SamTeacher`` satisfies it)."""

    def identity(self) -> dict[str, str]: ...

    def encode_volume(self, volume: torch.Tensor | np.ndarray) -> torch.Tensor: ...


def array_sha256(array: torch.Tensor | np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-ordered bytes."""
    data = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    data = np.ascontiguousarray(data)
    digest = hashlib.sha256(f"{data.dtype.str}|{data.shape}|".encode())
    digest.update(data.tobytes())
    return digest.hexdigest()


class TeacherFeatureCache:
    """Folder of ``<key>.safetensors`` files, each one teacher feature volume ``(256, n, g, g)`` in float16.

    Args:
        folder: cache folder (created on first write).

    Attributes:
        hits, misses: counters since construction (a miss includes rewriting a bad file).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(volume_sha256: str, identity: Mapping[str, str]) -> str:
        """Cache key: sha256 of the format version, the volume hash and the teacher identity."""
        payload = json.dumps({"format": CACHE_FORMAT, "volume_sha256": volume_sha256, **identity}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def path_for(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str, expected: Mapping[str, str] | None = None) -> torch.Tensor | None:
        """Cached features as float32, or ``None`` when absent, unreadable or not matching ``expected`` metadata."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                features = handle.get_tensor(_TENSOR_NAME)
        except Exception as error:  # noqa: BLE001 - a damaged cache file is simply recomputed
            log.warning("ignoring unreadable teacher feature cache file %s: %s", path, error)
            return None
        if expected is not None and any(metadata.get(k) != v for k, v in expected.items()):
            log.warning("ignoring teacher feature cache file %s: its metadata does not match", path)
            return None
        return features.float()

    def store(self, key: str, features: torch.Tensor, metadata: Mapping[str, str]) -> Path:
        """Write ``features`` as float16 with string ``metadata``, atomically."""
        from safetensors.torch import save_file

        path = self.path_for(key)
        tensor = features.detach().to("cpu", torch.float16).contiguous()
        try:
            with atomic_path(path) as temp:
                save_file({_TENSOR_NAME: tensor}, str(temp), metadata={k: str(v) for k, v in metadata.items()})
        except OSError as error:
            raise InputError(f"cannot write the teacher feature cache in {self.folder}: {error}") from error
        return path

    def features(
        self,
        teacher: FeatureTeacher,
        volume: torch.Tensor | np.ndarray,
        *,
        volume_sha256: str | None = None,
    ) -> torch.Tensor:
        """Teacher features ``(256, n_slices, g, g)`` float32 for ``volume``; encoded only on a miss.

        Args:
            teacher: the (frozen) teacher.
            volume: the volume exactly as the teacher should see it (working grid, values in [0, 1]).
            volume_sha256: content hash to key on; default :func:`array_sha256` of ``volume``.

        Values come back rounded to float16 precision, also on the first (computing) call, so a
        training run sees the same numbers whether or not the cache was warm.
        """
        volume_sha256 = volume_sha256 or array_sha256(volume)
        identity = dict(teacher.identity())
        key = self.key(volume_sha256, identity)
        metadata = {"format": CACHE_FORMAT, "volume_sha256": volume_sha256, **identity}
        cached = self.load(key, expected=metadata)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        features = teacher.encode_volume(volume)
        self.store(key, features, metadata)
        return features.to(torch.float16).float()
