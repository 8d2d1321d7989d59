"""The module's parameter node, bound to the ``.ui`` through ``SlicerParameterName`` properties.

Every field below has a widget with the same ``SlicerParameterName`` in ``Resources/UI/RRLMedSAM.ui``
(a test checks both directions). The unlabelled scans are a list, which the wrapper's GUI
connectors cannot bind; they are kept as node references (:data:`SCAN_REFERENCE_ROLE`) of the
same parameter node, so they are saved with the scene too. The runs folder and a custom SAM
checkpoint are settings of the computer, not of the scene: they live in Slicer's settings
(``RunsLogic.RUNS_ROOT_SETTING``, ``CustomWeightsLogic.CUSTOM_CHECKPOINT_SETTING``).
"""

from typing import Annotated

import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from RRLMedSAMSlicerLib.FieldConversion import FIELD_DISPLAY_MODES, FIELD_OVERLAYS
from RRLMedSAMSlicerLib.Logic import PRESETS
from RRLMedSAMSlicerLib.ProcessRunner import DEVICES

SCAN_REFERENCE_ROLE = "RRLMedSAM.scan"


@parameterNodeWrapper
class RRLMedSAMParameterNode:
    """Choices of the module, saved with the scene."""

    atlasVolume: slicer.vtkMRMLScalarVolumeNode
    atlasSegmentation: slicer.vtkMRMLSegmentationNode
    preset: Annotated[str, Choice(list(PRESETS))] = "standard"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    keepTemporaryFiles: bool = False
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    labelSmoothingMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    labelSmoothingAuto: bool = True
    registrationEnsemble: Annotated[int, WithinRange(1, 25)] = 1
    volumeCalibration: bool = False
    fieldDisplay: Annotated[str, Choice(list(FIELD_DISPLAY_MODES))] = "grid"
    fieldOverlay: Annotated[str, Choice(list(FIELD_OVERLAYS))] = "none"
    showPromptMasks: bool = False
    atlasPreview: slicer.vtkMRMLGridTransformNode


class RRLMedSAMParameterLogic(ScriptedLoadableModuleLogic):
    """Gives the module's singleton parameter node, wrapped."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleName = "RRLMedSAM"

    def getParameterNode(self) -> RRLMedSAMParameterNode:
        return RRLMedSAMParameterNode(super().getParameterNode())


def scan_nodes(parameter_node: RRLMedSAMParameterNode) -> list[slicer.vtkMRMLScalarVolumeNode]:
    """The scans checked for training/segmentation."""
    raw = parameter_node.parameterNode
    nodes = [raw.GetNthNodeReference(SCAN_REFERENCE_ROLE, i) for i in range(raw.GetNumberOfNodeReferences(SCAN_REFERENCE_ROLE))]
    return [node for node in nodes if node is not None]


def set_scan_nodes(parameter_node: RRLMedSAMParameterNode, nodes: list[slicer.vtkMRMLScalarVolumeNode]) -> None:
    """Replace the checked scans."""
    raw = parameter_node.parameterNode
    was_modifying = raw.StartModify()
    try:
        raw.RemoveNodeReferenceIDs(SCAN_REFERENCE_ROLE)
        for node in nodes:
            raw.AddNodeReferenceID(SCAN_REFERENCE_ROLE, node.GetID())
    finally:
        raw.EndModify(was_modifying)
