"""Training's pseudo labels through the fine registration stage (``fine_pseudo_labels``) against the working grid alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tiny_case import make_case, train_args

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.geometry.affine import affine_from_dict
from RRLMedSAMLib.geometry.working_grid import resample_to_grid
from RRLMedSAMLib.io.label_table import labels_to_classes
from RRLMedSAMLib.io.volumes import read_label
from RRLMedSAMLib.training.prepare import load_prepared

STEPS = ("--method", "plain", "--set", "segmentation_steps=2")


def _mean_dice(pseudo: np.ndarray, truth: np.ndarray, classes: int) -> float:
    scores = []
    for k in range(1, classes):
        a, b = pseudo == k, truth == k
        scores.append(2.0 * np.sum(a & b) / max(a.sum() + b.sum(), 1))
    return float(np.mean(scores))


def test_fine_pseudo_labels_come_from_the_fine_stage_and_are_recorded(tmp_path: Path) -> None:
    case = make_case(tmp_path / "case")
    working = tmp_path / "working"
    assert main(train_args(case, working, *STEPS)) == 0
    fine = tmp_path / "fine"
    (fine / "cache").mkdir(parents=True)  # the same pre-alignment, so the same registration network is trained
    shutil.copy2(working / "cache" / "prepared.safetensors", fine / "cache")
    assert main(train_args(case, fine, *STEPS, "--set", "fine_pseudo_labels=on")) == 0  # tiny has the fine stage on

    config = json.loads((fine / "config.json").read_text())
    assert config["preset"]["fine_pseudo_labels"] is True
    starts = [json.loads(line) for line in (fine / "progress.jsonl").read_text().splitlines()]
    message = next(e["message"] for e in starts if e["stage"] == "pseudo_labels" and e["event"] == "stage_start")
    assert "fine registration stage" in message

    data = load_prepared(fine / "cache" / "prepared.safetensors")
    labels = {name: load_file(str(run / "cache" / "pseudo_labels.safetensors"))["classes"] for name, run in
              (("working", working), ("fine", fine))}
    assert labels["fine"].shape == labels["working"].shape == data.scans.shape
    assert not np.array_equal(labels["fine"], labels["working"])
    for index, role in enumerate(("scan_a", "scan_b")):
        truth = labels_to_classes(resample_to_grid(read_label(case[f"{role}_label"]), data.grid,
                                                   affine_from_dict(data.affines[index]), is_label=True), data.label_ids)
        dice = {name: _mean_dice(value[index], truth, data.num_classes) for name, value in labels.items()}
        assert set(np.unique(labels["fine"][index])) == set(range(data.num_classes))
        # the field comes back onto the working grid in the right frame: a flipped axis or a field in
        # the wrong grid's voxels would put the labels far off the scan's own structures
        assert dice["fine"] > 0.8, dice
        assert _mean_dice(labels["fine"][index], labels["working"][index], data.num_classes) > 0.8


def test_fine_pseudo_labels_without_the_fine_stage_are_refused_before_anything_is_written(
    tmp_path: Path, capsys,
) -> None:
    case = make_case(tmp_path / "case")
    argv = train_args(case, tmp_path / "run", *STEPS, "--set", "fine_pseudo_labels=on", "--set", "refinement_steps=0")
    assert main(argv) == 2
    assert "--set refinement_steps=N" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
