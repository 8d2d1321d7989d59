"""The module's panel: wiring only. Decisions live in Qt-free logic classes tested on ``slicer-core``:
:mod:`PanelLogic` (enabled states, progress, status lines), :mod:`RunsLogic` (run folders),
:mod:`Logic` (scene <-> engine); the SAM weights controls are wired by :mod:`WeightsWidget`.
"""

from __future__ import annotations

import time
from pathlib import Path

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from RRLMedSAMSlicerLib import PanelLogic as pl
from RRLMedSAMSlicerLib import RunsLogic as rl
from RRLMedSAMSlicerLib import SceneConversion as sc
from RRLMedSAMSlicerLib import WeightsLogic as wl
from RRLMedSAMSlicerLib.InstallLogic import InstallError, InstallLogic, extension_resource
from RRLMedSAMSlicerLib.Logic import AUTO_SMOOTHING, RRLMedSAMLogic, ScanResult, SegmentationJob
from RRLMedSAMSlicerLib.ParameterNode import RRLMedSAMParameterLogic, RRLMedSAMParameterNode, scan_nodes, set_scan_nodes
from RRLMedSAMSlicerLib.ProcessRunner import EngineProcess, ProgressEvent, RunOutcome, default_starter
from RRLMedSAMSlicerLib.RunState import RunStateMachine, State
from RRLMedSAMSlicerLib.WeightsWidget import WeightsSection

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4

    def _(text: str) -> str:
        return text


class RRLMedSAMMainWidget(VTKObservationMixin):
    """Everything behind the panel; ``RRLMedSAM.py`` only creates it and forwards enter/exit/cleanup."""

    def __init__(self, ui_path: str, logic: RRLMedSAMLogic | None = None, install: InstallLogic | None = None) -> None:
        VTKObservationMixin.__init__(self)
        self.uiWidget = slicer.util.loadUI(ui_path)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic or RRLMedSAMLogic()
        self._install = install
        self.parameterLogic = RRLMedSAMParameterLogic()
        self._parameterNode: RRLMedSAMParameterNode | None = None
        self._parameterNodeGuiTag = None
        self.machine = RunStateMachine(lambda old, new: self._updateControls())
        self.process: EngineProcess | None = None
        self.job: SegmentationJob | None = None
        self.results: list[ScanResult] = []
        self.runs: list[rl.RunInfo] = []
        self.selectedRun: rl.RunInfo | None = None
        self.activeRun: rl.RunInfo | None = None
        self.enginePresetOverride: str | None = None  # the self-test trains with the engine's "tiny" preset
        self._startTime, self._runKind, self._resuming, self._entered = 0.0, "", False, False
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._onTimer)
        self.filterTimer = qt.QTimer()  # coalesces the many node-added events of a result load
        self.filterTimer.setSingleShot(True)
        self.filterTimer.setInterval(0)
        self.filterTimer.timeout.connect(self.updateSelectorFilters)

        self.ui.atlasPreviewSelector.addAttribute("vtkMRMLGridTransformNode", sc.ROLE_ATTRIBUTE, sc.ROLE_DEFORMATION)
        self.ui.trainButton.clicked.connect(self.onTrainButton)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.resumeRunButton.clicked.connect(self.onResumeRunButton)
        self.ui.deleteRunButton.clicked.connect(self.onDeleteRunButton)
        self.ui.refreshRunsButton.clicked.connect(lambda: self.refreshRuns())
        self.ui.openRunFolderButton.clicked.connect(
            lambda: self._openFolder(self.selectedRun.folder if self.selectedRun else self.runsRoot()))
        self.ui.runsTableWidget.itemSelectionChanged.connect(self._onRunSelected)
        self.ui.runsRootPathLineEdit.currentPath = str(self.runsRoot())
        self.ui.runsRootPathLineEdit.currentPathChanged.connect(self._onRunsRootChanged)
        self.ui.loadSampleButton.clicked.connect(self.onLoadSample)
        self.ui.installButton.clicked.connect(self.onInstallButton)
        self.weights = WeightsSection(self.ui, self.uiWidget, self._status, self._openFolder)
        self.ui.scansSelector.checkedNodesChanged.connect(self._onScansChecked)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        for event in (slicer.mrmlScene.NodeAddedEvent, slicer.mrmlScene.EndImportEvent):
            self.addObserver(slicer.mrmlScene, event, lambda caller, ev: self.filterTimer.start())
        self.initializeParameterNode()
        self.updateSelectorFilters()
        self.refreshRuns()

    # ------------------------------------------------------------ module life cycle

    def enter(self) -> None:
        self._entered = True
        self.initializeParameterNode()
        self.updateSelectorFilters()
        if not self.machine.busy:
            self.refreshRuns()

    def exit(self) -> None:
        self._entered = False
        self._bindParameterNode(None)

    def cleanup(self) -> None:
        """Slicer closes or the module reloads: stop any run and let go of everything."""
        if self.process is not None and self.process.running:
            self.process.cancel()
        self.timer.stop()
        self.filterTimer.stop()
        self.removeObservers()
        self._bindParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self.process is not None and self.process.running:
            self.process.cancel()  # its results would land in a closed scene
        self._bindParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self._entered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        node = self.parameterLogic.getParameterNode()
        if not node.atlasVolume:
            node.atlasVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        self._bindParameterNode(node)

    def _bindParameterNode(self, node: RRLMedSAMParameterNode | None) -> None:
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode.parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._parameterNode = None
        if node is None:
            return
        self._parameterNode = node
        self._parameterNodeGuiTag = node.connectGui(self.uiWidget)
        self.ui.scansSelector.blockSignals(True)
        checked = {n.GetID() for n in scan_nodes(node)}
        for index in range(self.ui.scansSelector.nodeCount()):
            candidate = self.ui.scansSelector.nodeFromIndex(index)
            self.ui.scansSelector.setCheckState(candidate, qt.Qt.Checked if candidate.GetID() in checked else qt.Qt.Unchecked)
        self.ui.scansSelector.blockSignals(False)
        self.addObserver(node.parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None:
            return
        self.logic.apply_display_options(node.fieldDisplay, node.showPromptMasks)
        if not self.machine.busy:
            try:
                self.logic.update_field_overlays(node.fieldOverlay)  # results already in the scene follow the choice
            except sc.SceneConversionError as error:
                self._status(str(error))
        self.logic.preview_atlas(node.atlasVolume, node.atlasPreview)
        self._updateControls()

    def _onScansChecked(self) -> None:
        if self._parameterNode is not None:
            set_scan_nodes(self._parameterNode, list(self.ui.scansSelector.checkedNodes()))

    def updateSelectorFilters(self) -> None:
        """Result nodes (tagged with their role) are not offered as atlas or scans."""
        hidden = self.logic.result_node_ids()
        for selector in (self.ui.atlasVolumeSelector, self.ui.atlasSegmentationSelector, self.ui.scansSelector):
            selector.sortFilterProxyModel().hiddenNodeIDs = hidden

    # ------------------------------------------------------------ state, controls, runs list

    def _updateControls(self) -> None:
        node = self._parameterNode
        view = pl.controls(pl.PanelInputs(
            state=self.machine.state, has_atlas=node is not None and node.atlasVolume is not None and node.atlasSegmentation is not None,
            has_scans=node is not None and bool(scan_nodes(node)), selected_run=self.selectedRun,
            label_smoothing_auto=node is None or node.labelSmoothingAuto, resuming=self._resuming,
        ))
        self.ui.trainButton.text, self.ui.trainButton.enabled = view.train_text, view.train_enabled
        self.ui.segmentButton.text, self.ui.segmentButton.enabled = view.segment_text, view.segment_enabled
        self.ui.resumeRunButton.text, self.ui.resumeRunButton.enabled = view.resume_text, view.resume_enabled
        self.ui.deleteRunButton.enabled = view.delete_enabled
        for widget in (self.ui.inputsCollapsibleButton, self.ui.installButton, self.ui.presetComboBox, self.ui.deviceComboBox,
                       self.ui.seedSpinBox, self.ui.runsRootPathLineEdit, self.ui.runsTableWidget):
            widget.enabled = view.settings_enabled
        self.ui.labelSmoothingSpinBox.enabled = view.label_smoothing_enabled

    def runsRoot(self) -> Path:
        return rl.resolve_runs_root(qt.QSettings().value(rl.RUNS_ROOT_SETTING, ""))

    def _onRunsRootChanged(self, path: str) -> None:
        qt.QSettings().setValue(rl.RUNS_ROOT_SETTING, path)
        self.refreshRuns()

    def refreshRuns(self, select: Path | None = None) -> None:
        """Read the runs from disk and show them; keeps (or sets) the selection."""
        self.runs = rl.scan_runs(self.runsRoot())
        chosen = rl.default_selection(self.runs, select or (self.selectedRun.folder if self.selectedRun else None))
        table = self.ui.runsTableWidget
        table.blockSignals(True)
        table.setRowCount(len(self.runs))
        for row, run in enumerate(self.runs):
            for column, text in enumerate((run.name, pl.status_cell(run), run.message)):
                item = qt.QTableWidgetItem(text)
                item.setToolTip(pl.run_tooltip(run))
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        if chosen is not None:
            table.selectRow(self.runs.index(chosen))
        table.blockSignals(False)
        self.selectedRun = chosen
        self._updateControls()

    def _onRunSelected(self) -> None:
        rows = {index.row() for index in self.ui.runsTableWidget.selectionModel().selectedRows()}
        self.selectedRun = self.runs[min(rows)] if rows and min(rows) < len(self.runs) else None
        self._updateControls()

    def _status(self, text: str) -> None:
        self.ui.statusLabel.text = text
        self._log(text)

    def _log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    # ------------------------------------------------------------ actions

    def installLogic(self) -> InstallLogic:
        if self._install is None:
            self._install = InstallLogic()
        return self._install

    def ensureEngine(self, prompt: bool = True) -> bool:
        """Install what is missing (state: installing); False when the user declined or it failed."""
        install = self.installLogic()
        if install.ready():
            return True
        self.machine.go(State.INSTALLING)
        self._status(_("Installing the engine and its dependencies (this happens once)..."))
        try:
            install.ensure(prompt=prompt)
        except InstallError as error:
            self.machine.go(State.FAILED)
            self._status(str(error))
            slicer.util.errorDisplay(str(error))
            return False
        self.machine.go(State.IDLE)
        return True

    def onInstallButton(self) -> None:
        if self.ensureEngine():
            self._status(_("The engine is installed and up to date."))

    def onTrainButton(self) -> None:
        if self.machine.state == State.TRAINING:
            self.cancel()
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start training."), waitCursor=True):
            if not self.ensureEngine():
                return
            folder = rl.create_run(self.runsRoot(), node.atlasVolume.GetName() if node.atlasVolume else "atlas")
            try:
                command = self.logic.train_command(
                    folder, node.atlasVolume, node.atlasSegmentation, scan_nodes(node),
                    preset=self.enginePresetOverride or node.preset, device=node.device, seed=node.seed,
                    sam_checkpoint=self.customCheckpoint(), volume_calibration=node.volumeCalibration,
                )
            except Exception:
                rl.delete_run(self.runsRoot(), rl.read_run(folder))  # nothing was started in it
                raise
            rl.record_train_args(folder, command)
            self.refreshRuns(select=folder)
            self._start(command, State.TRAINING, self.selectedRun, resuming=False)

    def onResumeRunButton(self) -> None:
        if self.machine.state == State.TRAINING:
            self.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Could not continue the run."), waitCursor=True):
            if self.selectedRun is None or not self.ensureEngine():
                return
            run = rl.read_run(self.selectedRun.folder) or self.selectedRun  # its state may have changed
            command = [*self.logic.command(), *rl.continue_args(run)]
            self._start(command, State.TRAINING, run, resuming=True)

    def onSegmentButton(self) -> None:
        if self.machine.state == State.SEGMENTING:
            self.cancel()
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start segmentation."), waitCursor=True):
            run = rl.require_usable(self.selectedRun)
            if not self.ensureEngine():
                return
            command, self.job = self.logic.segment_command(
                run.folder, scan_nodes(node), device=node.device,
                label_smoothing_mm=AUTO_SMOOTHING if node.labelSmoothingAuto else node.labelSmoothingMm,
                registration_ensemble=node.registrationEnsemble, volume_calibration=node.volumeCalibration,
            )
            self._start(command, State.SEGMENTING, run)

    def onDeleteRunButton(self) -> None:
        run = self.selectedRun
        if run is None or not slicer.util.confirmOkCancelDisplay(pl.delete_question(run), windowTitle="RRL-MedSAM"):
            return
        with slicer.util.tryWithErrorDisplay(_("Could not delete the run."), waitCursor=True):
            rl.delete_run(self.runsRoot(), run)
            self._status(_("Deleted the run {name}.").format(name=run.name))
        self.selectedRun = None
        self.refreshRuns()

    def cancel(self) -> None:
        if self.process is None or not self.process.running:
            return
        self.machine.go(State.CANCELLING)
        self._status(pl.cancelling_status(self.process.cancel_grace_s))
        self.process.cancel()

    def _start(self, command: list[str], state: State, run: rl.RunInfo | None, resuming: bool = False) -> None:
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = ""
        self.ui.detailsLabel.text = ""
        self._log("$ " + " ".join(command))
        self.process = EngineProcess(command, self._onEvent, self._log, self._onFinished,
                                     env={wl.WEIGHTS_ENV_VAR: str(self.weightsDir())}, starter=default_starter())
        self.process.start()
        self._startTime, self._resuming, self.activeRun = time.monotonic(), resuming, run
        self._runKind = pl.TRAINING if state == State.TRAINING else pl.SEGMENTATION
        self.machine.go(state)
        self._status(pl.starting_status(self._runKind, run, resuming))
        self.timer.start()

    def _onTimer(self) -> None:
        if self.process is not None:
            self.process.poll()

    def _onEvent(self, event: ProgressEvent) -> None:
        view = pl.progress_view(event, time.monotonic() - self._startTime)
        if view.log_line:
            self._log(view.log_line)
        if event.event == "stage_start" and self._runKind == pl.TRAINING and self.activeRun is not None:
            self.refreshRuns(select=self.activeRun.folder)  # the list shows the run in use
        if view.bar_value is not None:
            self.ui.progressBar.value, self.ui.progressBar.format = view.bar_value, view.bar_format
            self.ui.detailsLabel.text = view.details

    def _onFinished(self, outcome: RunOutcome) -> None:
        self.timer.stop()
        node, run, job = self._parameterNode, self.activeRun, self.job
        elapsed = time.monotonic() - self._startTime
        view = pl.finished_view(self._runKind, outcome, elapsed, keep_temporary_files=node is not None and node.keepTemporaryFiles)
        if view.load_results and job is not None and node is not None:
            self._loadResults(job, run, view, elapsed)
        else:
            self.machine.go(view.next_state)
            self._status(view.status)
            if view.error_dialog:
                slicer.util.errorDisplay(view.error_dialog, windowTitle="RRL-MedSAM")
        if run is not None and view.remove_training_inputs:
            self.logic.remove_temporary_files(run.folder, training_inputs=True)
        if job is not None and run is not None and node is not None and not node.keepTemporaryFiles:
            self.logic.remove_temporary_files(run.folder, job, training_inputs=False)
        self.job, self._resuming = None, False
        self.refreshRuns(select=run.folder if run is not None else None)
        self._onParameterNodeModified()  # display choices made while the engine ran

    def _loadResults(self, job: SegmentationJob, run: rl.RunInfo, view: pl.FinishedView, elapsed: float) -> None:
        node = self._parameterNode
        try:
            self.results = self.logic.load_results(job, run.folder, node.atlasVolume, node.fieldDisplay, node.fieldOverlay,
                                                   finished_only=view.load_finished_scans_only)
        except sc.SceneConversionError as error:
            self.machine.go(State.FAILED)
            self._status(str(error))
            slicer.util.errorDisplay(str(error))
            return
        self.logic.apply_display_options(node.fieldDisplay, node.showPromptMasks)
        self.updateSelectorFilters()
        for result in self.results:
            folding = result.qc.get("folding_fraction")
            note = _(", folding {percent:.2f} %").format(percent=100 * folding) if isinstance(folding, (int, float)) else ""
            self._log(f"{result.scan.GetName()}: {result.segmentation.GetName()}{note}")
        if self.results:
            first = self.results[0]
            slicer.util.setSliceViewerLayers(background=first.scan, foreground=first.overlay, foregroundOpacity=0.4, fit=True)
        self.machine.go(view.next_state)
        self._status(pl.results_status(len(self.results), elapsed, cancelled=view.load_finished_scans_only))

    # ------------------------------------------------------------ sample data and weights

    def onLoadSample(self) -> None:
        """Load the embedded sample: atlas image + segmentation (named from labels.csv) and the scans."""
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample data."), waitCursor=True):
            atlas, segmentation, scans = self.logic.load_sample(extension_resource("SampleData"))
            node = self._parameterNode
            node.atlasVolume, node.atlasSegmentation = atlas, segmentation
            set_scan_nodes(node, scans)
            self._bindParameterNode(node)
            slicer.util.setSliceViewerLayers(background=atlas, fit=True)

    def weightsDir(self) -> Path:
        return self.weights.weightsDir()

    def customCheckpoint(self) -> Path | None:
        return self.weights.customCheckpoint()

    @staticmethod
    def _openFolder(folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))
