"""Content hashes of files: checkpoint verification, and finding a scan the model was trained on."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time when hashing or copying large files (constant memory).
CHUNK_BYTES = 4 * 1024 * 1024


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in :data:`CHUNK_BYTES` chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()
