"""Make the user guide's pictures, the extension screenshot and the icons from real data.

Everything is drawn from MRML nodes built by the module's own Qt-free code on the ``slicer-core``
wheel, after a real engine run on the embedded sample: the sample is loaded into a scene, the atlas
segmentation is exported, ``rrlmedsam train`` and ``segment`` run in a separate process (as in
Slicer), and the results come back as segmentation, grid-transform and overlay nodes, whose arrays
are plotted here. Nothing is drawn by hand.

    python docs/scripts/make_user_guide_figures.py [--run-folder DIR] [--preset tiny] [--device cpu]

A run folder that already holds a trained model is reused (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "RRLMedSAM"))

import slicer  # noqa: E402
from vtk.util import numpy_support  # noqa: E402

from RRLMedSAMSlicerLib import FieldConversion as fc  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402
from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic, ScanResult  # noqa: E402
from RRLMedSAMSlicerLib.ProcessRunner import EngineProcess, ProgressEvent, ThreadedStarter  # noqa: E402

SAMPLE = REPO / "Resources" / "SampleData"
FIGURES = REPO / "docs" / "images" / "user_guide"


def new_scene() -> slicer.vtkMRMLScene:
    """A scene with the segmentation converters registered, as Slicer does at start-up."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule, slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
            factory.RegisterConverterRule(rule())
    slicer.mrmlScene = slicer.vtkMRMLScene()
    return slicer.mrmlScene


def run_engine(command: list[str]) -> list[ProgressEvent]:
    """Run the engine like the module does and return its progress events."""
    events: list[ProgressEvent] = []

    def show(event: ProgressEvent) -> None:
        events.append(event)
        if event.event in ("stage_start", "stage_end", "done"):
            print(f"  {event.event:11s} {event.stage} {event.message}", flush=True)

    process = EngineProcess(command, on_event=show, on_log=lambda line: None, starter=ThreadedStarter(), cwd=str(REPO))
    process.start()
    while process.outcome is None:
        process.poll()
        time.sleep(0.1)
    if not process.outcome.succeeded:
        raise SystemExit(f"engine failed: {process.outcome.error_message}")
    return events


def array(node) -> np.ndarray:
    image = node.GetImageData()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(image.GetDimensions()[::-1])


def label_colormap(labels: list[sc.Label]) -> tuple[ListedColormap, dict[int, int]]:
    """Colour map indexed by position, and id -> position."""
    colors = [(0, 0, 0, 0)] + [(*np.array(label.color) / 255.0, 1.0) for label in labels]
    return ListedColormap(colors), {label.id: index + 1 for index, label in enumerate(labels)}


def show_labels(ax, label_slice: np.ndarray, labels: list[sc.Label], alpha: float = 0.55) -> None:
    cmap, index = label_colormap(labels)
    lookup = np.zeros(int(label_slice.max()) + 1, dtype=int)
    for label_id, position in index.items():
        if label_id < lookup.size:
            lookup[label_id] = position
    ax.imshow(lookup[label_slice], cmap=cmap, vmin=0, vmax=len(labels), alpha=alpha, interpolation="nearest", origin="lower")


def grey(ax, image_slice: np.ndarray) -> None:
    low, high = np.percentile(image_slice, [1, 99.5])
    ax.imshow(image_slice, cmap="gray", vmin=low, vmax=high, origin="lower")
    ax.set_axis_off()


def draw_grid(ax, result: ScanResult, k: int, step: int = 4) -> None:
    """Lines of a regular grid in the slice, moved by the in-plane part of the transform's displacement."""
    vectors, ijk_to_ras = fc.displacement_vectors(result.deformation)
    axes = ijk_to_ras[:3, :3]
    in_index = vectors[k] @ np.linalg.inv(axes).T  # displacement in voxel units (i, j, k)
    rows, cols = vectors.shape[1:3]
    jj, ii = np.mgrid[0:rows, 0:cols]
    x, y = ii + in_index[..., 0], jj + in_index[..., 1]
    for j in range(0, rows, step):
        ax.plot(x[j, :], y[j, :], color="yellow", linewidth=0.6)
    for i in range(0, cols, step):
        ax.plot(x[:, i], y[:, i], color="yellow", linewidth=0.6)


def legend(fig, labels: list[sc.Label], present: set[int]) -> None:
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(label.color) / 255.0) for label in labels if label.id in present]
    names = [label.name for label in labels if label.id in present]
    fig.legend(handles, names, loc="lower center", ncol=min(5, len(names)), fontsize=7, frameon=False)


def figures(result: ScanResult, scan_file: Path, events: list[dict]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    scan = array(result.scan)
    k = scan.shape[0] // 2
    labels = sc.label_table_from_segmentation(result.segmentation)
    segmentation = sc.segmentation_to_label_array(result.segmentation, result.scan)
    present = {int(v) for v in np.unique(segmentation[k]) if v}

    fig, ax = plt.subplots(figsize=(4.2, 4.6))
    grey(ax, scan[k])
    show_labels(ax, segmentation[k], labels)
    ax.set_title(f"{result.segmentation.GetName()}", fontsize=9)
    legend(fig, labels, present)
    fig.savefig(FIGURES / "segmentation_overlay.png", dpi=130, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    grey(axes[0], scan[k])
    draw_grid(axes[0], result, k)
    axes[0].set_title("deformation: grid mode", fontsize=9)
    grey(axes[1], scan[k])
    magnitude, _ = fc.displacement_magnitude(result.deformation)
    shown = axes[1].imshow(magnitude[k], cmap="inferno", alpha=0.6, origin="lower")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, label="|u| (mm)")
    axes[1].set_title("displacement magnitude overlay", fontsize=9)
    grey(axes[2], scan[k])
    jacobian = array(result.overlay) if result.overlay is not None else fc.jacobian_determinant(result.deformation)[0]
    shown = axes[2].imshow(jacobian[k], cmap="coolwarm", vmin=0.0, vmax=2.0, alpha=0.65, origin="lower")
    fig.colorbar(shown, ax=axes[2], fraction=0.046, label="det J (<0: folding)")
    axes[2].set_title("Jacobian determinant overlay", fontsize=9)
    fig.savefig(FIGURES / "deformation_views.png", dpi=130, bbox_inches="tight")
    plt.close(fig)

    warped = array(result.warped_atlas)
    tiles = (np.indices(scan[k].shape) // 8).sum(axis=0) % 2 == 0
    norm = lambda a: (a - np.percentile(a, 1)) / max(np.percentile(a, 99.5) - np.percentile(a, 1), 1e-6)  # noqa: E731
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.8))
    unwarped = sitk.GetArrayFromImage(sitk.Resample(
        sitk.ReadImage(str(SAMPLE / "atlas_image.nii.gz")), sitk.ReadImage(str(scan_file)), sitk.Transform(), sitk.sitkLinear, 0.0))
    grey(axes[0], np.where(tiles, norm(scan[k]), norm(unwarped[k])))
    axes[0].set_title("scan / atlas before warping", fontsize=9)
    grey(axes[1], np.where(tiles, norm(scan[k]), norm(warped[k])))
    axes[1].set_title("scan / atlas warped onto it", fontsize=9)
    fig.savefig(FIGURES / "warped_atlas_checkerboard.png", dpi=130, bbox_inches="tight")
    plt.close(fig)

    if result.prompt_mask is not None:
        prompt = sc.segmentation_to_label_array(result.prompt_mask, result.scan)
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        grey(ax, scan[k])
        ax.contour(prompt[k] > 0, levels=[0.5], colors="cyan", linewidths=1.0, origin="lower")
        ax.set_title("prompt mask (hidden by default)", fontsize=9)
        fig.savefig(FIGURES / "prompt_mask.png", dpi=130, bbox_inches="tight")
        plt.close(fig)

    progress = [e for e in events if e.get("event") == "progress"]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    for stage in dict.fromkeys(e["stage"] for e in progress):
        points = [e for e in progress if e["stage"] == stage and e.get("losses")]
        for name in dict.fromkeys(n for e in points for n in e["losses"]):
            ax.plot([e["step"] for e in points if name in e["losses"]], [e["losses"][name] for e in points if name in e["losses"]],
                    label=f"{stage}: {name}")
        dice = [e for e in points if e.get("dice") is not None]
        if dice:
            ax.plot([e["step"] for e in dice], [e["dice"] for e in dice], "--", label=f"{stage}: Dice on pseudo labels")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.set_title("training progress as reported to the module (progress.jsonl)", fontsize=9)
    fig.savefig(FIGURES / "training_progress.png", dpi=130, bbox_inches="tight")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.2))
    grey(axes[0], scan[k])
    show_labels(axes[0], segmentation[k], labels)
    axes[0].set_title("segmentation named and coloured like the atlas", fontsize=9)
    grey(axes[1], scan[k])
    draw_grid(axes[1], result, k)
    show_labels(axes[1], segmentation[k], labels, alpha=0.25)
    axes[1].set_title("atlas-to-scan deformation (grid)", fontsize=9)
    (REPO / "Resources" / "Screenshots").mkdir(parents=True, exist_ok=True)
    fig.savefig(REPO / "Resources" / "Screenshots" / "RRLMedSAM_results.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig = plt.figure(figsize=(1.28, 1.28), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    grey(ax, scan[k])
    show_labels(ax, segmentation[k], labels, alpha=0.7)
    draw_grid(ax, result, k, step=6)
    for path in (REPO / "Resources" / "Icons" / "RRLMedSAM.png", REPO / "RRLMedSAM" / "Resources" / "Icons" / "RRLMedSAM.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, transparent=True)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-folder", type=Path, default=REPO / "build" / "user_guide_run")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "fast", "standard", "full"])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    args = parser.parse_args()

    scene = new_scene()
    atlas = sc.read_volume(scene, SAMPLE / "atlas_image.nii.gz", "Sample atlas")
    atlas_segmentation = sc.labelmap_file_to_segmentation(
        SAMPLE / "atlas_label.nii.gz", sc.read_label_table(SAMPLE / "labels.csv"), atlas, "Sample atlas segmentation"
    )
    scans = [sc.read_volume(scene, path, path.name.split(".")[0]) for path in sorted((SAMPLE / "images").glob("*.nii.gz"))]
    logic = RRLMedSAMLogic(scene, command=lambda: [sys.executable, "-m", "RRLMedSAMLib"])
    progress_file = logic.model_dir(args.run_folder) / "progress.jsonl"
    if not (logic.model_dir(args.run_folder) / "model.safetensors").exists():
        print(f"training ({args.preset}, {args.device}) into {args.run_folder}", flush=True)
        run_engine(logic.train_command(args.run_folder, atlas, atlas_segmentation, scans, preset=args.preset, device=args.device))
    events = [json.loads(line) for line in progress_file.read_text().splitlines()] if progress_file.exists() else []
    print("segmenting the first scan", flush=True)
    command, job = logic.segment_command(args.run_folder, scans[:1], device=args.device)
    run_engine(command)
    result = logic.load_results(job, args.run_folder, atlas_volume=atlas, field_overlay="jacobian")[0]
    figures(result, sorted((SAMPLE / "images").glob("*.nii.gz"))[0], events)
    print(f"figures written to {FIGURES}")


if __name__ == "__main__":
    main()
