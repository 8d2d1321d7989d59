"""make-brain-dataset, the painting code, the dataset reader and the prostate builder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (
    OBLIQUE_DIRECTION,
    OBLIQUE_ORIGIN,
    OBLIQUE_SPACING,
    SHARED_DATA,
    assert_clean_error,
    run_cli,
    write_volume,
)

from RRLMedSAMLib.data.brain_dataset import make_brain_dataset
from RRLMedSAMLib.data.dataset import get_case, list_cases, read_dataset_table
from RRLMedSAMLib.data.prostate_dataset import gland_label, make_prostate_dataset
from RRLMedSAMLib.data.synth_brain import brain_only, measure_intensity_stats, subject_seed
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.label_table import read_label_table


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_brain_only_removes_extra_cerebral_ids() -> None:
    labels = np.array([0, 2, 24, 41, 99, 100, 165, 530, 17])
    assert brain_only(labels).tolist() == [0, 2, 0, 41, 99, 0, 0, 0, 17]


def test_stats_fallback_for_ids_missing_from_reference() -> None:
    seg = np.array([[[2, 2, 3, 3, 77, 77, 4, 4]]])
    vol = np.array([[[0.4, 0.42, 0.25, 0.27, 0.3, 0.32, 0.1, 0.08]]])
    stats = measure_intensity_stats(vol, seg)
    assert stats[2][0] == pytest.approx(0.41)
    assert stats[25] == stats[77]  # lesion -> WM hypointensities
    assert stats[41] == stats[2] and stats[42] == stats[3]  # mirror structure first
    assert stats[16][0] == pytest.approx(0.41)  # white-matter class
    assert stats[14][0] == pytest.approx(0.09)  # CSF class
    assert stats[18][0] == pytest.approx(0.26)  # grey-matter class


def test_subject_seed_is_stable_and_distinct() -> None:
    assert subject_seed("training_seg_01", 0) == subject_seed("training_seg_01", 0)
    assert subject_seed("training_seg_01", 0) != subject_seed("training_seg_01", 1)
    assert subject_seed("training_seg_01", 0) != subject_seed("training_seg_02", 0)
    assert subject_seed("a", 3) == 5833693823745281707  # independent of PYTHONHASHSEED


def test_dataset_geometry_background_and_files(oblique_labelmap_dir: Path, reference_npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    names = make_brain_dataset(oblique_labelmap_dir, reference_npz, out, seed=7, log=False)
    assert names == ["subj_a", "subj_b"]
    for name in names:
        image = sitk.ReadImage(str(out / "images" / f"{name}.nii.gz"))
        label = sitk.ReadImage(str(out / "labels" / f"{name}.nii.gz"))
        for volume in (image, label):
            assert volume.GetSize() == (30, 32, 28)
            assert np.allclose(volume.GetSpacing(), OBLIQUE_SPACING)
            assert np.allclose(volume.GetOrigin(), OBLIQUE_ORIGIN)
            assert np.allclose(volume.GetDirection(), OBLIQUE_DIRECTION)
        assert label.GetPixelID() == sitk.sitkUInt16
        ids = set(np.unique(sitk.GetArrayFromImage(label)).tolist())
        assert ids == {0, 2, 3, 4, 17, 25, 41, 42, 43}  # 24 and 165 mapped to background
        img, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
        far_background = (sitk.GetArrayFromImage(sitk.BinaryDilate(label > 0, [2, 2, 2])) == 0)
        assert np.all(img[far_background] == 0)
        white = img[np.isin(lab, (2, 41))].mean()
        grey = img[np.isin(lab, (3, 42))].mean()
        csf = img[np.isin(lab, (4, 43))].mean()
        assert white > grey > csf > 0
    table = read_label_table(out / "labels.csv")
    assert [e.id for e in table] == [2, 3, 4, 17, 25, 41, 42, 43]
    assert table[0].name == "Left-Cerebral-White-Matter"
    readme = (out / "README.md").read_text()
    assert "synthetic" in readme.lower() and "real" in readme.lower() and "Apache-2.0" in readme and "SynthSeg" in readme


def test_painting_is_deterministic_per_seed(oblique_labelmap_dir: Path, reference_npz: Path, tmp_path: Path) -> None:
    first = make_brain_dataset(oblique_labelmap_dir, reference_npz, tmp_path / "a", seed=3, subjects=1, log=False)
    make_brain_dataset(oblique_labelmap_dir, reference_npz, tmp_path / "b", seed=3, subjects=1, log=False)
    make_brain_dataset(oblique_labelmap_dir, reference_npz, tmp_path / "c", seed=4, subjects=1, log=False)
    assert first == ["subj_a"]
    a, b, c = (_array(tmp_path / d / "images" / "subj_a.nii.gz") for d in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not (tmp_path / "a" / "images" / "subj_b.nii.gz").exists()


def test_bad_inputs_raise_input_error(oblique_labelmap_dir: Path, reference_npz: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        make_brain_dataset(tmp_path / "nowhere", reference_npz, tmp_path / "out")
    with pytest.raises(InputError, match="Reference scan"):
        make_brain_dataset(oblique_labelmap_dir, tmp_path / "missing.npz", tmp_path / "out")
    np.savez(tmp_path / "bad.npz", vol=np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="keys"):
        make_brain_dataset(oblique_labelmap_dir, tmp_path / "bad.npz", tmp_path / "out")
    fractional = tmp_path / "frac"
    write_volume(fractional / "x.nii.gz", np.full((4, 4, 4), 2.5, dtype=np.float32))
    with pytest.raises(InputError, match="non-integer"):
        make_brain_dataset(fractional, reference_npz, tmp_path / "out")
    skull = tmp_path / "skull"
    write_volume(skull / "x.nii.gz", np.full((4, 4, 4), 165, dtype=np.float32))
    with pytest.raises(InputError, match="no brain structure"):
        make_brain_dataset(skull, reference_npz, tmp_path / "out")


def test_cli_bad_input_is_one_line(reference_npz: Path, tmp_path: Path) -> None:
    result = run_cli("make-brain-dataset", "--labelmaps", str(tmp_path / "nowhere"), "--reference-scan",
                     str(reference_npz), "--out", str(tmp_path / "out"))
    assert_clean_error(result, "label map folder not found")


@pytest.mark.skipif(not (SHARED_DATA / "brain_labelmaps").is_dir(), reason="shared brain label maps not available")
def test_one_real_labelmap(tmp_path: Path) -> None:
    start = time.monotonic()
    names = make_brain_dataset(SHARED_DATA / "brain_labelmaps", SHARED_DATA / "brain_t1" / "vxm_test_scan.npz",
                               tmp_path / "ds", subjects=1, log=False)
    assert names == ["training_seg_01"]
    assert time.monotonic() - start < 15
    source = sitk.ReadImage(str(SHARED_DATA / "brain_labelmaps" / "training_seg_01.nii.gz"))
    image = sitk.ReadImage(str(tmp_path / "ds" / "images" / "training_seg_01.nii.gz"))
    label = sitk.ReadImage(str(tmp_path / "ds" / "labels" / "training_seg_01.nii.gz"))
    for volume in (image, label):
        assert volume.GetSize() == source.GetSize() and volume.GetOrigin() == source.GetOrigin()
        assert volume.GetDirection() == source.GetDirection()
    ids = np.unique(sitk.GetArrayFromImage(label))
    assert ids.max() < 100 and 24 not in ids and len(ids) > 30
    assert [c.name for c in list_cases(tmp_path / "ds")] == ["training_seg_01"]


def test_dataset_reader(tmp_path: Path) -> None:
    cube = np.zeros((4, 4, 4), dtype=np.uint8)
    for name in ("b", "a"):
        write_volume(tmp_path / "ds" / "images" / f"{name}.nii.gz", cube)
    write_volume(tmp_path / "ds" / "labels" / "a.nii.gz", cube)
    (tmp_path / "ds" / "labels.csv").write_text("id,name,r,g,b\n1,Thing,1,2,3\n")
    with pytest.raises(InputError, match="without a label"):
        list_cases(tmp_path / "ds")
    cases = list_cases(tmp_path / "ds", require_labels=False)
    assert [(c.name, c.label is not None) for c in cases] == [("a", True), ("b", False)]
    assert get_case(tmp_path / "ds", "a").image.name == "a.nii.gz"
    assert read_dataset_table(tmp_path / "ds")[0].name == "Thing"
    with pytest.raises(InputError, match="available"):
        get_case(tmp_path / "ds", "zz")
    with pytest.raises(InputError, match="No images"):
        list_cases(tmp_path / "empty")


def test_prostate_builder_takes_gland_channel(tmp_path: Path) -> None:
    source = tmp_path / "prostate"
    image = np.random.default_rng(0).integers(0, 255, (6, 8, 7), dtype=np.uint8)
    gland = np.zeros((6, 8, 7))
    gland[2:4, 3:6, 2:5] = 1
    landmark = np.zeros_like(gland)
    landmark[0, 0, 0] = 1
    (source / "images").mkdir(parents=True)
    (source / "labels").mkdir()
    for name in ("case1", "case2"):
        sitk.WriteImage(make_3d(image), str(source / "images" / f"{name}.nii.gz"))
    one_hot = sitk.JoinSeries([make_3d(gland), make_3d(landmark), make_3d(landmark)])
    sitk.WriteImage(one_hot, str(source / "labels" / "case1.nii.gz"))  # 4-D (x, y, z, 3) on the image grid
    sitk.WriteImage(make_3d(gland), str(source / "labels" / "case2.nii.gz"))  # 3-D gland-only
    names = make_prostate_dataset(source, tmp_path / "out")
    assert names == ["case1", "case2"]
    for name in names:
        label = sitk.ReadImage(str(tmp_path / "out" / "labels" / f"{name}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(label), gland.astype(np.uint8))
        assert np.allclose(label.GetSpacing(), OBLIQUE_SPACING)
    assert np.array_equal(_array(tmp_path / "out" / "images" / "case1.nii.gz"), image)
    assert [(e.id, e.name) for e in read_label_table(tmp_path / "out" / "labels.csv")] == [(1, "Prostate")]
    assert "Apache-2.0" in (tmp_path / "out" / "README.md").read_text()


def make_3d(array: np.ndarray) -> sitk.Image:
    """A 3-D volume with the oblique spacing and origin (axis-aligned, as ``JoinSeries`` needs)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(OBLIQUE_SPACING)
    image.SetOrigin(OBLIQUE_ORIGIN)
    return image


@pytest.mark.skipif(not (SHARED_DATA / "prostate_mr").is_dir(), reason="shared prostate data not available")
def test_prostate_builder_on_real_data(tmp_path: Path) -> None:
    names = make_prostate_dataset(SHARED_DATA / "prostate_mr", tmp_path / "prostate")
    assert len(names) == 18
    cases = list_cases(tmp_path / "prostate")
    label = gland_label(SHARED_DATA / "prostate_mr" / "labels" / "case000000.nii.gz")
    assert np.array_equal(sitk.GetArrayFromImage(label), _array(cases[0].label))
    assert set(np.unique(_array(cases[2].label)).tolist()) == {0, 1}
