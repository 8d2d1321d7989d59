"""Qt-free conversion between MRML nodes and the engine's files.

Importable under the ``slicer-core`` wheel (real MRML, no Qt, no application): it uses only
``slicer`` MRML classes, ``vtk`` and ``numpy``. The atlas segmentation becomes a labelmap plus a
label table (``labels.csv``: ``id,name,r,g,b``, colours 0..255) and the engine's labelmaps come
back as segmentation nodes with the same ids, names, colours and terminology.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

#: Segment tag holding the integer id a segment has in the engine's labelmaps.
LABEL_ID_TAG = "RRLMedSAM.LabelId"
#: Node attribute saying which result a node is (see the ``ROLE_*`` values).
ROLE_ATTRIBUTE = "RRLMedSAM.Role"
#: Node attribute holding the ID of the scan a result node belongs to.
SCAN_ATTRIBUTE = "RRLMedSAM.ScanNodeID"
ROLE_SEGMENTATION = "segmentation"
ROLE_PROMPT_MASK = "promptMask"
ROLE_DEFORMATION = "deformation"
ROLE_WARPED_ATLAS = "warpedAtlas"
ROLE_FIELD_OVERLAY = "fieldOverlay"
MAX_LABEL_ID = 65535


class SceneConversionError(Exception):
    """A scene or file problem the user can fix; the message says how."""


@dataclass(frozen=True)
class Label:
    """One structure: labelmap id, name, 0..255 colour and optional Slicer terminology string."""

    id: int
    name: str
    color: tuple[int, int, int]
    terminology: str = ""


def color_to_rgb255(color: tuple[float, float, float]) -> tuple[int, int, int]:
    """Slicer's 0..1 colour as 0..255 integers."""
    return tuple(int(round(min(max(float(c), 0.0), 1.0) * 255)) for c in color[:3])  # type: ignore[return-value]


def rgb255_to_color(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """0..255 integers as Slicer's 0..1 colour."""
    return tuple(c / 255.0 for c in rgb)  # type: ignore[return-value]


def safe_file_stem(name: str, taken: set[str] | None = None) -> str:
    """A file-name stem made from a node name (letters, digits, ``-``, ``_``), unique within ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-") or "volume"
    candidate, index = stem, 2
    while taken is not None and candidate.lower() in {t.lower() for t in taken}:
        candidate, index = f"{stem}_{index}", index + 1
    if taken is not None:
        taken.add(candidate)
    return candidate


# ---------------------------------------------------------------- label table files


def write_label_table(labels: list[Label], path: str | os.PathLike) -> None:
    """Write ``labels.csv`` (``id,name,r,g,b``) for the engine; terminology goes to a sibling JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "r", "g", "b"])
    for label in sorted(labels, key=lambda item: item.id):
        writer.writerow([label.id, label.name, *label.color])
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")
    terminology = {str(label.id): label.terminology for label in labels if label.terminology}
    terminology_path(path).write_text(json.dumps(terminology, indent=1), encoding="utf-8")


def terminology_path(table_path: str | os.PathLike) -> Path:
    """Where the terminology strings of a label table are kept (beside ``labels.csv``)."""
    return Path(table_path).with_name("labels_terminology.json")


def read_label_table(path: str | os.PathLike, terminology: dict[int, str] | None = None) -> list[Label]:
    """Read a ``labels.csv``; terminology comes from ``terminology`` or the sibling JSON when present."""
    path = Path(path)
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        entries = [(int(r["id"]), r["name"].strip(), (int(r["r"]), int(r["g"]), int(r["b"]))) for r in rows]
    except OSError as error:
        raise SceneConversionError(f"Cannot read the label table {path}: {error.strerror}.") from None
    except (KeyError, ValueError, TypeError, AttributeError):
        raise SceneConversionError(f"Label table {path} must have the columns id,name,r,g,b with integers.") from None
    if terminology is None:
        side = terminology_path(path)
        terminology = {int(k): v for k, v in json.loads(side.read_text(encoding="utf-8")).items()} if side.exists() else {}
    return sorted((Label(i, n, c, terminology.get(i, "")) for i, n, c in entries), key=lambda item: item.id)


# ---------------------------------------------------------------- segmentation -> labels


def segment_label_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> dict[str, int]:
    """Labelmap id of every segment, by segment ID.

    Ids written by this module (segment tag) win; then Slicer's label values when they are distinct
    (a segmentation imported from a labelmap keeps its original values); else 1..N in segment order.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    if not segment_ids:
        raise SceneConversionError(
            f"Segmentation '{segmentation_node.GetName()}' has no segments; draw at least one structure on the atlas."
        )

    def distinct_valid(values: list[int]) -> bool:
        return len(set(values)) == len(values) and all(0 < v <= MAX_LABEL_ID for v in values)

    tagged = []
    for segment_id in segment_ids:
        tag = vtk.reference("")
        found = segmentation.GetSegment(segment_id).GetTag(LABEL_ID_TAG, tag)
        tagged.append(int(str(tag)) if found and str(tag).isdigit() else -1)
    if distinct_valid(tagged):
        return dict(zip(segment_ids, tagged))
    values = [int(segmentation.GetSegment(s).GetLabelValue()) for s in segment_ids]
    if distinct_valid(values):
        return dict(zip(segment_ids, values))
    return {segment_id: index + 1 for index, segment_id in enumerate(segment_ids)}


def label_table_from_segmentation(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[Label]:
    """Label table (ids, names, colours, terminology) of a segmentation node."""
    segmentation = segmentation_node.GetSegmentation()
    labels = []
    for segment_id, label_id in segment_label_ids(segmentation_node).items():
        segment = segmentation.GetSegment(segment_id)
        terminology = segment.GetTerminology() if segment.HasTerminology() else ""
        labels.append(Label(label_id, segment.GetName(), color_to_rgb255(segment.GetColor()), terminology))
    names = [label.name for label in labels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SceneConversionError(
            f"Segment names must be unique; rename the segments called {', '.join(repr(d) for d in duplicates)}."
        )
    return sorted(labels, key=lambda item: item.id)


def segmentation_to_label_array(
    segmentation_node: slicer.vtkMRMLSegmentationNode, reference_volume: slicer.vtkMRMLVolumeNode
) -> np.ndarray:
    """The segmentation as one integer array (k, j, i) on ``reference_volume``'s grid, using the table ids."""
    scene = segmentation_node.GetScene()
    ids = segment_label_ids(segmentation_node)
    dims = reference_volume.GetImageData().GetDimensions()
    result = np.zeros(dims[::-1], dtype=np.uint16)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    colors_before = _node_ids(scene, "vtkMRMLColorTableNode")
    temporary = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RRLMedSAM temporary label")
    try:
        for segment_id, label_id in ids.items():
            one = vtk.vtkStringArray()
            one.InsertNextValue(segment_id)
            if not logic.ExportSegmentsToLabelmapNode(
                segmentation_node, one, temporary, reference_volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            ):
                raise SceneConversionError(f"Could not export segment '{segment_id}' onto '{reference_volume.GetName()}'.")
            mask = numpy_support.vtk_to_numpy(temporary.GetImageData().GetPointData().GetScalars()).reshape(result.shape)
            result[mask != 0] = label_id
    finally:
        _remove_with_display(temporary)
        for node_id in _node_ids(scene, "vtkMRMLColorTableNode") - colors_before:
            scene.RemoveNode(scene.GetNodeByID(node_id))  # the export adds a colour table per call
    return result


def _node_ids(scene: slicer.vtkMRMLScene, class_name: str) -> set[str]:
    collection = scene.GetNodesByClass(class_name)
    return {collection.GetItemAsObject(i).GetID() for i in range(collection.GetNumberOfItems())}


# ---------------------------------------------------------------- volumes on disk


def save_volume(volume_node: slicer.vtkMRMLVolumeNode, path: str | os.PathLike) -> Path:
    """Write a volume (its own geometry, parent transforms not applied) to NRRD/NIfTI."""
    if volume_node.GetImageData() is None:
        raise SceneConversionError(f"Volume '{volume_node.GetName()}' has no voxels; load the image again.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(volume_node):
        raise SceneConversionError(f"Could not write '{volume_node.GetName()}' to {path}; check free space and permissions.")
    return path


def read_volume(scene: slicer.vtkMRMLScene, path: str | os.PathLike, name: str, labelmap: bool = False) -> slicer.vtkMRMLVolumeNode:
    """Read a NIfTI/NRRD file into a new scalar (or labelmap) volume node."""
    node_class = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(node_class, name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise SceneConversionError(f"Could not read the volume file {path}.")
    return node


@dataclass(frozen=True)
class AtlasFiles:
    """The files handed to ``rrlmedsam train`` for the atlas."""

    image: Path
    label: Path
    table: Path
    labels: tuple[Label, ...]


def export_atlas(
    atlas_volume: slicer.vtkMRMLScalarVolumeNode,
    atlas_segmentation: slicer.vtkMRMLSegmentationNode,
    out_dir: str | os.PathLike,
) -> AtlasFiles:
    """Write the atlas image, its labelmap (on the image grid) and the label table into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = label_table_from_segmentation(atlas_segmentation)
    array = segmentation_to_label_array(atlas_segmentation, atlas_volume)
    if not array.any():
        raise SceneConversionError(
            f"Segmentation '{atlas_segmentation.GetName()}' is empty inside '{atlas_volume.GetName()}'; "
            "the atlas needs at least one painted structure within the atlas image."
        )
    scene = atlas_volume.GetScene()
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "RRLMedSAM atlas label")
    try:
        matrix = vtk.vtkMatrix4x4()
        atlas_volume.GetIJKToRASMatrix(matrix)
        label_node.SetIJKToRASMatrix(matrix)
        image = vtk.vtkImageData()
        image.SetDimensions(array.shape[::-1])
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(array.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_SHORT))
        label_node.SetAndObserveImageData(image)
        label_path = save_volume(label_node, out_dir / "atlas_label.nrrd")
    finally:
        _remove_with_display(label_node)
    image_path = save_volume(atlas_volume, out_dir / "atlas_image.nrrd")
    table_path = out_dir / "labels.csv"
    write_label_table(labels, table_path)
    return AtlasFiles(image_path, label_path, table_path, tuple(labels))


# ---------------------------------------------------------------- labels -> segmentation


def color_table_from_labels(scene: slicer.vtkMRMLScene, labels: list[Label], name: str) -> slicer.vtkMRMLColorTableNode:
    """A colour table whose entry ``id`` carries the label's name, colour and terminology."""
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(max([label.id for label in labels], default=0) + 1)
    table.SetColor(0, "Background", 0.0, 0.0, 0.0, 0.0)
    for label in labels:
        table.SetColor(label.id, label.name, *rgb255_to_color(label.color), 1.0)
        if label.terminology:
            table.SetTerminologyFromString(label.id, label.terminology)
    return table


def labelmap_file_to_segmentation(
    path: str | os.PathLike,
    labels: list[Label],
    reference_volume: slicer.vtkMRMLVolumeNode,
    name: str,
    include_empty: bool = True,
) -> slicer.vtkMRMLSegmentationNode:
    """Load an engine labelmap as a segmentation named and coloured from ``labels``.

    Every label of the table gets a segment (empty when absent and ``include_empty``), tagged with
    its id; ids missing from the table get a default name. The reference geometry is
    ``reference_volume``'s.
    """
    scene = reference_volume.GetScene()
    label_node = read_volume(scene, path, f"{name} labelmap", labelmap=True)
    values = numpy_support.vtk_to_numpy(label_node.GetImageData().GetPointData().GetScalars())
    present = {int(v) for v in np.unique(values) if v != 0}
    known = {label.id for label in labels}
    table_labels = list(labels) + [Label(v, f"Label {v}", (128, 128, 128)) for v in sorted(present - known)]
    color_table = color_table_from_labels(scene, table_labels, f"{name} colors")
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    try:
        segmentation_node.CreateDefaultDisplayNodes()
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        label_node.CreateDefaultDisplayNodes()
        label_node.GetDisplayNode().SetAndObserveColorNodeID(color_table.GetID())
        if present and not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node):
            raise SceneConversionError(f"Could not convert {path} into a segmentation.")
        _apply_labels(segmentation_node, table_labels, include_empty)
    except Exception:
        _remove_with_display(segmentation_node)
        raise
    finally:
        _remove_with_display(label_node)
        scene.RemoveNode(color_table)
    return segmentation_node


def _apply_labels(segmentation_node: slicer.vtkMRMLSegmentationNode, labels: list[Label], include_empty: bool) -> None:
    """Set name, colour, terminology and id tag of each segment; add empty segments for absent ids."""
    segmentation = segmentation_node.GetSegmentation()
    by_value = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        by_value[int(segment.GetLabelValue())] = segmentation.GetNthSegmentID(index)
    for label in sorted(labels, key=lambda item: item.id):
        segment_id = by_value.get(label.id)
        if segment_id is None:
            if not include_empty:
                continue
            segment_id = segmentation.AddEmptySegment("", label.name, rgb255_to_color(label.color))
            if not segment_id:
                raise SceneConversionError(f"Could not add the segment '{label.name}'.")
        segment = segmentation.GetSegment(segment_id)
        segment.SetName(label.name)
        segment.SetColor(*rgb255_to_color(label.color))
        segment.SetTag(LABEL_ID_TAG, str(label.id))
        if label.terminology:
            segment.SetTerminology(label.terminology)


# ---------------------------------------------------------------- bookkeeping in the scene


def mark_result(node: slicer.vtkMRMLNode, role: str, scan_node: slicer.vtkMRMLNode) -> None:
    """Tag ``node`` as the ``role`` result of ``scan_node``."""
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    node.SetAttribute(SCAN_ATTRIBUTE, scan_node.GetID())


def find_results(scene: slicer.vtkMRMLScene, role: str, scan_node: slicer.vtkMRMLNode | None = None) -> list[slicer.vtkMRMLNode]:
    """Result nodes of ``role`` (for ``scan_node`` only when given)."""
    found = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        if node.GetAttribute(ROLE_ATTRIBUTE) != role:
            continue
        if scan_node is None or node.GetAttribute(SCAN_ATTRIBUTE) == scan_node.GetID():
            found.append(node)
    return found


def remove_results(scene: slicer.vtkMRMLScene, scan_node: slicer.vtkMRMLNode, role: str) -> None:
    """Remove earlier ``role`` results of ``scan_node`` (a new segmentation replaces the old one)."""
    for node in find_results(scene, role, scan_node):
        _remove_with_display(node)


def place_beside(node: slicer.vtkMRMLNode, scan_node: slicer.vtkMRMLNode, folder_name: str | None = None) -> None:
    """Put ``node`` next to ``scan_node`` in the subject hierarchy (in a sub-folder when named).

    The node also follows the scan's parent transform, so results line up with a moved scan.
    """
    shnode = scan_node.GetScene().GetSubjectHierarchyNode()
    scan_item = _sh_item(shnode, scan_node)
    parent = shnode.GetItemParent(scan_item) or shnode.GetSceneItemID()
    if folder_name:
        folder = shnode.GetItemChildWithName(parent, folder_name)
        parent = folder or shnode.CreateFolderItem(parent, folder_name)
    shnode.SetItemParent(_sh_item(shnode, node), parent)
    if hasattr(node, "SetAndObserveTransformNodeID"):
        node.SetAndObserveTransformNodeID(scan_node.GetTransformNodeID())


def _sh_item(shnode: slicer.vtkMRMLSubjectHierarchyNode, node: slicer.vtkMRMLNode) -> int:
    item = shnode.GetItemByDataNode(node)
    return item or shnode.CreateItem(shnode.GetSceneItemID(), node)


def _remove_with_display(node: slicer.vtkMRMLNode) -> None:
    scene = node.GetScene()
    if scene is None:
        return
    if hasattr(node, "GetNumberOfDisplayNodes"):
        for index in reversed(range(node.GetNumberOfDisplayNodes())):
            display = node.GetNthDisplayNode(index)
            if display is not None:
                scene.RemoveNode(display)
    scene.RemoveNode(node)
