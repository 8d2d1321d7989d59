"""Check a volume file's stored bytes before ITK reads it.

ITK's NIfTI reader zero-fills a truncated file, turns NaN and +-inf voxels into 0 and replaces a
zero ``pixdim`` by 1 mm; NRRD and MHA keep NaN and refuse truncation. So every gzip file is read
through once (CRC and length checked by :mod:`gzip`), and NIfTI files are opened with nibabel,
which reads the header and voxels as stored: the data must be as long as the header says, the
spacing positive, the voxels finite.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from RRLMedSAMLib.errors import InputError

CHUNK_BYTES = 4 * 1024 * 1024


def _gzip_length(path: Path, what: str) -> int:
    """Decompressed length of a gzip file, reading it all (the CRC and size trailer are verified)."""
    total = 0
    try:
        with gzip.open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                total += len(chunk)
    except gzip.BadGzipFile as error:
        if "not a gzipped file" in str(error).lower():
            raise InputError(f"Cannot read {what} {path}: not a readable NIfTI/NRRD/MHA image (a .gz name, but "
                             "not a gzip file).") from None
        raise InputError(f"{what} {path} is a damaged gzip file: {error}. Copy or export it again.") from None
    except (EOFError, zlib.error, OSError) as error:
        reason = "it ends early (truncated)" if isinstance(error, EOFError) else f"{error}"
        raise InputError(f"{what} {path} is a damaged gzip file: {reason}. Copy or export it again.") from None
    return total


def check_stored_data(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`InputError` for a damaged compressed file, and for a NIfTI file with truncated data,
    zero or negative spacing, or NaN / infinite voxels as stored."""
    path = Path(path)
    name = path.name.lower()
    stored_length = _gzip_length(path, what) if name.endswith(".gz") else None
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path, what, stored_length)
    elif name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        _check_header_spacing(path, what)


#: Header fields that hold the voxel spacing in MetaImage and NRRD text headers.
SPACING_FIELDS = ("elementspacing", "elementsize", "spacings")


def _check_header_spacing(path: Path, what: str) -> None:
    """Refuse zero or negative spacing in a MetaImage / NRRD text header (ITK folds a negative one into the direction)."""
    with open(path, "rb") as handle:
        head = handle.read(65536)
    for raw in head.split(b"\n"):
        line = raw.decode("latin-1").strip()
        if not line or line.lower().startswith("elementdatafile"):
            break
        key, sep, value = line.replace(":=", "=").replace(":", "=", 1).partition("=")
        if not sep or key.strip().lower() not in SPACING_FIELDS:
            continue
        numbers = []
        for token in value.split():
            try:
                numbers.append(float(token))
            except ValueError:
                continue
        if any(v <= 0 for v in numbers if np.isfinite(v)):
            raise InputError(f"{what} {path} has zero or negative voxel spacing in its header ({key.strip()} ="
                             f"{value}); fix the header (e.g. re-export the scan).")


def _raw_header(path: Path, checked: "object") -> "object":
    """The NIfTI header exactly as stored (``nib.load`` silently turns a zero ``pixdim`` into 1)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        return type(checked).from_fileobj(handle, check=False)


def _check_nifti(path: Path, what: str, stored_length: int | None) -> None:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.load(str(path))
    except (ImageFileError, OSError, ValueError, EOFError) as error:
        raise InputError(f"Cannot read {what} {path}: not a readable NIfTI image ({error}).") from None
    header = _raw_header(path, image.header)
    shape = tuple(int(n) for n in header.get_data_shape())
    dtype = header.get_data_dtype()
    expected = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    length = stored_length if stored_length is not None else path.stat().st_size
    if length < expected:
        raise InputError(f"{what} {path} is truncated: its header announces {expected} bytes of data and header, "
                         f"the file holds {length}. Copy or export it again.")
    spatial = [float(v) for v in header["pixdim"][1:1 + min(3, len(shape))]]
    if any(not np.isfinite(v) or v <= 0 for v in spatial):
        raise InputError(f"{what} {path} has zero or negative voxel spacing in its header (pixdim "
                         f"{', '.join(f'{v:g}' for v in spatial)}); fix the header (e.g. re-export the scan).")
    if dtype.kind in "fc":
        try:
            values = np.asanyarray(image.dataobj)
        except (OSError, ValueError, EOFError) as error:
            raise InputError(f"{what} {path} is damaged: {error}. Copy or export it again.") from None
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise InputError(f"{what} {path} contains {bad} NaN or infinite voxels (as stored in the file); "
                             "fix or mask them first.")
