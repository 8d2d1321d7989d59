"""In-Slicer self-test ("Reload and Test", or ``Slicer --testing``): the whole flow on the embedded sample.

It needs the Slicer application (module panel, Qt event loop, ``slicer.modules``), so it cannot run
under pytest or the ``slicer-core`` wheel; the pytest suites in ``Testing/slicer`` cover the same
code paths without Qt. On first run it installs the engine into Slicer's Python (network needed).
``docs/release_check.md`` says how to run it and what to expect.
"""

from __future__ import annotations

import time

import qt
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from RRLMedSAMSlicerLib import RunsLogic as rl
from RRLMedSAMSlicerLib import SceneConversion as sc
from RRLMedSAMSlicerLib.InstallLogic import extension_resource
from RRLMedSAMSlicerLib.Logic import OVERLAY_KIND_ATTRIBUTE
from RRLMedSAMSlicerLib.ParameterNode import scan_nodes
from RRLMedSAMSlicerLib.RunState import State

RUN_TIMEOUT_S = 1800


class RRLMedSAMTest(ScriptedLoadableModuleTest):
    """Sample -> Train (engine preset ``tiny``) -> Segment -> results -> overlay change -> delete run; then Cancel and Resume.

    Written for the real application only (see the module docstring): it drives the module panel
    exactly as a user would and waits on the Qt event loop while the engine runs in its process.
    The runs folder is a temporary folder; the user's runs-folder setting is restored afterwards.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        settings = qt.QSettings()
        saved = settings.value(rl.RUNS_ROOT_SETTING, "")
        try:
            self.setUp()
            self.test_whole_flow_on_sample()
            self.setUp()
            self.test_cancel_then_resume_training()
        finally:
            settings.setValue(rl.RUNS_ROOT_SETTING, saved)
            panel = slicer.modules.rrlmedsam.widgetRepresentation().self().widget
            panel.ui.runsRootPathLineEdit.currentPath = str(rl.resolve_runs_root(saved))

    def _panel(self):
        slicer.util.selectModule("RRLMedSAM")
        panel = slicer.modules.rrlmedsam.widgetRepresentation().self().widget
        panel.enginePresetOverride = "tiny"
        panel.ui.runsRootPathLineEdit.currentPath = slicer.util.tempDirectory("RRLMedSAMSelfTestRuns")
        node = panel._parameterNode
        node.device = "cpu"
        self.assertTrue(panel.ensureEngine(prompt=False), "the engine could not be installed into Slicer's Python")
        panel.onLoadSample()
        self.assertGreater(len(scan_nodes(node)), 0)
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
        node = panel._parameterNode
        scans = scan_nodes(node)
        expected = [(label.id, label.name, label.color) for label in sc.read_label_table(extension_resource("SampleData/labels.csv"))]

        self.delayDisplay("Training (engine preset 'tiny') into a new run")
        panel.onTrainButton()
        self.assertEqual(panel.ui.trainButton.text, "Cancel")
        run_folder = panel.activeRun.folder
        self.assertEqual(run_folder.parent, panel.runsRoot())
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.DONE, panel.ui.statusLabel.text)
        self.assertEqual(panel.selectedRun.folder, run_folder)
        self.assertEqual(panel.selectedRun.status, rl.RunStatus.FINISHED)

        self.delayDisplay("Segmenting with the finished run")
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
            hidden = panel.ui.atlasVolumeSelector.sortFilterProxyModel().hiddenNodeIDs
            self.assertIn(result.warped_atlas.GetID(), hidden, "results are not offered as atlas")

        self.delayDisplay("Changing the display of the results already in the scene")
        node.fieldDisplay = "glyph"
        self.assertEqual(panel.results[0].deformation.GetDisplayNode().GetVisualizationMode(),
                         slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH)
        node.fieldOverlay = "jacobian"
        overlays = sc.find_results(slicer.mrmlScene, sc.ROLE_FIELD_OVERLAY)
        self.assertEqual(len(overlays), len(scans))
        self.assertEqual({o.GetAttribute(OVERLAY_KIND_ATTRIBUTE) for o in overlays}, {"jacobian"})
        node.atlasPreview = panel.results[0].deformation
        self.assertIs(node.atlasVolume.GetParentTransformNode(), panel.results[0].deformation)
        node.atlasPreview = None

        self.delayDisplay("Deleting the run")
        original_confirm = slicer.util.confirmOkCancelDisplay
        slicer.util.confirmOkCancelDisplay = lambda *args, **kwargs: True  # the user presses OK
        try:
            panel.onDeleteRunButton()
        finally:
            slicer.util.confirmOkCancelDisplay = original_confirm
        self.assertFalse(run_folder.exists())
        self.assertNotIn(run_folder, [run.folder for run in panel.runs])
        self.delayDisplay("Whole flow passed")

    def test_cancel_then_resume_training(self) -> None:
        import psutil

        panel = self._panel()
        panel.onTrainButton()
        deadline = time.monotonic() + 300
        while panel.process.last_event is None or panel.process.last_event.step < 1:
            self.assertLess(time.monotonic(), deadline, "no progress from the engine")
            slicer.app.processEvents()
            time.sleep(0.05)
        launched = psutil.Process(panel.process.popen.pid)
        tree = [launched, *launched.children(recursive=True)]
        panel.onTrainButton()  # the button is "Cancel" now
        self.assertEqual(panel.machine.state, State.CANCELLING)
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.IDLE)
        self.assertFalse(panel.process.outcome.forced, "the engine stopped by itself after the stop request")
        time.sleep(0.5)
        for process in tree:
            alive = process.is_running() and process.status() != psutil.STATUS_ZOMBIE
            self.assertFalse(alive, f"process {process.pid} survived the cancel")
        self.assertEqual(panel.selectedRun.status, rl.RunStatus.INTERRUPTED)
        self.assertEqual(panel.ui.resumeRunButton.text, "Resume")

        self.delayDisplay("Resuming the interrupted run")
        panel.onResumeRunButton()
        self._waitWhileBusy(panel)
        self.assertEqual(panel.machine.state, State.DONE, panel.ui.statusLabel.text)
        self.assertEqual(panel.selectedRun.status, rl.RunStatus.FINISHED)
        self.delayDisplay("Cancel and resume passed")
