"""Qt-free logic: scene -> engine inputs, engine command lines, engine outputs -> scene.

A run folder (one per training, see :mod:`RunsLogic`) holds::

    <run folder>/model/                 the engine's run folder (train --out, segment --model)
    <run folder>/labels_terminology.json terminology of the atlas segments (kept for later results)
    <run folder>/inputs/                 atlas and scans exported for training (kept until training finished)
    <run folder>/results/<job>/          scans exported for segmentation and the engine's outputs (temporary)

Every node this module creates carries the :data:`SceneConversion.ROLE_ATTRIBUTE` attribute, so the
input selectors can leave results out (:meth:`RRLMedSAMLogic.result_node_ids`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import slicer

from RRLMedSAMSlicerLib import FieldConversion as fc
from RRLMedSAMSlicerLib import SceneConversion as sc
from RRLMedSAMSlicerLib.ProcessRunner import DEVICES, engine_command

PRESETS = ("fast", "standard", "full")
ENGINE_PRESETS = ("tiny", *PRESETS)
EXTRAS_FOLDER_SUFFIX = "RRL-MedSAM"
#: The engine's ``--label-smoothing-mm`` value that chooses each structure's sigma from the atlas.
AUTO_SMOOTHING = "auto"
#: Node attribute of a field overlay volume: ``magnitude`` or ``jacobian``.
OVERLAY_KIND_ATTRIBUTE = "RRLMedSAM.OverlayKind"


@dataclass(frozen=True)
class SegmentationJob:
    """Scans exported for one ``segment`` call: file stem -> scan node ID, and where outputs go."""

    out_dir: Path
    images: tuple[Path, ...]
    scans: dict[str, str]


@dataclass
class ScanResult:
    """The nodes created for one scan, and its QC values."""

    scan: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    deformation: slicer.vtkMRMLGridTransformNode | None = None
    warped_atlas: slicer.vtkMRMLScalarVolumeNode | None = None
    prompt_mask: slicer.vtkMRMLSegmentationNode | None = None
    overlay: slicer.vtkMRMLScalarVolumeNode | None = None
    qc: dict = field(default_factory=dict)


class RRLMedSAMLogic:
    """Prepare engine runs from the scene and load their results back.

    Args:
        scene: the MRML scene (default ``slicer.mrmlScene``).
        command: engine command prefix factory (default ``PythonSlicer -m RRLMedSAMLib``); tests pass
            the interpreter that has the engine installed.
    """

    def __init__(self, scene: slicer.vtkMRMLScene | None = None, command: Callable[[], list[str]] | None = None) -> None:
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.command = command or engine_command

    # ------------------------------------------------------------ sample data

    def load_sample(self, folder: Path) -> tuple[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLSegmentationNode, list]:
        """The embedded sample: atlas image, its segmentation (named from ``labels.csv``) and the scans."""
        folder = Path(folder)
        atlas = sc.read_volume(self.scene, folder / "atlas_image.nii.gz", "Sample atlas")
        atlas.CreateDefaultDisplayNodes()
        labels = sc.read_label_table(folder / "labels.csv")
        segmentation = sc.labelmap_file_to_segmentation(folder / "atlas_label.nii.gz", labels, atlas, "Sample atlas segmentation")
        scans = []
        for path in sorted((folder / "images").glob("*.nii.gz")):
            scans.append(sc.read_volume(self.scene, path, path.name.split(".")[0]))
            scans[-1].CreateDefaultDisplayNodes()
        return atlas, segmentation, scans

    # ------------------------------------------------------------ training

    @staticmethod
    def model_dir(run_folder: Path) -> Path:
        return Path(run_folder) / "model"

    def train_command(
        self,
        run_folder: Path,
        atlas_volume: slicer.vtkMRMLScalarVolumeNode | None,
        atlas_segmentation: slicer.vtkMRMLSegmentationNode | None,
        scans: list[slicer.vtkMRMLScalarVolumeNode],
        preset: str = "standard",
        device: str = "auto",
        resume: bool = False,
        seed: int | None = None,
        sam_checkpoint: Path | None = None,
        volume_calibration: bool = False,
    ) -> list[str]:
        """Export the atlas and scans into ``run_folder/inputs`` and return the ``train`` command.

        ``sam_checkpoint``: a custom SAM checkpoint (e.g. MedSAM) the user accepted without a
        verifiable checksum; passed as ``--sam-checkpoint PATH --allow-custom-weights``.
        ``volume_calibration``: end the training with the volume calibration stage
        (``--volume-calibration on``), which segmenting with the calibration needs.
        """
        if atlas_volume is None or atlas_segmentation is None:
            raise sc.SceneConversionError("Choose the atlas volume and its segmentation first.")
        scans = self._check_scans(scans)
        if any(scan.GetID() == atlas_volume.GetID() for scan in scans):
            raise sc.SceneConversionError("The atlas volume is also checked as an unlabelled scan; uncheck it.")
        _check_choice(preset, ENGINE_PRESETS, "preset")
        _check_choice(device, DEVICES, "device")
        run_folder = Path(run_folder)
        inputs = run_folder / "inputs"
        atlas = sc.export_atlas(atlas_volume, atlas_segmentation, inputs / "atlas")
        shutil.copyfile(sc.terminology_path(atlas.table), run_folder / "labels_terminology.json")
        taken: set[str] = set()
        images = [sc.save_volume(scan, inputs / "images" / f"{sc.safe_file_stem(scan.GetName(), taken)}.nrrd") for scan in scans]
        command = [
            *self.command(), "train",
            "--atlas-image", str(atlas.image), "--atlas-label", str(atlas.label), "--atlas-labels-table", str(atlas.table),
            "--images", *map(str, images), "--out", str(self.model_dir(run_folder)),
            "--preset", preset, "--device", device,
        ]
        if resume:
            command.append("--resume")
        if seed is not None:
            command += ["--seed", str(int(seed))]
        if sam_checkpoint is not None:
            command += ["--sam-checkpoint", str(sam_checkpoint), "--allow-custom-weights"]
        command += ["--volume-calibration", "on" if volume_calibration else "off"]
        return command

    # ------------------------------------------------------------ segmentation

    def segment_command(
        self, run_folder: Path, scans: list[slicer.vtkMRMLScalarVolumeNode], device: str = "auto",
        label_smoothing_mm: float | str = AUTO_SMOOTHING, registration_ensemble: int = 1,
        volume_calibration: bool = False,
    ) -> tuple[list[str], SegmentationJob]:
        """Export ``scans`` into a new results folder and return the ``segment`` command and job.

        ``label_smoothing_mm`` > 0 asks the engine to smooth each structure with that sigma, keeping
        its volume; ``"auto"`` (the engine's default) lets it choose each structure's sigma from the
        atlas; 0 turns smoothing off. ``registration_ensemble`` > 1
        asks it to register each scan that many times from slightly moved starts and vote.
        ``volume_calibration`` applies the run's volume calibration (runs trained with it only).
        The defaults are the engine's (``SegmentOptions``), and every option is passed explicitly,
        so the command says what ran.
        """
        run_folder = Path(run_folder)
        if not self.model_dir(run_folder).is_dir():
            raise sc.SceneConversionError(
                f"No trained model in {self.model_dir(run_folder)}; press Train first or choose the run folder of a finished training."
            )
        scans = self._check_scans(scans)
        _check_choice(device, DEVICES, "device")
        base = run_folder / "results" / time.strftime("%Y%m%d-%H%M%S")
        out_dir, suffix = base, 2
        while out_dir.exists():
            out_dir, suffix = base.with_name(f"{base.name}_{suffix}"), suffix + 1
        taken: set[str] = set()
        mapping, images = {}, []
        for scan in scans:
            stem = sc.safe_file_stem(scan.GetName(), taken)
            images.append(sc.save_volume(scan, out_dir / "images" / f"{stem}.nrrd"))
            mapping[stem] = scan.GetID()
        job = SegmentationJob(out_dir / "output", tuple(images), mapping)
        command = [
            *self.command(), "segment", "--model", str(self.model_dir(run_folder)),
            "--images", *map(str, images), "--out", str(job.out_dir), "--device", device,
        ]
        smoothing = AUTO_SMOOTHING if label_smoothing_mm == AUTO_SMOOTHING else f"{float(label_smoothing_mm):g}"
        command += ["--label-smoothing-mm", smoothing, "--registration-ensemble", str(int(registration_ensemble)),
                    "--volume-calibration", "on" if volume_calibration else "off"]
        return command, job

    def load_results(
        self,
        job: SegmentationJob,
        run_folder: Path,
        atlas_volume: slicer.vtkMRMLScalarVolumeNode | None = None,
        field_display: str = "grid",
        field_overlay: str = "none",
        finished_only: bool = False,
    ) -> list[ScanResult]:
        """Create the result nodes of every scan of ``job`` (earlier results of the same scan are replaced).

        ``finished_only``: load only the scans the engine finished (a cancelled segmentation keeps them).
        """
        terminology_file = Path(run_folder) / "labels_terminology.json"
        terminology = {int(k): v for k, v in json.loads(terminology_file.read_text()).items()} if terminology_file.exists() else {}
        results = []
        for stem, scan_id in job.scans.items():
            if finished_only and not self.scan_finished(job, stem):
                continue
            scan = self.scene.GetNodeByID(scan_id)
            if scan is None:
                raise sc.SceneConversionError(f"The scan of {stem} was removed from the scene before its results arrived.")
            results.append(self._load_scan(job.out_dir / stem, scan, terminology, atlas_volume, field_display, field_overlay))
        return results

    @staticmethod
    def scan_finished(job: SegmentationJob, stem: str) -> bool:
        """Whether the engine wrote the segmentation and label table of scan ``stem``."""
        folder = job.out_dir / stem
        return (folder / "segmentation.nii.gz").is_file() and (folder / "labels.csv").is_file()

    def _load_scan(self, folder: Path, scan, terminology, atlas_volume, field_display: str, field_overlay: str) -> ScanResult:
        missing = [name for name in ("segmentation.nii.gz", "labels.csv") if not (folder / name).exists()]
        if missing:
            raise sc.SceneConversionError(f"The engine did not write {', '.join(missing)} in {folder}; see the log for its error.")
        name, extras = scan.GetName(), f"{scan.GetName()} {EXTRAS_FOLDER_SUFFIX}"
        labels = sc.read_label_table(folder / "labels.csv", terminology)
        for role in (sc.ROLE_SEGMENTATION, sc.ROLE_PROMPT_MASK, sc.ROLE_DEFORMATION, sc.ROLE_WARPED_ATLAS, sc.ROLE_FIELD_OVERLAY):
            sc.remove_results(self.scene, scan, role)
        segmentation = sc.labelmap_file_to_segmentation(folder / "segmentation.nii.gz", labels, scan, f"{name} segmentation")
        sc.mark_result(segmentation, sc.ROLE_SEGMENTATION, scan)
        sc.place_beside(segmentation, scan)
        result = ScanResult(scan, segmentation)
        if (folder / "deformation.nrrd").exists():
            result.deformation = fc.load_deformation(folder / "deformation.nrrd", scan, f"{name} atlas-to-scan deformation", atlas_volume)
            sc.mark_result(result.deformation, sc.ROLE_DEFORMATION, scan)
            sc.place_beside(result.deformation, scan, extras)
            fc.set_field_display(result.deformation, field_display, scan)
            if field_overlay != "none":
                result.overlay = self.add_field_overlay(result.deformation, scan, field_overlay)
        if (folder / "warped_atlas_image.nii.gz").exists():
            result.warped_atlas = sc.read_volume(self.scene, folder / "warped_atlas_image.nii.gz", f"{name} warped atlas")
            result.warped_atlas.CreateDefaultDisplayNodes()
            sc.mark_result(result.warped_atlas, sc.ROLE_WARPED_ATLAS, scan)
            sc.place_beside(result.warped_atlas, scan, extras)
        if (folder / "prompt_mask.nii.gz").exists():
            result.prompt_mask = sc.labelmap_file_to_segmentation(
                folder / "prompt_mask.nii.gz", labels, scan, f"{name} prompt mask", include_empty=False
            )
            result.prompt_mask.GetDisplayNode().SetVisibility(False)
            sc.mark_result(result.prompt_mask, sc.ROLE_PROMPT_MASK, scan)
            sc.place_beside(result.prompt_mask, scan, extras)
        if (folder / "qc.json").exists():
            result.qc = json.loads((folder / "qc.json").read_text(encoding="utf-8"))
        return result

    def add_field_overlay(self, deformation, scan, kind: str) -> slicer.vtkMRMLScalarVolumeNode:
        """Displacement magnitude or Jacobian volume of ``deformation``, beside ``scan``."""
        sc.remove_results(self.scene, scan, sc.ROLE_FIELD_OVERLAY)
        title = "displacement magnitude (mm)" if kind == "magnitude" else "Jacobian determinant"
        overlay = fc.field_overlay_volume(deformation, kind, f"{scan.GetName()} {title}")
        sc.mark_result(overlay, sc.ROLE_FIELD_OVERLAY, scan)
        overlay.SetAttribute(OVERLAY_KIND_ATTRIBUTE, kind)
        sc.place_beside(overlay, scan, f"{scan.GetName()} {EXTRAS_FOLDER_SUFFIX}")
        return overlay

    def update_field_overlays(self, kind: str) -> list[slicer.vtkMRMLScalarVolumeNode]:
        """Give every deformation already in the scene the overlay ``kind`` (``none`` removes them).

        An overlay of the right kind is kept as it is, so calling this on every parameter change
        costs nothing; returns the overlay volumes now in the scene.
        """
        if kind not in fc.FIELD_OVERLAYS:
            raise ValueError(f"Field overlay must be one of {', '.join(fc.FIELD_OVERLAYS)}, not {kind!r}.")
        overlays = []
        for deformation in sc.find_results(self.scene, sc.ROLE_DEFORMATION):
            scan = self.scene.GetNodeByID(deformation.GetAttribute(sc.SCAN_ATTRIBUTE) or "")
            if scan is None:
                continue
            existing = sc.find_results(self.scene, sc.ROLE_FIELD_OVERLAY, scan)
            if kind == "none":
                sc.remove_results(self.scene, scan, sc.ROLE_FIELD_OVERLAY)
            elif len(existing) == 1 and existing[0].GetAttribute(OVERLAY_KIND_ATTRIBUTE) == kind:
                overlays.append(existing[0])
            else:
                overlays.append(self.add_field_overlay(deformation, scan, kind))
        return overlays

    def result_node_ids(self) -> list[str]:
        """IDs of every node this module created (hidden from the input selectors)."""
        ids = []
        for index in range(self.scene.GetNumberOfNodes()):
            node = self.scene.GetNthNode(index)
            if node.GetAttribute(sc.ROLE_ATTRIBUTE):
                ids.append(node.GetID())
        return ids

    def apply_display_options(self, field_display: str, show_prompt_masks: bool) -> None:
        """Apply the field display mode and prompt-mask visibility to every result in the scene."""
        for node in sc.find_results(self.scene, sc.ROLE_DEFORMATION):
            fc.set_field_display(node, field_display)
        for node in sc.find_results(self.scene, sc.ROLE_PROMPT_MASK):
            if node.GetDisplayNode() is not None:
                node.GetDisplayNode().SetVisibility(show_prompt_masks)

    @staticmethod
    def preview_atlas(atlas_volume: slicer.vtkMRMLVolumeNode | None, deformation: slicer.vtkMRMLTransformNode | None) -> None:
        """Place the atlas under ``deformation`` (atlas shown warped onto that scan), or back when ``None``."""
        if atlas_volume is not None:
            atlas_volume.SetAndObserveTransformNodeID(deformation.GetID() if deformation is not None else None)

    @staticmethod
    def remove_temporary_files(run_folder: Path, job: SegmentationJob | None = None, training_inputs: bool = True) -> None:
        """Delete raw engine outputs of ``job`` and, with ``training_inputs``, the exported training inputs.

        The training inputs must stay while the training can still be resumed (the engine checks
        that a resume gets the same files); the trained model always stays.
        """
        if training_inputs:
            shutil.rmtree(Path(run_folder) / "inputs", ignore_errors=True)
        if job is not None:
            shutil.rmtree(job.out_dir.parent, ignore_errors=True)

    @staticmethod
    def _check_scans(scans: list) -> list:
        scans = [scan for scan in scans if scan is not None]
        if not scans:
            raise sc.SceneConversionError("Check at least one scan to learn from or to segment.")
        for scan in scans:
            if scan.GetImageData() is None:
                raise sc.SceneConversionError(f"Scan '{scan.GetName()}' has no voxels; load it again.")
        return scans


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; use one of {', '.join(choices)}.")
