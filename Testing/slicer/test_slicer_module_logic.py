"""Weights manager, install logic, state machine and engine command lines (no engine run, no Qt)."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
from slicer_test_helpers import MODULE_DIR, REPO_ROOT, add_volume, oblique_ijk_to_ras, slicer

from RRLMedSAMSlicerLib import WeightsLogic as wl  # noqa: E402
from RRLMedSAMSlicerLib.RunState import RunStateMachine, State  # noqa: E402

# ---------------------------------------------------------------- weights


@pytest.fixture
def manifest(tmp_path):
    payload = b"pretend checkpoint"
    path = tmp_path / "sam_checkpoints.json"
    path.write_text(json.dumps({"manifest_version": 1, "checkpoints": [
        {"name": "sam_vit_b", "filename": "sam_vit_b_01ec64.pth", "sha256": hashlib.sha256(payload).hexdigest(),
         "url": "https://example.org/b.pth", "size_bytes": len(payload)},
        {"name": "medsam_vit_b", "filename": "medsam_vit_b.pth", "sha256": None, "url": "", "size_bytes": None},
    ]}))
    return wl.load_manifest(path), payload


def test_weights_folder_precedence(tmp_path):
    assert wl.resolve_weights_dir("/data/w", {wl.WEIGHTS_ENV_VAR: "/env/w"}) == tmp_path.__class__("/data/w")
    assert wl.resolve_weights_dir("", {wl.WEIGHTS_ENV_VAR: "/env/w"}).as_posix() == "/env/w"
    assert wl.resolve_weights_dir(None, {}).as_posix().endswith(".cache/rrlmedsam/weights")


def test_import_checks_sha256_and_copies_under_the_manifest_name(manifest, tmp_path):
    entries, payload = manifest
    download = tmp_path / "downloaded.pth"
    download.write_bytes(payload)
    fractions = []
    entry, target = wl.import_checkpoint(download, entries, tmp_path / "cache", progress=lambda f: fractions.append(f) or True)
    assert entry.name == "sam_vit_b" and target.read_bytes() == payload and fractions[-1] == 1.0
    assert wl.checkpoint_status(entries, tmp_path / "cache") == {"sam_vit_b": "present", "medsam_vit_b": "missing"}
    assert not list((tmp_path / "cache").glob("*.part"))

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(payload[:-1])
    with pytest.raises(wl.WeightsError, match="not a known checkpoint"):
        wl.import_checkpoint(corrupt, entries, tmp_path / "cache")
    with pytest.raises(wl.WeightsError, match="cancelled"):
        wl.import_checkpoint(download, entries, tmp_path / "cache", progress=lambda f: False)


def test_weights_are_never_written_into_the_install_folder(manifest, tmp_path):
    entries, payload = manifest
    download = tmp_path / "downloaded.pth"
    download.write_bytes(payload)
    with pytest.raises(wl.WeightsError, match="install folder"):
        wl.import_checkpoint(download, entries, MODULE_DIR / "weights", protected=[MODULE_DIR])
    assert not (MODULE_DIR / "weights").exists()


def test_repository_manifest_is_readable():
    path = REPO_ROOT / "Resources" / "models" / "sam_checkpoints.json"
    entries = wl.load_manifest(path)
    assert any(e.name == "sam_vit_b" and e.sha256 for e in entries)


# ---------------------------------------------------------------- state machine


def test_state_machine_allows_the_run_cycle_and_refuses_double_starts():
    seen = []
    machine = RunStateMachine(lambda old, new: seen.append(new))
    for state in (State.INSTALLING, State.TRAINING, State.CANCELLING, State.IDLE, State.SEGMENTING, State.FAILED, State.TRAINING, State.DONE):
        machine.go(state)
    assert seen[-1] == State.DONE and not machine.busy
    machine.go(State.SEGMENTING)
    assert machine.busy
    with pytest.raises(RuntimeError, match="segmenting to training"):
        machine.go(State.TRAINING)


# ---------------------------------------------------------------- command lines


@pytest.mark.skipif(slicer is None, reason="slicer-core wheel needed")
def test_train_and_segment_commands_follow_the_engine_contract(scene, tmp_path):
    from RRLMedSAMSlicerLib import SceneConversion as sc
    from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic

    geometry = oblique_ijk_to_ras()
    atlas = add_volume(scene, np.ones((4, 5, 6), np.float32), "atlas", geometry)
    labels = np.zeros((4, 5, 6), np.int16)
    labels[1:3, 1:3, 1:3] = 4
    label_node = add_volume(scene, labels, "l", geometry, labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
    scans = [add_volume(scene, np.ones((4, 5, 6), np.float32), name, geometry) for name in ("scan 1", "scan 1")]
    logic = RRLMedSAMLogic(scene, command=lambda: [sys.executable, "-m", "RRLMedSAMLib"])

    command = logic.train_command(tmp_path, atlas, segmentation, scans, preset="fast", device="mps", resume=True, seed=7)
    assert command[:4] == [sys.executable, "-m", "RRLMedSAMLib", "train"]
    options = {command[i]: command[i + 1] for i in range(4, len(command) - 1) if command[i].startswith("--")}
    assert options["--preset"] == "fast" and options["--device"] == "mps" and options["--seed"] == "7"
    assert options["--out"] == str(tmp_path / "model") and "--resume" in command
    images = command[command.index("--images") + 1: command.index("--out")]
    assert [p.split("/")[-1] for p in images] == ["scan_1.nrrd", "scan_1_2.nrrd"]
    assert sc.read_label_table(options["--atlas-labels-table"])[0].id == 4

    with pytest.raises(sc.SceneConversionError, match="press Train first"):
        logic.segment_command(tmp_path, scans)
    (tmp_path / "model").mkdir()
    command, job = logic.segment_command(tmp_path, scans, device="cuda")
    assert command[3] == "segment" and command[command.index("--device") + 1] == "cuda"
    assert list(job.scans) == ["scan_1", "scan_1_2"] and job.out_dir.parent.parent == tmp_path / "results"
    assert command[command.index("--label-smoothing-mm") + 1] == "auto"
    smoothed, _ = logic.segment_command(tmp_path, scans, label_smoothing_mm=2.5)
    assert smoothed[smoothed.index("--label-smoothing-mm") + 1] == "2.5"
    off, _ = logic.segment_command(tmp_path, scans, label_smoothing_mm=0.0)
    assert off[off.index("--label-smoothing-mm") + 1] == "0"
    assert command[command.index("--registration-ensemble") + 1] == "1"
    ensemble, _ = logic.segment_command(tmp_path, scans, registration_ensemble=9)
    assert ensemble[ensemble.index("--registration-ensemble") + 1] == "9"
    assert command[command.index("--volume-calibration") + 1] == "off"
    calibrated, _ = logic.segment_command(tmp_path, scans, volume_calibration=True)
    assert calibrated[calibrated.index("--volume-calibration") + 1] == "on"
    with pytest.raises(sc.SceneConversionError, match="at least one scan"):
        logic.train_command(tmp_path, atlas, segmentation, [])
    with pytest.raises(sc.SceneConversionError, match="also checked"):
        logic.train_command(tmp_path, atlas, segmentation, [atlas])
    with pytest.raises(ValueError, match="device"):
        logic.train_command(tmp_path, atlas, segmentation, scans, device="tpu")
