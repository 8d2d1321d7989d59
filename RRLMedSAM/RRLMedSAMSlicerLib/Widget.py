"""The module's panel: inputs, Train/Segment (Cancel while running), progress, log, results display."""

from __future__ import annotations

import time
from pathlib import Path

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from RRLMedSAMSlicerLib import SceneConversion as sc
from RRLMedSAMSlicerLib import WeightsLogic as wl
from RRLMedSAMSlicerLib.InstallLogic import MODULE_DIR, InstallError, InstallLogic, extension_resource
from RRLMedSAMSlicerLib.Logic import AUTO_SMOOTHING, RRLMedSAMLogic, ScanResult, SegmentationJob
from RRLMedSAMSlicerLib.ParameterNode import RRLMedSAMParameterLogic, RRLMedSAMParameterNode, scan_nodes, set_scan_nodes
from RRLMedSAMSlicerLib.ProcessRunner import EngineProcess, ProgressEvent, RunOutcome, default_starter
from RRLMedSAMSlicerLib.RunState import RunStateMachine, State

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
        self.machine = RunStateMachine(self._onStateChanged)
        self.process: EngineProcess | None = None
        self.job: SegmentationJob | None = None
        self.results: list[ScanResult] = []
        self.enginePresetOverride: str | None = None  # the self-test trains with the engine's "tiny" preset
        self._startTime = 0.0
        self._runKind = ""
        self._entered = False
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._onTimer)

        self.ui.atlasPreviewSelector.addAttribute("vtkMRMLGridTransformNode", sc.ROLE_ATTRIBUTE, sc.ROLE_DEFORMATION)
        self.ui.trainButton.clicked.connect(self.onTrainButton)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.loadSampleButton.clicked.connect(self.onLoadSample)
        self.ui.installButton.clicked.connect(self.onInstallButton)
        self.ui.importWeightsButton.clicked.connect(self.onImportWeights)
        self.ui.openWeightsFolderButton.clicked.connect(self.onOpenWeightsFolder)
        self.ui.openRunFolderButton.clicked.connect(lambda: self._openFolder(self._parameterNode.runFolder))
        self.ui.scansSelector.checkedNodesChanged.connect(self._onScansChecked)
        self.ui.weightsFolderPathLineEdit.currentPath = str(self.weightsDir())
        self.ui.weightsFolderPathLineEdit.currentPathChanged.connect(self._onWeightsFolderChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self._updateWeightsStatus()
        self._onStateChanged(State.IDLE, State.IDLE)

    # ------------------------------------------------------------ module life cycle

    def enter(self) -> None:
        self._entered = True
        self.initializeParameterNode()

    def exit(self) -> None:
        self._entered = False
        self._bindParameterNode(None)

    def cleanup(self) -> None:
        """Slicer closes or the module reloads: stop any run and let go of everything."""
        if self.process is not None and self.process.running:
            self.process.cancel()
        self.timer.stop()
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
        self.logic.preview_atlas(node.atlasVolume, node.atlasPreview)
        self._updateButtons()

    def _onScansChecked(self) -> None:
        if self._parameterNode is not None:
            set_scan_nodes(self._parameterNode, list(self.ui.scansSelector.checkedNodes()))

    # ------------------------------------------------------------ state and buttons

    def _onStateChanged(self, old: State, new: State) -> None:
        self._updateButtons()
        if new in (State.IDLE, State.DONE, State.FAILED):
            self.timer.stop()

    def _updateButtons(self) -> None:
        state, node = self.machine.state, self._parameterNode
        busy = self.machine.busy
        ready = node is not None and bool(scan_nodes(node))
        self.ui.trainButton.text = _("Cancel") if state == State.TRAINING else _("Train")
        self.ui.segmentButton.text = _("Cancel") if state == State.SEGMENTING else _("Segment")
        self.ui.trainButton.enabled = state == State.TRAINING or (
            not busy and ready and node.atlasVolume is not None and node.atlasSegmentation is not None)
        self.ui.segmentButton.enabled = state == State.SEGMENTING or (not busy and ready)
        for widget in (self.ui.inputsCollapsibleButton, self.ui.installButton, self.ui.runFolderButton, self.ui.presetComboBox,
                       self.ui.deviceComboBox, self.ui.resumeTrainingCheckBox, self.ui.seedSpinBox):
            widget.enabled = not busy
        self.ui.labelSmoothingSpinBox.enabled = node is not None and not node.labelSmoothingAuto
        if state == State.CANCELLING:
            self.ui.trainButton.enabled = self.ui.segmentButton.enabled = False

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
            command = self.logic.train_command(
                node.runFolder, node.atlasVolume, node.atlasSegmentation, scan_nodes(node),
                preset=self.enginePresetOverride or node.preset, device=node.device,
                resume=node.resumeTraining, seed=node.seed,
            )
            self._start(command, State.TRAINING)

    def onSegmentButton(self) -> None:
        if self.machine.state == State.SEGMENTING:
            self.cancel()
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not start segmentation."), waitCursor=True):
            if not self.ensureEngine():
                return
            command, self.job = self.logic.segment_command(
                node.runFolder, scan_nodes(node), device=node.device,
                label_smoothing_mm=AUTO_SMOOTHING if node.labelSmoothingAuto else node.labelSmoothingMm,
                registration_ensemble=node.registrationEnsemble, volume_calibration=node.volumeCalibration,
            )
            self._start(command, State.SEGMENTING)

    def cancel(self) -> None:
        if self.process is None or not self.process.running:
            return
        self.machine.go(State.CANCELLING)
        self._status(_("Cancelling: the engine saves its last checkpoint and stops..."))
        self.process.cancel()

    def _start(self, command: list[str], state: State) -> None:
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = ""
        self.ui.detailsLabel.text = ""
        self._log("$ " + " ".join(command))
        env = {wl.WEIGHTS_ENV_VAR: str(self.weightsDir())}
        self.process = EngineProcess(command, self._onEvent, self._log, self._onFinished, env=env, starter=default_starter())
        self.process.start()
        self._startTime = time.monotonic()
        self._runKind = "training" if state == State.TRAINING else "segmentation"
        self.machine.go(state)
        self._status(_("Training...") if state == State.TRAINING else _("Segmenting..."))
        self.timer.start()

    def _onTimer(self) -> None:
        if self.process is not None:
            self.process.poll()

    def _onEvent(self, event: ProgressEvent) -> None:
        if event.event == "stage_start":
            self._log(_("Stage {stage}: {message}").format(stage=event.stage, message=event.message or ""))
        if event.event in ("progress", "stage_start", "stage_end"):
            self.ui.progressBar.value = int(round(event.fraction * 1000))
            eta = _(", about {time} left").format(time=_duration(event.eta_s)) if event.eta_s is not None else ""
            self.ui.progressBar.format = f"{event.stage} {event.step}/{event.total}{eta}"
            parts = [event.message] if event.event == "progress" and event.message else []
            parts += [f"{name} {value:.4g}" for name, value in event.losses.items()]
            if event.dice is not None:
                parts.append(_("Dice on pseudo labels {dice:.3f}").format(dice=event.dice))
            parts.append(_("elapsed {time}").format(time=_duration(time.monotonic() - self._startTime)))
            self.ui.detailsLabel.text = " · ".join(parts)
        elif event.event == "error":
            self._log(_("Engine error: {message}").format(message=event.message))

    def _onFinished(self, outcome: RunOutcome) -> None:
        kind, job = self._runKind, self.job if self._runKind == "segmentation" else None
        node, elapsed = self._parameterNode, _duration(time.monotonic() - self._startTime)
        if outcome.cancelled:
            self.machine.go(State.IDLE)
            if kind == "training" and node is not None:
                node.resumeTraining = True
                self._status(_("Training stopped after {time}. Press Train to resume it.").format(time=elapsed))
            else:
                self._status(_("Segmentation cancelled."))
        elif not outcome.succeeded:
            self.machine.go(State.FAILED)
            self._status(_("The {kind} failed: {message}").format(kind=kind, message=outcome.error_message))
            slicer.util.errorDisplay(outcome.error_message or _("The engine failed."), windowTitle="RRL-MedSAM")
        elif kind == "training":
            node.resumeTraining = False
            self.machine.go(State.DONE)
            self._status(_("Training finished in {time}. Press Segment.").format(time=elapsed))
        else:
            self._loadResults(elapsed)
        if node is not None and not node.keepTemporaryFiles:
            self.logic.remove_temporary_files(node.runFolder, job)
        self.job = None

    def _loadResults(self, elapsed: str) -> None:
        node = self._parameterNode
        try:
            self.results = self.logic.load_results(self.job, node.runFolder, node.atlasVolume, node.fieldDisplay, node.fieldOverlay)
        except sc.SceneConversionError as error:
            self.machine.go(State.FAILED)
            self._status(str(error))
            slicer.util.errorDisplay(str(error))
            return
        self.logic.apply_display_options(node.fieldDisplay, node.showPromptMasks)
        for result in self.results:
            folding = result.qc.get("folding_fraction")
            note = _(", folding {percent:.2f} %").format(percent=100 * folding) if isinstance(folding, (int, float)) else ""
            self._log(f"{result.scan.GetName()}: {result.segmentation.GetName()}{note}")
        if self.results:
            first = self.results[0]
            slicer.util.setSliceViewerLayers(background=first.scan, foreground=first.overlay, foregroundOpacity=0.4, fit=True)
        self.machine.go(State.DONE)
        self._status(_("Segmented {count} scan(s) in {time}.").format(count=len(self.results), time=elapsed))

    # ------------------------------------------------------------ sample data and weights

    def onLoadSample(self) -> None:
        """Load the embedded sample: atlas image + segmentation (named from labels.csv) and the scans."""
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample data."), waitCursor=True):
            folder = extension_resource("SampleData")
            atlas = slicer.util.loadVolume(str(folder / "atlas_image.nii.gz"), {"name": "Sample atlas"})
            labels = sc.read_label_table(folder / "labels.csv")
            segmentation = sc.labelmap_file_to_segmentation(folder / "atlas_label.nii.gz", labels, atlas, "Sample atlas segmentation")
            scans = [slicer.util.loadVolume(str(path), {"name": path.name.split(".")[0], "show": False})
                     for path in sorted((folder / "images").glob("*.nii.gz"))]
            node = self._parameterNode
            node.atlasVolume, node.atlasSegmentation = atlas, segmentation
            set_scan_nodes(node, scans)
            self._bindParameterNode(node)

    def weightsDir(self) -> Path:
        return wl.resolve_weights_dir(qt.QSettings().value(wl.WEIGHTS_SETTING, ""))

    def _onWeightsFolderChanged(self, path: str) -> None:
        try:
            wl.check_outside(Path(path), [MODULE_DIR])
        except wl.WeightsError as error:
            slicer.util.errorDisplay(str(error))
            self.ui.weightsFolderPathLineEdit.currentPath = str(self.weightsDir())
            return
        qt.QSettings().setValue(wl.WEIGHTS_SETTING, path)
        self._updateWeightsStatus()

    def _manifest(self) -> list[wl.CheckpointEntry]:
        return wl.load_manifest(extension_resource("models/sam_checkpoints.json"))

    def _updateWeightsStatus(self) -> None:
        try:
            status = wl.checkpoint_status(self._manifest(), self.weightsDir())
        except Exception as error:  # a broken manifest must not break the panel
            self.ui.weightsStatusLabel.text = str(error)
            return
        self.ui.weightsStatusLabel.text = ", ".join(f"{name}: {_(state)}" for name, state in status.items())

    def onImportWeights(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.uiWidget, _("Import SAM checkpoint"), "", _("Checkpoints (*.pth *.pt);;All files (*)"))
        if not path:
            return
        dialog = slicer.util.createProgressDialog(labelText=_("Verifying the checksum..."), maximum=100)

        def progress(fraction: float) -> bool:
            dialog.value = int(fraction * 100)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        try:
            with slicer.util.tryWithErrorDisplay(_("Could not import the checkpoint.")):
                entry, target = wl.import_checkpoint(path, self._manifest(), self.weightsDir(), [MODULE_DIR], progress)
                self._status(_("Imported {name} into {path}.").format(name=entry.name, path=target))
        finally:
            dialog.close()
            self._updateWeightsStatus()

    def onOpenWeightsFolder(self) -> None:
        folder = self.weightsDir()
        folder.mkdir(parents=True, exist_ok=True)
        self._openFolder(folder)

    @staticmethod
    def _openFolder(folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))


def _duration(seconds: float | None) -> str:
    """``45 s``, ``3 min``, ``1 h 05 min``."""
    if seconds is None:
        return "?"
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
