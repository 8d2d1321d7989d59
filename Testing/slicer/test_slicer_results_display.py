"""Results already in the scene: the field overlay follows the panel's choice; results stay out of the input selectors."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from slicer_test_helpers import REPO_ROOT, add_volume, require_slicer, volume_array

require_slicer()

from RRLMedSAMSlicerLib import FieldConversion as fc  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402
from RRLMedSAMSlicerLib.Logic import OVERLAY_KIND_ATTRIBUTE, RRLMedSAMLogic  # noqa: E402

SIZE_ZYX = (5, 6, 7)


def scan_with_results(scene, tmp_path, name: str, seed: int):
    """A scan with a deformation (read from an engine-style NRRD), a warped atlas and a prompt mask."""
    rng = np.random.default_rng(seed)
    field = sitk.GetImageFromArray(rng.normal(0.0, 1.0, SIZE_ZYX + (3,)).astype(np.float32), isVector=True)
    field.SetSpacing((1.0, 1.5, 2.0))
    path = tmp_path / f"{name}_deformation.nrrd"
    sitk.WriteImage(field, str(path))
    ijk_to_ras = np.diag([-1.0, -1.5, 2.0, 1.0])  # the same grid in RAS
    scan = add_volume(scene, np.zeros(SIZE_ZYX, np.float32), name, ijk_to_ras)
    deformation = fc.load_deformation(path, scan, f"{name} deformation")
    sc.mark_result(deformation, sc.ROLE_DEFORMATION, scan)
    warped = add_volume(scene, np.ones(SIZE_ZYX, np.float32), f"{name} warped atlas", ijk_to_ras)
    sc.mark_result(warped, sc.ROLE_WARPED_ATLAS, scan)
    prompt = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} prompt mask")
    sc.mark_result(prompt, sc.ROLE_PROMPT_MASK, scan)
    return scan, deformation, {warped.GetID(), prompt.GetID(), deformation.GetID()}


def overlays(scene) -> dict[str, object]:
    return {node.GetAttribute(sc.SCAN_ATTRIBUTE): node for node in sc.find_results(scene, sc.ROLE_FIELD_OVERLAY)}


def test_overlay_change_updates_results_already_in_the_scene(scene, tmp_path):
    logic = RRLMedSAMLogic(scene)
    first, first_field, _ = scan_with_results(scene, tmp_path, "case A", 1)
    second, second_field, _ = scan_with_results(scene, tmp_path, "case B", 2)
    assert logic.update_field_overlays("none") == [] and overlays(scene) == {}

    magnitude = logic.update_field_overlays("magnitude")
    assert len(magnitude) == 2 and set(overlays(scene)) == {first.GetID(), second.GetID()}
    for scan, field in ((first, first_field), (second, second_field)):
        node = overlays(scene)[scan.GetID()]
        assert node.GetAttribute(OVERLAY_KIND_ATTRIBUTE) == "magnitude" and node.GetAttribute(sc.ROLE_ATTRIBUTE) == sc.ROLE_FIELD_OVERLAY
        np.testing.assert_allclose(volume_array(node), fc.displacement_magnitude(field)[0], rtol=1e-6)
    same = logic.update_field_overlays("magnitude")
    assert [n.GetID() for n in same] == [n.GetID() for n in magnitude], "an overlay of the right kind is kept, not recomputed"

    jacobian = logic.update_field_overlays("jacobian")
    assert {n.GetID() for n in jacobian}.isdisjoint(n.GetID() for n in magnitude)
    assert all(scene.GetNodeByID(n.GetID()) is None for n in magnitude), "the magnitude volumes are replaced, not kept beside"
    assert {node.GetAttribute(OVERLAY_KIND_ATTRIBUTE) for node in overlays(scene).values()} == {"jacobian"}
    np.testing.assert_allclose(volume_array(overlays(scene)[first.GetID()]), fc.jacobian_determinant(first_field)[0], rtol=1e-5)

    logic.update_field_overlays("none")
    assert overlays(scene) == {} and len(sc.find_results(scene, sc.ROLE_DEFORMATION)) == 2


def test_result_nodes_are_tagged_for_the_input_selectors_to_hide(scene, tmp_path):
    logic = RRLMedSAMLogic(scene)
    atlas = add_volume(scene, np.zeros(SIZE_ZYX, np.float32), "atlas", np.eye(4))
    atlas_segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "atlas segmentation")
    scan, _, results = scan_with_results(scene, tmp_path, "case A", 3)
    overlay = logic.update_field_overlays("jacobian")[0]
    hidden = set(logic.result_node_ids())
    assert hidden == results | {overlay.GetID()}
    assert hidden.isdisjoint({atlas.GetID(), atlas_segmentation.GetID(), scan.GetID()})


def test_sample_data_loads_as_untagged_inputs(scene):
    logic = RRLMedSAMLogic(scene)
    folder = REPO_ROOT / "Resources" / "SampleData"
    atlas, segmentation, scans = logic.load_sample(folder)
    assert atlas.GetName() == "Sample atlas" and atlas.GetImageData() is not None
    assert [label.name for label in sc.label_table_from_segmentation(segmentation)] == [
        label.name for label in sc.read_label_table(folder / "labels.csv")]
    assert [scan.GetName() for scan in scans] == sorted(p.name.split(".")[0] for p in (folder / "images").glob("*.nii.gz"))
    assert logic.result_node_ids() == [], "inputs stay selectable"
