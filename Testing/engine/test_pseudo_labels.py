"""Training's pseudo labels: through the fine registration stage (``fine_pseudo_labels``) or the working grid alone, with the safety check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from tiny_case import make_case, train_args

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.geometry.affine import affine_from_dict
from RRLMedSAMLib.geometry.working_grid import resample_to_grid
from RRLMedSAMLib.inference.segmenter import open_segmenter
from RRLMedSAMLib.io.label_table import labels_to_classes
from RRLMedSAMLib.io.volumes import read_label
from RRLMedSAMLib.registration.register import REGISTRATION_DEFORMABLE, register_on_grid
from RRLMedSAMLib.registration.spatial_transformer import warp_classes
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.run.presets import Preset
from RRLMedSAMLib.training.prepare import load_prepared
from RRLMedSAMLib.training.pseudo_labels import (
    PseudoLabeller,
    fallback_summary,
    load_pseudo_labels,
    progress_message,
    pseudo_label_registrations,
    save_pseudo_labels,
)

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


def test_a_pseudo_label_whose_registration_loses_to_the_affine_start_falls_back_and_is_recorded(
    tiny_run: Path, tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    """The working-grid pseudo labels pass the same safety check as ``segment``; the file and the card say what made each."""
    config = json.loads((tiny_run / "config.json").read_text())
    data = load_prepared(tiny_run / "cache" / "prepared.safetensors")
    segmenter = open_segmenter(tiny_run, torch.device("cpu"))
    assert segmenter.registration is not None
    network = segmenter.registration.network
    labeller = PseudoLabeller(RunFolder(tiny_run), config, data, Preset.from_dict(config["preset"]), torch.device("cpu"), network)
    assert not labeller.fine
    sane = labeller(0)
    assert sane.registration == REGISTRATION_DEFORMABLE and not sane.fell_back
    assert progress_message("scan_a", sane) == "pseudo label of scan_a"

    with torch.no_grad():  # the flow head now pushes every voxel far along one axis
        network.decoder.flow.bias.copy_(torch.tensor([6.0, -6.0, 6.0]))
    broken = labeller(0)
    assert broken.fell_back and "lost to" in broken.registration and broken.registration in progress_message("scan_a", broken)
    truth = labels_to_classes(resample_to_grid(read_label(tiny_case["scan_a_label"]), data.grid,
                                               affine_from_dict(data.affines[0]), is_label=True), data.label_ids)
    assert _mean_dice(broken.classes, truth, data.num_classes) > 0.5
    unchecked = warp_classes(data.atlas_classes, data.num_classes,
                             register_on_grid(network, data.atlas_image, data.scans[0], labeller.preset, torch.device("cpu")))
    assert _mean_dice(unchecked, truth, data.num_classes) < _mean_dice(broken.classes, truth, data.num_classes)

    path = tmp_path / "pseudo_labels.safetensors"
    save_pseudo_labels(path, [broken, sane])
    loaded = load_pseudo_labels(path)
    assert [label.registration for label in loaded] == [broken.registration, sane.registration]
    assert np.array_equal(loaded[0].classes, broken.classes) and np.array_equal(loaded[1].classes, sane.classes)
    assert fallback_summary(pseudo_label_registrations(path), ["scan_a", "scan_b"]) == {"scans": 2, "fell_back": {"scan_a": broken.registration}}
    old_format = tmp_path / "old.safetensors"  # a file written before the record existed
    save_file({"classes": np.stack([sane.classes])}, str(old_format))
    assert fallback_summary(pseudo_label_registrations(old_format), ["scan_a"]) == {"scans": 1, "fell_back": {}}

    card = json.loads((tiny_run / "model_card.json").read_text())  # the finished tiny training recorded its own
    assert card["pseudo_labels"]["scans"] == len(data.scans)
    assert set(card["pseudo_labels"]["fell_back"]) <= set(data.scan_names)
