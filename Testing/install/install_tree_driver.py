"""Run inside a fresh environment (``python -I``): the installed module installs the engine, then trains and segments.

Arguments: the install tree's scripted-modules folder, a writable work folder. Only the install
tree is put on ``sys.path``; the engine comes from what InstallLogic installs. Prints one JSON
line with what the test checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

MODULES, WORK = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(MODULES))

import numpy as np  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from RRLMedSAMSlicerLib import InstallLogic as il  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402
from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic  # noqa: E402
from RRLMedSAMSlicerLib.ProcessRunner import EngineProcess, ThreadedStarter  # noqa: E402


def pip_install(arguments: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments], check=True)


def add_volume(scene, array: np.ndarray, name: str, labelmap: bool = False):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    image.SetDimensions(array.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True,
                                         array_type=vtk.VTK_SHORT if labelmap else vtk.VTK_FLOAT)
    image.GetPointData().SetScalars(scalars)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.diag([1.4, 1.2, 1.6, 1.0])))
    return node


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


def run_engine(command: list[str]) -> None:
    logs: list[str] = []
    process = EngineProcess(command, on_event=lambda event: None, on_log=logs.append, starter=ThreadedStarter(), cwd=str(WORK))
    process.start()
    deadline = time.monotonic() + 900
    while process.outcome is None:
        if time.monotonic() > deadline:
            raise TimeoutError("engine run timed out")
        process.poll()
        time.sleep(0.05)
    if not process.outcome.succeeded:
        raise RuntimeError(f"{process.outcome.error_message}\n" + "\n".join(logs[-20:]))


def main() -> None:
    install = il.InstallLogic(install_torch=lambda: True, pip_install=pip_install)
    missing_before = install.missing()
    install.ensure(prompt=False)
    engine_file = subprocess.run([sys.executable, "-c", "import RRLMedSAMLib; print(RRLMedSAMLib.__file__)"],
                                 capture_output=True, text=True, check=True, cwd=WORK).stdout.strip()

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    atlas_image, atlas_labels = phantom((0, 0, 0), seed=1)
    atlas = add_volume(scene, atlas_image, "Atlas")
    label_node = add_volume(scene, atlas_labels, "atlas labels", labelmap=True)
    atlas_segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Atlas segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, atlas_segmentation)
    scene.RemoveNode(label_node)
    scans = [add_volume(scene, phantom(shift, seed)[0], name) for name, shift, seed in (("Case A", (1, -1, 1), 2), ("Case B", (-1, 1, 0), 3))]

    logic = RRLMedSAMLogic(scene, command=lambda: [sys.executable, "-m", "RRLMedSAMLib"])
    run_folder = WORK / "run"
    run_engine(logic.train_command(run_folder, atlas, atlas_segmentation, scans, preset="tiny", device="cpu", seed=0))
    command, job = logic.segment_command(run_folder, scans, device="cpu")
    run_engine(command)
    results = logic.load_results(job, run_folder, atlas_volume=atlas, field_display="grid", field_overlay="jacobian")
    print(json.dumps({
        "missing_before": missing_before,
        "wheelhouse": str(install.wheelhouse),
        "ready_after": install.ready(),
        "module_file": sc.__file__,
        "engine_file": engine_file,
        "segmentations": [r.segmentation.GetName() for r in results],
        "segment_counts": [r.segmentation.GetSegmentation().GetNumberOfSegments() for r in results],
        "deformations": [r.deformation.GetTransformFromParent().GetClassName() for r in results],
    }))


if __name__ == "__main__":
    main()
