"""In-Slicer self-test ("Reload and Test", or ``Slicer --testing``): the whole flow on the embedded sample.

It needs the Slicer application (module panel, Qt event loop, ``slicer.modules``), so it cannot run
under pytest or the ``slicer-core`` wheel; the pytest suites in ``Testing/slicer`` cover the same
code paths without Qt. On first run it installs the engine into Slicer's Python (network needed).
"""

from __future__ import annotations

import time

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from RRLMedSAMSlicerLib import SceneConversion as sc
from RRLMedSAMSlicerLib.InstallLogic import extension_resource
from RRLMedSAMSlicerLib.ParameterNode import scan_nodes
from RRLMedSAMSlicerLib.RunState import State

RUN_TIMEOUT_S = 1800


class RRLMedSAMTest(ScriptedLoadableModuleTest):
    """Load sample -> Train (engine preset ``tiny``) -> Segment -> check the scene; then Cancel a training.

    Written for the real application only (see the module docstring): it drives the module panel
    exactly as a user would and waits on the Qt event loop while the engine runs in its process.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_whole_flow_on_sample()
        self.setUp()
        self.test_cancel_training_leaves_no_process()

    def _panel(self):
        slicer.util.selectModule("RRLMedSAM")
        panel = slicer.modules.rrlmedsam.widgetRepresentation().self().widget
        panel.enginePresetOverride = "tiny"
        node = panel._parameterNode
        node.runFolder = slicer.util.tempDirectory("RRLMedSAMSelfTest")
        node.device = "cpu"
        node.resumeTraining = False
        return panel

    def _waitWhileBusy(self, panel) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while panel.machine.busy:
            self.assertLess(time.monotonic(), deadline, "the engine run did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.05)

    def test_whole_flow_on_sample(self) -> None:
        self.delayDisplay("Loading the sample data")
        panel = self._panel()
        self.assertTrue(panel.ensureEngine(prompt=False), "the engine could not be installed into Slicer's Python")
        panel.onLoadSample()
        node = panel._parameterNode
        scans = scan_nodes(node)
        self.assertGreater(len(scans), 0)
        expected = [(label.id, label.name, label.color) for label in sc.read_label_table(extension_resource("SampleData/labels.csv"))]

        self.delayDisplay("Training (engine preset 'tiny')")
        panel.onTrainButton()
        self.assertEqual(panel.ui.trainButton.text, "Cancel")
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.DONE, panel.ui.statusLabel.text)

        self.delayDisplay("Segmenting")
        node.fieldOverlay = "magnitude"
        panel.onSegmentButton()
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.DONE, panel.ui.statusLabel.text)
        self.assertEqual(len(panel.results), len(scans))
        for result in panel.results:
            self.assertEqual(result.segmentation.GetName(), f"{result.scan.GetName()} segmentation")
            got = sc.label_table_from_segmentation(result.segmentation)
            present = {label.id for label in got}
            self.assertEqual([(g.id, g.name, g.color) for g in got], [e for e in expected if e[0] in present])
            display = result.deformation.GetDisplayNode()
            self.assertTrue(display.GetVisibility())
            self.assertEqual(display.GetVisualizationMode(), slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID)
            self.assertIsNotNone(result.overlay)

        node.fieldDisplay = "glyph"
        self.assertEqual(panel.results[0].deformation.GetDisplayNode().GetVisualizationMode(),
                         slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH)
        node.atlasPreview = panel.results[0].deformation
        self.assertIs(node.atlasVolume.GetParentTransformNode(), panel.results[0].deformation)
        node.atlasPreview = None
        self.delayDisplay("Whole flow passed")

    def test_cancel_training_leaves_no_process(self) -> None:
        import psutil

        panel = self._panel()
        panel.onLoadSample()
        panel.onTrainButton()
        deadline = time.monotonic() + 300
        while panel.process.last_event is None:
            self.assertLess(time.monotonic(), deadline, "no progress from the engine")
            slicer.app.processEvents()
            time.sleep(0.05)
        launched = psutil.Process(panel.process.popen.pid)
        tree = [launched, *launched.children(recursive=True)]
        panel.onTrainButton()  # the button is "Cancel" now
        self.assertEqual(panel.machine.state, State.CANCELLING)
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.IDLE)
        self.assertTrue(panel._parameterNode.resumeTraining, "after a cancel the next Train resumes")
        time.sleep(0.5)
        for process in tree:
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
            self.assertFalse(alive, f"process {process.pid} survived the cancel")
        self.delayDisplay("Cancel passed")
