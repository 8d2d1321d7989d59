"""Scene -> real engine (``--preset tiny``, separate process) -> scene, on the slicer-core wheel.

The atlas segmentation is exported to a labelmap + label table, the engine trains and segments
through :class:`EngineProcess` exactly as the module does, and every scan gets a segmentation with
the atlas's ids, names, colours and terminology, a grid transform, the warped atlas and QC values.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from slicer_test_helpers import REPO_ROOT, add_volume, require_slicer, slicer, volume_array

require_slicer()

from RRLMedSAMSlicerLib import FieldConversion as fc  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402
from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic  # noqa: E402
from RRLMedSAMSlicerLib.ProcessRunner import EngineProcess, ThreadedStarter  # noqa: E402

pytestmark = pytest.mark.slow
TERMINOLOGY = (
    "Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
    "~SCT^12738006^Brain~^^~Anatomic codes - DICOM master list~^^~^^"
)


def phantom(shift: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two nested blobs (ids 2 and 17) with noise, on a 20 x 24 x 28 grid."""
    z, y, x = np.mgrid[:20, :24, :28]
    centre = np.array([10, 12, 14]) + np.array(shift)
    radius = np.sqrt(((z - centre[0]) * 1.2) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    labels = np.zeros(radius.shape, np.int16)
    labels[radius < 8] = 2
    labels[radius < 4] = 17
    image = 100.0 * (labels == 2) + 220.0 * (labels == 17) + np.random.default_rng(seed).normal(0, 4, radius.shape)
    return image.astype(np.float32), labels


def geometry(origin) -> np.ndarray:
    matrix = np.eye(4)
    c, s = np.cos(0.2), np.sin(0.2)
    matrix[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([1.5, 1.2, 2.0])
    matrix[:3, 3] = origin
    return matrix


def run(command: list[str], timeout_s: float = 900.0):
    events, logs = [], []
    process = EngineProcess(command, on_event=events.append, on_log=logs.append, starter=ThreadedStarter(), cwd=str(REPO_ROOT))
    process.start()
    deadline = time.monotonic() + timeout_s
    while process.outcome is None:
        assert time.monotonic() < deadline, "engine run timed out"
        process.poll()
        time.sleep(0.05)
    assert process.outcome.succeeded, f"{process.outcome.error_message}\n" + "\n".join(logs[-20:])
    return events


def test_atlas_to_engine_to_segmentation_nodes(scene, tmp_path):
    atlas_image, atlas_labels = phantom((0, 0, 0), seed=1)
    atlas = add_volume(scene, atlas_image, "Atlas T1", geometry((5.0, -3.0, 2.0)))
    label_node = add_volume(scene, atlas_labels, "atlas labels", geometry((5.0, -3.0, 2.0)), labelmap=True)
    atlas_segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Atlas segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, atlas_segmentation)
    scene.RemoveNode(label_node)
    segments = atlas_segmentation.GetSegmentation()
    for index in range(segments.GetNumberOfSegments()):
        segment = segments.GetNthSegment(index)
        segment.SetName({2: "Brain", 17: "Core"}[segment.GetLabelValue()])
        if segment.GetLabelValue() == 2:
            segment.SetTerminology(TERMINOLOGY)
    atlas_table = sc.label_table_from_segmentation(atlas_segmentation)

    shnode = scene.GetSubjectHierarchyNode()
    study = shnode.CreateFolderItem(shnode.GetSceneItemID(), "Study")
    scans = []
    for name, shift, seed in (("Case A", (1, -1, 1), 2), ("Case B", (-1, 1, 0), 3)):
        scan = add_volume(scene, phantom(shift, seed)[0], name, geometry((4.0, -2.0, 3.0)))
        shnode.CreateItem(study, scan)
        scans.append(scan)

    logic = RRLMedSAMLogic(scene, command=lambda: [sys.executable, "-m", "RRLMedSAMLib"])
    run_folder = tmp_path / "run"
    events = run(logic.train_command(run_folder, atlas, atlas_segmentation, scans, preset="tiny", device="cpu", seed=0))
    assert events[-1].event == "done" and {e.stage for e in events} >= {"registration", "joint_stage2"}

    command, job = logic.segment_command(run_folder, scans, device="cpu")
    run(command)
    results = logic.load_results(job, run_folder, atlas_volume=atlas, field_display="grid", field_overlay="jacobian")

    assert [r.scan for r in results] == scans
    for result in results:
        segmentation = result.segmentation
        assert segmentation.GetName() == f"{result.scan.GetName()} segmentation"
        assert sc.label_table_from_segmentation(segmentation) == atlas_table  # ids, names, colours, terminology
        engine_file = sitk.ReadImage(str(job.out_dir / sc.safe_file_stem(result.scan.GetName()) / "segmentation.nii.gz"))
        np.testing.assert_array_equal(sc.segmentation_to_label_array(segmentation, result.scan), sitk.GetArrayFromImage(engine_file))
        reference = segmentation.GetSegmentation().GetConversionParameter("Reference image geometry")
        assert reference and shnode.GetItemParent(shnode.GetItemByDataNode(segmentation)) == study

        deformation = result.deformation
        assert isinstance(deformation.GetTransformFromParent(), slicer.vtkOrientedGridTransform)
        assert deformation.GetNodeReference(fc.FIXED_REFERENCE_ROLE) is result.scan
        assert deformation.GetNodeReference(fc.MOVING_REFERENCE_ROLE) is atlas
        assert deformation.GetDisplayNode().GetRegionNode() is result.scan
        assert result.warped_atlas is not None and result.overlay is not None
        assert np.isfinite(volume_array(result.overlay)).all()
        assert "folding_fraction" in result.qc and "label_volumes_ml" in result.qc
        if result.prompt_mask is not None:
            assert not result.prompt_mask.GetDisplayNode().GetVisibility()

    logic.preview_atlas(atlas, results[0].deformation)
    assert atlas.GetParentTransformNode() is results[0].deformation
    logic.preview_atlas(atlas, None)
    assert atlas.GetParentTransformNode() is None

    again, job2 = logic.segment_command(run_folder, scans[:1], device="cpu")
    run(again)
    logic.load_results(job2, run_folder)
    assert len(sc.find_results(scene, sc.ROLE_SEGMENTATION, scans[0])) == 1  # replaced, not duplicated
    logic.remove_temporary_files(run_folder, job2)
    assert not job2.out_dir.exists() and not (run_folder / "inputs").exists()
    assert logic.model_dir(run_folder).is_dir()
