"""Volume and label I/O: validation, Slicer .seg.nrrd names, lattice-aligned labels, atomic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import atomic_directory
from RRLMedSAMLib.io.label_table import build_label_table, read_label_table, write_label_table
from RRLMedSAMLib.io.volumes import fit_label_to_image, read_label, volume_stem


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.9, 2.0))
    image.SetOrigin((10.0, -4.0, 3.0))
    image.SetDirection(sitk.VersorTransform((0, 0.3, 1), 0.4).GetMatrix())
    return image


def test_float_labels_holding_whole_numbers_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(_image(np.tile(np.array([[[0, 2], [41, 2]]], np.float32), (4, 2, 2))), str(path))
    label = read_label(path)
    assert label.GetPixelID() == sitk.sitkUInt16
    assert sorted(np.unique(sitk.GetArrayFromImage(label))) == [0, 2, 41]


def test_negative_label_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(_image(np.full((4, 4, 4), -1, np.int16)), str(path))
    with pytest.raises(InputError, match="outside 0..65535"):
        read_label(path)


def test_cropped_label_on_the_image_lattice_is_padded_exactly() -> None:
    full = np.zeros((10, 12, 14), np.uint16)
    full[3:6, 4:8, 5:9] = 7
    image = _image(full.astype(np.float32))
    cropped = sitk.RegionOfInterest(_image(full), [5, 4, 3], [4, 4, 3])
    fitted = fit_label_to_image(cropped, image, "cropped.seg.nrrd")
    assert np.array_equal(sitk.GetArrayFromImage(fitted), full)


def test_seg_nrrd_segment_names_and_colours(tmp_path: Path) -> None:
    label = _image(np.tile(np.array([[[0, 3], [5, 3]]], np.uint8), (4, 2, 2)))
    for index, (value, name, color) in enumerate(((3, "liver", "1 0 0"), (5, "spleen", "0 0.5 1"))):
        label.SetMetaData(f"Segment{index}_LabelValue", str(value))
        label.SetMetaData(f"Segment{index}_Name", name)
        label.SetMetaData(f"Segment{index}_Color", color)
    path = tmp_path / "atlas.seg.nrrd"
    sitk.WriteImage(label, str(path))
    table = build_label_table(read_label(path), path)
    assert [(e.id, e.name, e.color) for e in table] == [(3, "liver", (255, 0, 0)), (5, "spleen", (0, 128, 255))]
    write_label_table(table, tmp_path / "labels.csv")
    assert read_label_table(tmp_path / "labels.csv") == table


def test_generic_ids_do_not_get_brain_names() -> None:
    table = build_label_table(_image(np.tile(np.array([[[0, 1], [2, 3]]], np.uint8), (4, 2, 2))), "x.nii.gz")
    assert [e.name for e in table] == ["Label 1", "Label 2", "Label 3"]


def test_volume_stem_strips_image_extensions() -> None:
    assert volume_stem("/a/case01.nii.gz") == "case01"
    assert volume_stem("b/atlas.seg.nrrd") == "atlas"
    assert volume_stem("scan.mha") == "scan"


def test_failed_atomic_directory_keeps_the_previous_result(tmp_path: Path) -> None:
    target = tmp_path / "case"
    with atomic_directory(target) as folder:
        (folder / "segmentation.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as folder:
            (folder / "segmentation.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (target / "segmentation.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["case"]
