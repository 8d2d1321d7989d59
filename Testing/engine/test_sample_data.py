"""The embedded sample data: present, readable, small, integer labels, licensed, on matching grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from RRLMedSAMLib.io.label_table import read_label_table
from RRLMedSAMLib.io.volumes import read_label, read_scan, same_grid

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData"
TARGETS = sorted(p.name for p in (SAMPLE / "images").glob("*.nii.gz"))


def test_layout_and_total_size() -> None:
    for name in ("atlas_image.nii.gz", "atlas_label.nii.gz", "labels.csv", "NOTICE", "make_sample_data.py"):
        assert (SAMPLE / name).is_file(), name
    assert 3 <= len(TARGETS) <= 6
    assert TARGETS == sorted(p.name for p in (SAMPLE / "labels").glob("*.nii.gz"))
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 5 * 1024 * 1024


@pytest.mark.parametrize("name", ["atlas"] + TARGETS)
def test_volumes_read_small_and_aligned(name: str) -> None:
    if name == "atlas":
        image_path, label_path = SAMPLE / "atlas_image.nii.gz", SAMPLE / "atlas_label.nii.gz"
    else:
        image_path, label_path = SAMPLE / "images" / name, SAMPLE / "labels" / name
    image = read_scan(image_path)
    label = read_label(label_path)
    assert same_grid(image, label)
    assert np.prod(image.GetSize()) <= 96**3
    assert max(image.GetSpacing()) <= 3.0
    raw = sitk.ReadImage(str(label_path))
    assert raw.GetPixelID() in (sitk.sitkUInt8, sitk.sitkUInt16)
    ids = set(np.unique(sitk.GetArrayFromImage(label)).tolist())
    assert ids - {0} <= {e.id for e in read_label_table(SAMPLE / "labels.csv")}
    assert len(ids) >= 10
    values = sitk.GetArrayFromImage(image)
    assert values[sitk.GetArrayFromImage(label) > 0].mean() > 3 * max(values[sitk.GetArrayFromImage(label) == 0].mean(), 1.0)


def test_label_table_and_notice() -> None:
    table = read_label_table(SAMPLE / "labels.csv")
    assert 8 <= len(table) <= 20
    atlas_ids = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "atlas_label.nii.gz"))))) - {0}
    assert atlas_ids == {e.id for e in table}
    notice = (SAMPLE / "NOTICE").read_text()
    assert "Apache" in notice and "SynthSeg" in notice and "synthetic" in notice.lower()
    for path in SAMPLE.rglob("*.nii.gz"):
        assert path.relative_to(SAMPLE).as_posix() in notice, path
    assert not list(SAMPLE.rglob("image_A*")) and not list(SAMPLE.rglob("image_B*"))
