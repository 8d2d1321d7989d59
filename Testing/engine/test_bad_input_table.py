"""Every input the engine cannot use: exit 2, one line without a traceback, and the folder tree unchanged.

Each case builds its bad input in its own folder, snapshots the whole tree (names, sizes, mtimes),
runs the command and compares. Damaged and non-finite files are checked in NIfTI, NRRD and MHA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from guard_helpers import (
    bad_crc_copy,
    copy_run,
    phantom_with,
    quick_train_args,
    snapshot,
    truncated_copy,
    write_array,
    write_nifti_raw,
)
from tiny_case import make_case

from RRLMedSAMLib.cli import main


@dataclass
class World:
    root: Path
    case: dict[str, Path]
    run: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad_input_table")
    case = make_case(root / "case")
    assert main(quick_train_args(case, root / "run")) == 0
    return World(root, case, root / "run")


def _train(w: World, d: Path, **replace: Path) -> list[str]:
    return quick_train_args(w.case | replace, d / "run")


def _segment(w: World, d: Path, image: Path | None = None, model: Path | None = None, out: Path | None = None) -> list[str]:
    return ["segment", "--model", str(model or w.run), "--image", str(image or w.case["scan_a"]), "--out", str(out or d / "seg")]


def _run_copy(w: World, d: Path, keep_sha: bool = True) -> Path:
    run = copy_run(w.run, d / "model")
    if not keep_sha:
        card = json.loads((run / "model_card.json").read_text())
        del card["model_sha256"]
        (run / "model_card.json").write_text(json.dumps(card))
    return run


def _nifti_scan(w: World, d: Path, value: float, name: str = "bad.nii.gz") -> Path:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(w.case["scan_a"]))).astype(np.float32)
    array[3, 4, 5] = value
    return write_nifti_raw(d / name, array)


def _with_value(w: World, d: Path, name: str, value: float) -> Path:
    def change(array: np.ndarray) -> np.ndarray:
        array[2, 3, 4] = value
        return array
    return phantom_with(w.case, d, name, change)


def _negative_spacing_mha(w: World, d: Path) -> Path:
    path = write_array(d / "neg.mha", np.random.default_rng(0).random((20, 20, 20)).astype(np.float32))
    sitk.WriteImage(sitk.ReadImage(str(path)), str(path), False)
    text = path.read_bytes()
    head, _, tail = text.partition(b"ElementSpacing = 1 1 1")
    path.write_bytes(head + b"ElementSpacing = -1 1 1" + tail)
    return path


def _uncompressed_truncated(w: World, d: Path) -> Path:
    full = d / "full.nii"
    sitk.WriteImage(sitk.ReadImage(str(w.case["scan_a"])), str(full), False)
    return truncated_copy(full, d / "short.nii", 0.7)


def _binary(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _model_with(w: World, d: Path, change: Callable[[Path], None], keep_sha: bool = False) -> Path:
    run = _run_copy(w, d, keep_sha)
    change(run)
    return run


def _flip_last_byte(run: Path) -> None:
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (run / "model.safetensors").write_bytes(bytes(data))


def _more_labels(run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    config["label_ids"] = [*config["label_ids"], 99]
    (run / "config.json").write_text(json.dumps(config))


def _state(state: str) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        (run / "run_state.json").write_text(json.dumps({"state": state, "pid": 1, "host": "elsewhere",
                                                        "updated": "2026-01-01T00:00:00+00:00", "message": "stopped"}))
    return change


Build = Callable[[World, Path], list[str]]
CASES: list[tuple[str, Build, str]] = [
    # damaged files
    ("truncated .nii.gz atlas", lambda w, d: _train(w, d, atlas_image=truncated_copy(w.case["atlas_image"], d / "t.nii.gz")),
     "truncated"),
    ("gzip CRC wrong", lambda w, d: _train(w, d, scan_b=bad_crc_copy(w.case["scan_b"], d / "crc.nii.gz")), "damaged gzip"),
    ("truncated .nii", lambda w, d: _train(w, d, scan_a=_uncompressed_truncated(w, d)), "truncated"),
    ("truncated .nrrd", lambda w, d: _train(w, d, scan_a=truncated_copy(
        write_array(d / "full.nrrd", np.random.default_rng(1).random((24, 24, 24)).astype(np.float32)), d / "t.nrrd")),
     "cannot read"),
    ("truncated .mha", lambda w, d: _train(w, d, scan_a=truncated_copy(
        write_array(d / "full.mha", np.random.default_rng(1).random((24, 24, 24)).astype(np.float32)), d / "t.mha")),
     "cannot read"),
    # non-finite voxels, every format
    ("NaN in NIfTI", lambda w, d: _train(w, d, scan_a=_nifti_scan(w, d, np.nan)), "nan or infinite"),
    ("+inf in NIfTI atlas", lambda w, d: _train(w, d, atlas_image=_nifti_scan(w, d, np.inf)), "nan or infinite"),
    ("-inf in NRRD", lambda w, d: _train(w, d, scan_b=_with_value(w, d, "ninf.nrrd", -np.inf)), "nan or infinite"),
    ("NaN in MHA", lambda w, d: _train(w, d, scan_b=_with_value(w, d, "nan.mha", np.nan)), "nan or infinite"),
    # spacing
    ("zero pixdim in NIfTI", lambda w, d: _train(w, d, scan_a=write_nifti_raw(
        d / "zero.nii.gz", np.random.default_rng(2).random((20, 20, 20)).astype(np.float32), (0.0, 1.0, 1.0))),
     "zero or negative"),
    ("negative spacing in MHA", lambda w, d: _train(w, d, scan_a=_negative_spacing_mha(w, d)), "zero or negative"),
    # unusable content
    ("constant scan", lambda w, d: _train(w, d, scan_a=phantom_with(w.case, d, "c.nii.gz", lambda a: a * 0 + 0.5)), "constant"),
    ("all-zero atlas image", lambda w, d: _train(w, d, atlas_image=phantom_with(w.case, d, "z.nii.gz", np.zeros_like,
                                                                                 "atlas_image")),
     "constant"),
    ("4x4x4 scan", lambda w, d: _train(w, d, scan_a=write_array(d / "small.nii.gz", np.random.default_rng(3).random(
        (4, 4, 4)).astype(np.float32))), "at least 8 voxels"),
    ("anisotropic scan at train", lambda w, d: _train(w, d, scan_a=write_array(d / "thin.nii.gz", np.random.default_rng(4).random(
        (40, 40, 40)).astype(np.float32), (0.1, 0.1, 5.0))), "anisotropic"),
    ("bad scan, existing empty --out", lambda w, d: quick_train_args(w.case | {"scan_a": d / "absent.nii.gz"},
                                                                      _existing_out(d)), "not found"),
    ("binary label table", lambda w, d: [*_train(w, d), "--atlas-labels-table", str(_binary(d / "labels.csv"))], "not utf-8"),
    # run folder states
    ("resume a finished run", lambda w, d: quick_train_args(w.case, w.run, "--resume"), "finished"),
    ("train into a finished run", lambda w, d: quick_train_args(w.case, w.run), "finished training"),
    # segment: model files
    ("model checksum mismatch", lambda w, d: _segment(w, d, model=_model_with(w, d, _flip_last_byte, keep_sha=True)), "sha256"),
    ("truncated model.safetensors", lambda w, d: _segment(w, d, model=_model_with(
        w, d, lambda r: truncated_copy(r / "model.safetensors", r / "model.safetensors"))), "not an intact safetensors"),
    ("pickle as model.safetensors", lambda w, d: _segment(w, d, model=_model_with(
        w, d, lambda r: (r / "model.safetensors").write_bytes(b"\x80\x04\x95" + bytes(200)))), "not an intact safetensors"),
    ("model of another label count", lambda w, d: _segment(w, d, model=_model_with(w, d, _more_labels)), "number of labels"),
    ("binary labels.csv in the run", lambda w, d: _segment(w, d, model=_model_with(
        w, d, lambda r: _binary(r / "labels.csv"), keep_sha=True)), "not utf-8"),
    ("interrupted run", lambda w, d: _segment(w, d, model=_model_with(w, d, _state("interrupted"), keep_sha=True)),
     "has not finished"),
    # segment: scans and output folder
    ("anisotropic scan at segment", lambda w, d: _segment(w, d, image=write_array(d / "thin.nii.gz", np.random.default_rng(4).random(
        (40, 40, 40)).astype(np.float32), (0.1, 0.1, 5.0))), "anisotropic"),
    ("truncated scan at segment", lambda w, d: _segment(w, d, image=truncated_copy(w.case["scan_b"], d / "t.nii.gz")), "truncated"),
    ("constant scan at segment", lambda w, d: _segment(w, d, image=phantom_with(w.case, d, "c.nii.gz", np.zeros_like)),
     "constant"),
    ("--out inside the model", lambda w, d: _segment(w, d, out=w.run / "results"), "inside the model folder"),
    ("--out is the model, scan named atlas", lambda w, d: _segment(w, d, image=phantom_with(
        w.case, d, "atlas.nii.gz", lambda a: a), out=w.run), "inside the model folder"),
    ("--out is a file", lambda w, d: _segment(w, d, out=_binary(d / "out.bin")), "not a folder"),
    ("scan folder exists", lambda w, d: _segment(w, d, out=_existing_result(d)), "--overwrite"),
    # evaluate
    ("evaluate truncated prediction", lambda w, d: ["evaluate", "--pred", str(truncated_copy(
        w.case["scan_a_label"], d / "pred.nii.gz")), "--truth", str(w.case["scan_a_label"])], "truncated"),
    ("evaluate NaN truth", lambda w, d: ["evaluate", "--pred", str(w.case["scan_a_label"]), "--truth", str(_nifti_scan(
        w, d, np.nan, "truth.nii.gz"))], "nan"),
    ("evaluate binary label table", lambda w, d: ["evaluate", "--pred", str(w.case["scan_a_label"]), "--truth", str(
        w.case["scan_a_label"]), "--out", str(d / "m"), "--labels", str(_binary(d / "t.csv"))], "not utf-8"),
]


def _existing_out(d: Path) -> Path:
    """An existing, empty folder for ``--out``."""
    (d / "existing").mkdir()
    return d / "existing"


def _existing_result(d: Path) -> Path:
    folder = d / "seg" / "scan_a_image"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    return d / "seg"


@pytest.mark.parametrize("name, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    world: World, capsys: pytest.CaptureFixture, name: str, build: Build, fragment: str
) -> None:
    folder = world.root / "cases" / name.replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True)
    argv = build(world, folder)
    before = snapshot(world.root)
    capsys.readouterr()
    assert main(argv) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(error) == 1, error
    assert "Traceback" not in error[0]
    assert fragment.lower() in error[0].lower(), error[0]
    assert snapshot(world.root) == before


def test_an_unexpected_error_is_one_line_with_a_log_of_the_traceback(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import RRLMedSAMLib.commands.evaluate as evaluate

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(evaluate, "evaluate_pairs", broken)
    monkeypatch.setenv("RRLMEDSAM_LOG_DIR", str(tmp_path / "logs"))
    assert main(["evaluate", "--pred", str(world.case["scan_a_label"]), "--truth", str(world.case["scan_a_label"])]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(error) == 1 and "Traceback" not in error[0] and "internal error" in error[0], error
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in error[0]
    assert "Traceback" in logs[0].read_text() and "ZeroDivisionError: a bug" in logs[0].read_text()


def test_a_stopped_segment_speaks_of_segmentation_and_leaves_nothing(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = tmp_path / "stop"
    stop.write_text("")
    monkeypatch.setenv("RRLMEDSAM_STOP_FILE", str(stop))
    assert main(_segment(world, tmp_path)) == 130
    error = capsys.readouterr().err.strip()
    assert "segmentation stopped" in error and "--resume" not in error
    assert not (tmp_path / "seg").exists() and stop.exists()
