"""The SAM weights controls of the panel (wiring only): cache folder, import, custom checkpoint.

Decisions live in :mod:`WeightsLogic` (cache folder, verified import) and :mod:`CustomWeightsLogic`
(what the file is, the warning for an unverifiable checksum, where the copy goes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import qt
import slicer

from RRLMedSAMSlicerLib import CustomWeightsLogic as cw
from RRLMedSAMSlicerLib import WeightsLogic as wl
from RRLMedSAMSlicerLib.InstallLogic import MODULE_DIR, extension_resource

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer < 5.4

    def _(text: str) -> str:
        return text


class WeightsSection:
    """Wires the weights widgets of ``ui``; ``status(text)`` reports, ``open_folder(path)`` shows a folder."""

    def __init__(self, ui, parent_widget, status: Callable[[str], None], open_folder: Callable[[Path], None]) -> None:
        self.ui, self.parentWidget, self._status, self._openFolder = ui, parent_widget, status, open_folder
        self.ui.importWeightsButton.clicked.connect(self.onImportWeights)
        self.ui.clearCustomCheckpointButton.clicked.connect(self.onClearCustomCheckpoint)
        self.ui.openWeightsFolderButton.clicked.connect(lambda: self._openFolder(self.weightsDir()))
        self.ui.weightsFolderPathLineEdit.currentPath = str(self.weightsDir())
        self.ui.weightsFolderPathLineEdit.currentPathChanged.connect(self._onWeightsFolderChanged)
        self._updateWeightsStatus()

    def weightsDir(self) -> Path:
        return wl.resolve_weights_dir(qt.QSettings().value(wl.WEIGHTS_SETTING, ""))

    def customCheckpoint(self) -> Path | None:
        return cw.custom_checkpoint_from_setting(qt.QSettings().value(cw.CUSTOM_CHECKPOINT_SETTING, ""))

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
        custom = self.customCheckpoint()
        self.ui.customCheckpointLabel.text = cw.custom_checkpoint_label(custom)
        self.ui.clearCustomCheckpointButton.enabled = custom is not None
        try:
            status = wl.checkpoint_status(self._manifest(), self.weightsDir())
        except Exception as error:  # a broken manifest must not break the panel
            self.ui.weightsStatusLabel.text = str(error)
            return
        self.ui.weightsStatusLabel.text = ", ".join(f"{name}: {_(state)}" for name, state in status.items())

    def onImportWeights(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parentWidget, _("Import SAM checkpoint"), "",
                                              _("Checkpoints (*.pth *.pt *.safetensors);;All files (*)"))
        if not path:
            return
        dialog = slicer.util.createProgressDialog(labelText=_("Computing the checksum..."), maximum=100)

        def progress(fraction: float) -> bool:
            dialog.value = int(fraction * 100)
            slicer.app.processEvents()
            return not dialog.wasCanceled

        try:
            with slicer.util.tryWithErrorDisplay(_("Could not import the checkpoint.")):
                inspection = cw.inspect_checkpoint(path, self._manifest(), progress)
                dialog.close()
                if not inspection.verified and not slicer.util.confirmYesNoDisplay(
                        cw.custom_weights_warning(inspection), windowTitle=_("Unverified SAM checkpoint")):
                    return
                target = cw.import_inspected(inspection, self.weightsDir(), [MODULE_DIR])
                if not inspection.verified:
                    qt.QSettings().setValue(cw.CUSTOM_CHECKPOINT_SETTING, str(target))
                self._status(_("Imported {name} into {path}.").format(name=inspection.path.name, path=target))
        finally:
            dialog.close()
            self._updateWeightsStatus()

    def onClearCustomCheckpoint(self) -> None:
        qt.QSettings().remove(cw.CUSTOM_CHECKPOINT_SETTING)
        self._updateWeightsStatus()
