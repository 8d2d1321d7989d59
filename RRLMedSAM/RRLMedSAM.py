"""RRL-MedSAM: one-shot 3D segmentation from one annotated atlas (module entry point).

The work is done by the headless engine (``RRLMedSAMLib``) in a separate process; the module's own
code lives in ``RRLMedSAMSlicerLib/`` (one concern per file).
"""

from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget

from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic  # noqa: F401  (for scripting: RRLMedSAM.RRLMedSAMLogic)
from RRLMedSAMSlicerLib.SelfTest import RRLMedSAMTest  # noqa: F401  (found by name by "Reload and Test")

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # Slicer < 5.4

    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text


class RRLMedSAM(ScriptedLoadableModule):
    """Module description shown by Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RRL-MedSAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["RRL-MedSAM for 3D Slicer contributors"]
        self.parent.helpText = _(
            "Annotate one scan (the atlas), choose unlabelled scans of the same kind, press <b>Train</b>, then "
            "<b>Segment</b>. Each scan gets a segmentation named and coloured like the atlas, the atlas-to-scan "
            "deformation (grid, glyphs or contours), the warped atlas and the prompt mask. See the "
            '<a href="https://github.com/rrl-medsam/SlicerRRLMedSAM/blob/main/docs/user_guide.md">user guide</a>.'
        )
        self.parent.acknowledgementText = _(
            "Built on the RRL-MedSAM method (SAM-guided one-shot registration and segmentation), Segment Anything "
            "(Meta AI, Apache-2.0), MONAI, SimpleITK and the 3D Slicer PyTorch extension."
        )


class RRLMedSAMWidget(ScriptedLoadableModuleWidget):
    """Thin wrapper: the panel is :class:`RRLMedSAMSlicerLib.Widget.RRLMedSAMMainWidget`."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.widget = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        from RRLMedSAMSlicerLib.Widget import RRLMedSAMMainWidget

        self.widget = RRLMedSAMMainWidget(self.resourcePath("UI/RRLMedSAM.ui"))
        self.layout.addWidget(self.widget.uiWidget)

    def enter(self) -> None:
        if self.widget is not None:
            self.widget.enter()

    def exit(self) -> None:
        if self.widget is not None:
            self.widget.exit()

    def cleanup(self) -> None:
        if self.widget is not None:
            self.widget.cleanup()
