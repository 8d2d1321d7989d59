"""The label table: id, name and colour of every structure, kept from the atlas to the results.

Stored as ``labels.csv`` with the header ``id,name,r,g,b`` (colours 0..255). Names come, in order
of preference, from a table beside the atlas label, from a Slicer ``.seg.nrrd`` header, or from
FreeSurfer names for the usual aseg ids; colours likewise, with a fixed palette as the fallback.
"""

from __future__ import annotations

import colorsys
import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_text_atomic


@dataclass(frozen=True)
class LabelEntry:
    """One structure: integer id in the labelmap, display name and 0..255 RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


#: FreeSurfer aseg names and colours (FreeSurferColorLUT) of the structures in brain label maps.
FREESURFER_ASEG: dict[int, tuple[str, tuple[int, int, int]]] = {
    2: ("Left-Cerebral-White-Matter", (245, 245, 245)),
    3: ("Left-Cerebral-Cortex", (205, 62, 78)),
    4: ("Left-Lateral-Ventricle", (120, 18, 134)),
    5: ("Left-Inf-Lat-Vent", (196, 58, 250)),
    7: ("Left-Cerebellum-White-Matter", (220, 248, 164)),
    8: ("Left-Cerebellum-Cortex", (230, 148, 34)),
    10: ("Left-Thalamus", (0, 118, 14)),
    11: ("Left-Caudate", (122, 186, 220)),
    12: ("Left-Putamen", (236, 13, 176)),
    13: ("Left-Pallidum", (12, 48, 255)),
    14: ("3rd-Ventricle", (204, 182, 142)),
    15: ("4th-Ventricle", (42, 204, 164)),
    16: ("Brain-Stem", (119, 159, 176)),
    17: ("Left-Hippocampus", (220, 216, 20)),
    18: ("Left-Amygdala", (103, 255, 255)),
    24: ("CSF", (60, 60, 60)),
    26: ("Left-Accumbens-area", (255, 165, 0)),
    28: ("Left-VentralDC", (165, 42, 42)),
    30: ("Left-vessel", (160, 32, 240)),
    31: ("Left-choroid-plexus", (0, 200, 200)),
    41: ("Right-Cerebral-White-Matter", (245, 245, 245)),
    42: ("Right-Cerebral-Cortex", (205, 62, 78)),
    43: ("Right-Lateral-Ventricle", (120, 18, 134)),
    44: ("Right-Inf-Lat-Vent", (196, 58, 250)),
    46: ("Right-Cerebellum-White-Matter", (220, 248, 164)),
    47: ("Right-Cerebellum-Cortex", (230, 148, 34)),
    49: ("Right-Thalamus", (0, 118, 14)),
    50: ("Right-Caudate", (122, 186, 220)),
    51: ("Right-Putamen", (236, 13, 176)),
    52: ("Right-Pallidum", (13, 48, 255)),
    53: ("Right-Hippocampus", (220, 216, 20)),
    54: ("Right-Amygdala", (103, 255, 255)),
    58: ("Right-Accumbens-area", (255, 165, 0)),
    60: ("Right-VentralDC", (165, 42, 42)),
    62: ("Right-vessel", (160, 32, 240)),
    63: ("Right-choroid-plexus", (0, 200, 221)),
    72: ("5th-Ventricle", (120, 190, 150)),
    77: ("WM-hypointensities", (200, 70, 255)),
    80: ("non-WM-hypointensities", (164, 108, 226)),
    85: ("Optic-Chiasm", (234, 169, 30)),
}


def palette_color(label_id: int) -> tuple[int, int, int]:
    """A distinct, saturated colour for ``label_id`` (golden-angle hue walk)."""
    hue = (label_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def looks_like_aseg(label_ids: list[int]) -> bool:
    """True for a FreeSurfer-style brain labelmap: several ids, all of them aseg ids."""
    return len(label_ids) >= 4 and all(i in FREESURFER_ASEG for i in label_ids)


def default_entry(label_id: int, aseg: bool = True) -> LabelEntry:
    """Name and colour for an id with no other source: FreeSurfer aseg (if ``aseg``), else ``Label <id>``."""
    if aseg and label_id in FREESURFER_ASEG:
        name, color = FREESURFER_ASEG[label_id]
        return LabelEntry(label_id, name, color)
    return LabelEntry(label_id, f"Label {label_id}", palette_color(label_id))


def read_label_table(path: str | os.PathLike) -> list[LabelEntry]:
    """Read a ``labels.csv`` (header ``id,name,r,g,b``); rows sorted by id."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"Label table {path} is a folder; pass a labels.csv file.")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"Cannot read label table {path}: {error.strerror}.") from None
    except UnicodeDecodeError:
        raise InputError(f"Label table {path} is not UTF-8 text (a binary file?); pass a labels.csv with the "
                         "columns id,name,r,g,b.") from None
    entries = []
    try:
        if "\0" in text:
            raise csv.Error("NUL byte")
        for row in csv.DictReader(io.StringIO(text)):
            entries.append(
                LabelEntry(int(row["id"]), row["name"].strip(), (int(row["r"]), int(row["g"]), int(row["b"])))
            )
    except (KeyError, ValueError, TypeError, AttributeError, csv.Error):
        raise InputError(f"Label table {path} must have the columns id,name,r,g,b with integer ids and colours.") from None
    return sorted(entries, key=lambda e: e.id)


def write_label_table(entries: list[LabelEntry], path: str | os.PathLike) -> None:
    """Write ``labels.csv`` atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "r", "g", "b"])
    for entry in sorted(entries, key=lambda e: e.id):
        writer.writerow([entry.id, entry.name, *entry.color])
    write_text_atomic(path, buffer.getvalue())


def entries_from_seg_nrrd_header(image: sitk.Image) -> dict[int, LabelEntry]:
    """Names and colours stored by Slicer in a ``.seg.nrrd`` header (``SegmentN_Name`` etc.)."""
    keys = set(image.GetMetaDataKeys())
    found: dict[int, LabelEntry] = {}
    index = 0
    while f"Segment{index}_LabelValue" in keys:
        label_id = int(image.GetMetaData(f"Segment{index}_LabelValue"))
        name = image.GetMetaData(f"Segment{index}_Name") if f"Segment{index}_Name" in keys else f"Segment {index}"
        color = palette_color(label_id)
        if f"Segment{index}_Color" in keys:
            try:
                rgb = [float(v) for v in image.GetMetaData(f"Segment{index}_Color").split()[:3]]
                color = tuple(int(round(min(max(v, 0.0), 1.0) * 255)) for v in rgb)  # type: ignore[assignment]
            except ValueError:
                pass
        found[label_id] = LabelEntry(label_id, name, color)  # type: ignore[arg-type]
        index += 1
    return found


def build_label_table(
    label: sitk.Image, label_path: str | os.PathLike, table_path: str | os.PathLike | None = None
) -> list[LabelEntry]:
    """Label table for every non-zero id present in the atlas label.

    ``table_path`` wins; then a ``.seg.nrrd`` header; then :func:`default_entry` (FreeSurfer names
    only when every id is an aseg id, see :func:`looks_like_aseg`).
    """
    ids = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(label)) if v != 0]
    known: dict[int, LabelEntry] = {}
    raw = sitk.ReadImage(str(label_path)) if str(label_path).lower().endswith(".seg.nrrd") else None
    if raw is not None:
        known.update(entries_from_seg_nrrd_header(raw))
    if table_path is not None:
        known.update({e.id: e for e in read_label_table(table_path)})
    aseg = looks_like_aseg(ids)
    return [known.get(i, default_entry(i, aseg)) for i in ids]


def labels_to_classes(label: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    """Map label ids to class indices (0 = background, ``k`` = ``label_ids[k-1]``; unknown ids -> 0)."""
    lookup = np.zeros(int(max(label.max(), max(label_ids))) + 1, dtype=np.int64)
    lookup[np.asarray(label_ids)] = np.arange(1, len(label_ids) + 1)
    return lookup[label.astype(np.int64)]


def classes_to_labels(classes: np.ndarray, label_ids: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`labels_to_classes` (uint16 ids)."""
    lookup = np.concatenate([[0], np.asarray(label_ids)]).astype(np.uint16)
    return lookup[classes]
