"""``rrlmedsam demo``: the one-shot flow on the embedded sample, from training to a report.

Trains on the sample atlas and its unlabelled scans, segments those scans, scores segmentation
and registration-only results against the scans' labels (which training never sees), and writes
``report/report.md`` with the Dice tables and figures. Re-running continues an interrupted demo.

With the ``fast`` preset the demo shortens three stages (:data:`DEMO_SCHEDULE`) so that the whole
job fits in 10 minutes on 2 CPU cores; every other setting is the preset's.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import SimpleITK as sitk

from RRLMedSAMLib.commands.segment import segment_scans
from RRLMedSAMLib.inference.segment_options import SegmentOptions
from RRLMedSAMLib.inference.segmenter import open_segmenter
from RRLMedSAMLib.io.atomic import write_text_atomic
from RRLMedSAMLib.io.label_table import read_label_table
from RRLMedSAMLib.io.volumes import volume_stem
from RRLMedSAMLib.metrics.deformation import physical_to_array_displacement
from RRLMedSAMLib.metrics.evaluation import evaluate_pairs, metrics_markdown, write_metrics
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.report.figures import plot_atlas_scan_segmentation, plot_deformation_grid, plot_loss_curves
from RRLMedSAMLib.report.report import method_statement
from RRLMedSAMLib.resources import sample_data_dir
from RRLMedSAMLib.run.device import DEVICE_CHOICES, resolve_device
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.methods import METHODS
from RRLMedSAMLib.run.presets import PRESETS
from RRLMedSAMLib.run.rrl_settings import TEACHER_CHOICES
from RRLMedSAMLib.training.trainer import TrainRequest, train

#: Stage lengths of the demo with the ``fast`` preset (the preset's own: 200 / 60 / 120 steps).
DEMO_SCHEDULE = {"registration_steps": 120, "pretrain_steps": 20, "joint_steps": 40}

OVERLAY_CAPTION = (
    "Rows: the atlas with its label, the scan, the scan with the final segmentation; columns: axial, coronal and "
    "sagittal slices (radiological view: the patient's left is on the right; letters give the patient directions). "
    "The atlas is cut where the registration maps the centre of the scan's slices, so all rows show the same "
    "anatomical level. Structure colours are the legend's (chosen to stand out from the anatomy, not the label "
    "table's Slicer colours)."
)
DEFORMATION_CAPTION = (
    "A regular grid on the atlas drawn where the registration puts it on the scan (affine pre-alignment and "
    "deformation together): straight, evenly spaced lines mean no in-plane deformation. Line colour is the "
    "in-plane displacement in mm (colour bar)."
)
LOSS_CAPTION = (
    "One panel per training stage: each loss against the training step; the dashed line (right axis) is the Dice "
    "of the segmentation network's prediction on the pseudo labels (the atlas label warped onto the scans) of the "
    "training batch, not a score against the scans' true labels."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("rrlmedsam-demo"), help="demo folder (default: ./rrlmedsam-demo)")
    parser.add_argument("--preset", default="fast", choices=list(PRESETS), help="training preset (default: fast)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--method", choices=list(METHODS), help="method to train (default: rrl)")
    parser.add_argument("--teacher", choices=TEACHER_CHOICES,
                        help="SAM teacher (default: auto = official vit_b if in the weights folder, else none)")


def run(args: argparse.Namespace) -> int:
    sample = sample_data_dir()
    images = sorted((sample / "images").glob("*.nii.gz"))
    run_folder = RunFolder(args.out / "run")
    request = TrainRequest(
        atlas_image=sample / "atlas_image.nii.gz", atlas_label=sample / "atlas_label.nii.gz", images=images,
        out=run_folder.root, preset=args.preset, device=args.device, seed=args.seed,
        labels_table=sample / "labels.csv", resume=run_folder.config.exists(), method=args.method, teacher=args.teacher,
        **_demo_schedule(args.preset),
    )
    progress = ProgressReporter(run_folder.progress)
    if not run_folder.model.exists():
        train(request, progress)
    segmenter = open_segmenter(run_folder.root, resolve_device(args.device), SegmentOptions())
    results = args.out / "segmentations"
    segment_scans(segmenter, images, results, progress)
    report = write_demo_report(args.out, sample, images, results, run_folder, progress)
    progress.done(f"report written to {report}")
    print(f"Demo finished. Report: {report}")
    return 0


def _demo_schedule(preset: str) -> dict:
    """``TrainRequest`` overrides of the demo's shortened stages (``fast`` only)."""
    if preset != "fast":
        return {}
    return {"overrides": {"registration_steps": DEMO_SCHEDULE["registration_steps"]},
            "rrl": {k: v for k, v in DEMO_SCHEDULE.items() if k != "registration_steps"}}


def write_demo_report(out: Path, sample: Path, images: list[Path], results: Path, run: RunFolder,
                      progress: ProgressReporter | None = None) -> Path:
    """Score segmentation and registration-only results; write figures and ``report.md``.

    ``progress`` gets a ``report`` stage: one step for the scores, one per scan's figure, one for the others.
    """
    report = out / "report"
    progress = progress or ProgressReporter(None, stream=io.StringIO(), show_bar=False)
    progress.start_stage("report", len(images) + 2, "scoring the results and drawing the report's figures")
    table = read_label_table(sample / "labels.csv")
    names = [volume_stem(p) for p in images]
    truths = [sample / "labels" / f"{n}.nii.gz" for n in names]
    segmentation = evaluate_pairs([(n, results / n / "segmentation.nii.gz", t) for n, t in zip(names, truths)])
    registration = evaluate_pairs([(n, results / n / "warped_atlas_label.nii.gz", t) for n, t in zip(names, truths)])
    seg_summary = write_metrics(segmentation, report / "segmentation", table)
    reg_summary = write_metrics(registration, report / "registration_only", table)
    prompt_summary = None
    if all((results / n / "prompt_mask.nii.gz").exists() for n in names):
        prompts = evaluate_pairs([(n, results / n / "prompt_mask.nii.gz", t) for n, t in zip(names, truths)])
        prompt_summary = write_metrics(prompts, report / "prompt_mask", table)
    card = json.loads(run.model_card.read_text(encoding="utf-8"))
    progress.update(1, message="scores written")

    atlas_image = sitk.ReadImage(str(sample / "atlas_image.nii.gz"))
    atlas_label = sitk.ReadImage(str(sample / "atlas_label.nii.gz"))
    figures = []
    for name, image in zip(names, images):
        path = report / f"overlay_{name}.png"
        plot_atlas_scan_segmentation(
            atlas_image, atlas_label, sitk.ReadImage(str(image)), sitk.ReadImage(str(results / name / "segmentation.nii.gz")),
            table, path, scan_to_atlas=_registration(results / name / "deformation.nrrd"),
            title=f"Atlas, {name}, segmentation",
        )
        figures.append((f"Atlas, scan and segmentation: {name}", path.name, OVERLAY_CAPTION))
        progress.update(len(figures) + 1, message=f"figure of {name}")
    first = names[0]
    scan = sitk.ReadImage(str(images[0]))
    field = sitk.GetArrayFromImage(sitk.ReadImage(str(results / first / "deformation.nrrd")))
    grid_path = report / f"deformation_{first}.png"
    plot_deformation_grid(
        sitk.GetArrayFromImage(scan), scan.GetSpacing()[::-1], physical_to_array_displacement(field, scan.GetDirection()),
        grid_path, units="mm", direction=scan.GetDirection(), title=f"Atlas->scan deformation over {first}",
    )
    figures.append((f"Deformation grid over {first}", grid_path.name, DEFORMATION_CAPTION))
    loss_path = report / "loss_curves.png"
    plot_loss_curves(run.progress, loss_path, title="Training losses")
    figures.append(("Training losses", loss_path.name, LOSS_CAPTION))
    progress.update(len(images) + 2, message="deformation and loss figures")

    lines = [
        "# RRL-MedSAM demo report", "",
        f"One annotated atlas, {len(images)} unlabelled scans (their labels are used only for scoring here).",
        "Sample data: see Resources/SampleData/NOTICE (real anatomy, synthetic contrast).", "",
        method_statement(card), "",
        f"Mean Dice, final segmentation: **{_fmt(seg_summary['mean_dice'])}**; registration only (atlas label warped): "
        f"**{_fmt(reg_summary['mean_dice'])}**"
        + (f"; general branch's prompt mask: **{_fmt(prompt_summary['mean_dice'])}**." if prompt_summary else "."),
        "The final segmentation is smoothed structure by structure until it is no rougher than the atlas label "
        "(`segment --label-smoothing-mm auto`, the default), keeping each structure's volume.", "",
        "## Final segmentation", "", metrics_markdown(seg_summary),
        "## Registration only", "", metrics_markdown(reg_summary),
    ]
    if prompt_summary:
        lines += ["## Prompt mask (general branch)", "", metrics_markdown(prompt_summary)]
    lines += [
        "## Figures", "",
    ]
    lines += [f"### {caption}\n\n{text}\n\n![{caption}]({file})\n" for caption, file, text in figures]
    path = report / "report.md"
    write_text_atomic(path, "\n".join(lines))
    progress.end_stage()
    return path


def _registration(field_path: Path) -> sitk.Transform:
    """The scan->atlas mapping of a result's ``deformation.nrrd`` (scan point x -> atlas point x + u(x))."""
    field = sitk.Cast(sitk.ReadImage(str(field_path)), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(field)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
