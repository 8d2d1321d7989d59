"""Atlas segmentation <-> labelmap + label table, on real MRML nodes (slicer-core wheel)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_test_helpers import add_volume, oblique_ijk_to_ras, require_slicer, slicer, volume_array

require_slicer()

from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402

HIPPOCAMPUS = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^5928000^Left hippocampus~^^~Anatomic codes - DICOM master list~^^~^^"
)


def make_atlas(scene):
    """Atlas image + segmentation with ids 2, 5 and 17 on an oblique, anisotropic grid."""
    geometry = oblique_ijk_to_ras()
    rng = np.random.default_rng(1)
    image = add_volume(scene, rng.random((6, 7, 8)).astype(np.float32), "atlas", geometry)
    labels = np.zeros((6, 7, 8), np.int16)
    labels[1:3, 1:4, 1:5] = 2
    labels[3:5, 2:6, 3:7] = 17
    labels[4:6, 0:2, 0:2] = 5
    label_node = add_volume(scene, labels, "atlas labelmap", geometry, labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "atlas segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
    scene.RemoveNode(label_node)
    seg = segmentation.GetSegmentation()
    names = {2: "White matter", 5: "Ventricle", 17: "Left hippocampus"}
    for index in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(index)
        segment.SetName(names[segment.GetLabelValue()])
        if segment.GetLabelValue() == 17:
            segment.SetColor(220 / 255, 216 / 255, 20 / 255)
            segment.SetTerminology(HIPPOCAMPUS)
    return image, segmentation, labels


def test_export_atlas_writes_labelmap_on_image_grid_and_table(scene, tmp_path):
    image, segmentation, labels = make_atlas(scene)
    files = sc.export_atlas(image, segmentation, tmp_path)

    written = sitk.ReadImage(str(files.label))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), labels)
    reference = sitk.ReadImage(str(files.image))
    np.testing.assert_allclose(written.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), reference.GetDirection(), atol=1e-6)
    # NRRD/ITK are LPS: x and y of Slicer's RAS origin are negated.
    ras_origin = oblique_ijk_to_ras()[:3, 3]
    np.testing.assert_allclose(reference.GetOrigin(), [-ras_origin[0], -ras_origin[1], ras_origin[2]], atol=1e-6)
    np.testing.assert_allclose(reference.GetSpacing(), (1.0, 1.5, 2.5), atol=1e-6)

    rows = files.table.read_text().splitlines()
    assert rows[0] == "id,name,r,g,b"
    assert rows[3] == "17,Left hippocampus,220,216,20"
    assert [label.id for label in files.labels] == [2, 5, 17]
    back = sc.read_label_table(files.table)
    assert back == list(files.labels)
    assert back[2].terminology == HIPPOCAMPUS


def test_labelmap_file_comes_back_with_same_ids_names_colours_and_terminology(scene, tmp_path):
    image, segmentation, labels = make_atlas(scene)
    files = sc.export_atlas(image, segmentation, tmp_path / "atlas")
    scan = add_volume(scene, np.zeros((6, 7, 8), np.float32), "case 01", oblique_ijk_to_ras(origin=(0, 0, 0)))
    engine_like = np.where(labels == 5, 0, labels).astype(np.uint16)  # id 5 absent in this scan
    out = sitk.GetImageFromArray(engine_like)
    reference = sitk.ReadImage(str(sc.save_volume(scan, tmp_path / "scan.nrrd")))
    out.CopyInformation(reference)
    sitk.WriteImage(out, str(tmp_path / "segmentation.nii.gz"))

    result = sc.labelmap_file_to_segmentation(tmp_path / "segmentation.nii.gz", list(files.labels), scan, "case 01 segmentation")

    assert sc.label_table_from_segmentation(result) == list(files.labels)
    assert result.GetSegmentation().GetNumberOfSegments() == 3
    back = sc.segmentation_to_label_array(result, scan)
    np.testing.assert_array_equal(back, engine_like)
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0
    assert scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() == 0


def test_unknown_ids_get_default_names(scene, tmp_path):
    scan = add_volume(scene, np.zeros((4, 4, 4), np.float32), "scan", np.eye(4))
    values = np.zeros((4, 4, 4), np.uint16)
    values[1:3, 1:3, 1:3] = 9
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "mask.nii.gz"))
    result = sc.labelmap_file_to_segmentation(tmp_path / "mask.nii.gz", [sc.Label(1, "Brain", (250, 0, 0))], scan, "m", include_empty=False)
    names = [result.GetSegmentation().GetNthSegment(i).GetName() for i in range(result.GetSegmentation().GetNumberOfSegments())]
    assert names == ["Label 9"]


def test_segment_ids_fall_back_to_order_when_label_values_clash(scene):
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    for name in ("a", "b"):
        segment_id = segmentation.GetSegmentation().AddEmptySegment("", name, (1.0, 0.0, 0.0))
        segmentation.GetSegmentation().GetSegment(segment_id).SetLabelValue(1)  # separate layers, same value
    assert list(sc.segment_label_ids(segmentation).values()) == [1, 2]


def test_bad_atlas_segmentations_give_clear_errors(scene, tmp_path):
    image = add_volume(scene, np.zeros((4, 4, 4), np.float32), "atlas", np.eye(4))
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(sc.SceneConversionError, match="no segments"):
        sc.export_atlas(image, empty, tmp_path)
    twins = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "twins")
    twins.GetSegmentation().AddEmptySegment("", "Same", (1.0, 0.0, 0.0))
    twins.GetSegmentation().AddEmptySegment("", "Same", (0.0, 1.0, 0.0))
    with pytest.raises(sc.SceneConversionError, match="unique"):
        sc.export_atlas(image, twins, tmp_path)
    blank = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "blank")
    blank.GetSegmentation().AddEmptySegment("", "Nothing painted", (1.0, 0.0, 0.0))
    with pytest.raises(sc.SceneConversionError, match="empty"):
        sc.export_atlas(image, blank, tmp_path)


def test_results_are_placed_beside_their_scan_and_replaced(scene):
    scan = add_volume(scene, np.zeros((2, 2, 2), np.float32), "scan", np.eye(4))
    shnode = scene.GetSubjectHierarchyNode()
    folder = shnode.CreateFolderItem(shnode.GetSceneItemID(), "Patient 7")
    shnode.CreateItem(folder, scan)
    result = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "scan segmentation")
    sc.mark_result(result, sc.ROLE_SEGMENTATION, scan)
    sc.place_beside(result, scan)
    assert shnode.GetItemParent(shnode.GetItemByDataNode(result)) == folder
    extra = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "field")
    sc.place_beside(extra, scan, "scan RRL-MedSAM")
    extras_folder = shnode.GetItemParent(shnode.GetItemByDataNode(extra))
    assert shnode.GetItemName(extras_folder) == "scan RRL-MedSAM"
    assert shnode.GetItemParent(extras_folder) == folder
    assert sc.find_results(scene, sc.ROLE_SEGMENTATION, scan) == [result]
    sc.remove_results(scene, scan, sc.ROLE_SEGMENTATION)
    assert sc.find_results(scene, sc.ROLE_SEGMENTATION) == []


def test_safe_file_stem_is_unique_and_portable():
    taken: set[str] = set()
    assert sc.safe_file_stem("MR brain (T1).nii", taken) == "MR_brain_T1_nii"
    assert sc.safe_file_stem("MR brain (T1).nii", taken) == "MR_brain_T1_nii_2"
    assert sc.safe_file_stem("***", taken) == "volume"


def test_volume_array_round_trip_through_nrrd(scene, tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    node = add_volume(scene, data, "v", oblique_ijk_to_ras())
    path = sc.save_volume(node, tmp_path / "v.nrrd")
    back = sc.read_volume(scene, path, "back")
    np.testing.assert_array_equal(volume_array(back), data)
