"""Bad input: one clear message, exit code 2, no traceback, no output left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_case import engine, train_args

from RRLMedSAMLib.cli import main


def _write(path: Path, array: np.ndarray) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    return path


def _expect_error(capsys: pytest.CaptureFixture, argv: list[str], fragment: str, out: Path | None = None) -> None:
    assert main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert "Traceback" not in error[0]
    assert fragment.lower() in error[0].lower(), error[0]
    if out is not None:
        assert not out.exists(), f"{out} was left behind"


def _train(case: dict[str, Path], out: Path, **replace: Path) -> list[str]:
    return train_args(case | replace, out)


@pytest.mark.parametrize(
    "role, make, fragment",
    [
        ("atlas_image", lambda d: _write(d / "flat.nii.gz", np.zeros((8, 9), np.float32)), "2 dimensions"),
        ("atlas_image", lambda d: _write(d / "series.nii.gz", np.zeros((3, 4, 5, 6), np.float32)), "4 dimensions"),
        ("scan_a", lambda d: _write(d / "nan.mha", np.where(np.arange(120).reshape(4, 5, 6) == 7, np.nan, 1.0).astype(np.float32)), "nan"),
        ("atlas_label", lambda d: d / "missing.nii.gz", "not found"),
        ("scan_b", lambda d: (d / "garbage.nii.gz").write_bytes(b"not an image at all") and d / "garbage.nii.gz", "cannot read"),
    ],
)
def test_unusable_volumes(
    tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, role: str, make, fragment: str
) -> None:
    out = tmp_path / "run"
    _expect_error(capsys, _train(tiny_case, out, **{role: make(tmp_path)}), fragment, out)


def _atlas_label_like(case: dict[str, Path], tmp_path: Path, transform) -> Path:
    label = sitk.ReadImage(str(case["atlas_label"]))
    array = transform(sitk.GetArrayFromImage(label))
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(label)
    path = tmp_path / "label.nii.gz"
    sitk.WriteImage(result, str(path))
    return path


def test_empty_atlas_label(tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    label = _atlas_label_like(tiny_case, tmp_path, np.zeros_like)
    _expect_error(capsys, _train(tiny_case, tmp_path / "run", atlas_label=label), "empty", tmp_path / "run")


def test_non_integer_label_values(tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    label = _atlas_label_like(tiny_case, tmp_path, lambda a: a.astype(np.float32) * 0.5)
    _expect_error(capsys, _train(tiny_case, tmp_path / "run", atlas_label=label), "non-integer", tmp_path / "run")


def test_atlas_image_and_label_on_different_grids(tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    label = sitk.ReadImage(str(tiny_case["atlas_label"]))
    label.SetSpacing([s * 1.5 for s in label.GetSpacing()])
    path = tmp_path / "shifted_label.nii.gz"
    sitk.WriteImage(label, str(path))
    _expect_error(capsys, _train(tiny_case, tmp_path / "run", atlas_label=path), "not on the atlas image's grid", tmp_path / "run")


def test_unwritable_output_folder(tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    _expect_error(capsys, _train(tiny_case, blocker / "run"), "not writable")


def test_incompatible_model_folder(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = tmp_path / "old_run"
    shutil.copytree(tiny_run, old)
    config = json.loads((old / "config.json").read_text())
    config["format_version"] = 0
    (old / "config.json").write_text(json.dumps(config))
    out = tmp_path / "seg"
    _expect_error(capsys, ["segment", "--model", old, "--image", tiny_case["scan_a"], "--out", out], "incompatible", out)


def test_segment_refuses_a_folder_that_is_not_a_run(tiny_case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "seg"
    _expect_error(capsys, ["segment", "--model", tmp_path, "--image", tiny_case["scan_a"], "--out", out], "not a training run", out)


def test_negative_step_counts_are_refused(tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seg = tmp_path / "seg"
    _expect_error(capsys, ["segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--out", seg, "--refinement-steps", "-1"],
                  "--refinement-steps must be 0 or more", seg)
    run = tmp_path / "run"
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "refinement_grid_size=-5"], "--set refinement_grid_size must be 0 or more", run)


@pytest.mark.parametrize("sigma", ["-1", "nan", "inf", "automatic"])
def test_bad_label_smoothing_is_refused(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, sigma: str
) -> None:
    seg = tmp_path / "seg"
    _expect_error(capsys, ["segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--out", seg, "--label-smoothing-mm", sigma],
                  "--label-smoothing-mm must be 0 or more", seg)


@pytest.mark.parametrize("members", ["0", "-3"])
def test_bad_registration_ensemble_is_refused(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, members: str
) -> None:
    seg = tmp_path / "seg"
    _expect_error(capsys, ["segment", "--model", tiny_run, "--image", tiny_case["scan_a"], "--out", seg,
                           "--registration-ensemble", members], "--registration-ensemble must be 1 or more", seg)


def test_bad_scan_leaves_earlier_results_untouched(
    tiny_case: dict[str, Path], tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(tiny_run), "--image", str(tiny_case["scan_a"]), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    bad = _write(tmp_path / "flat.nii.gz", np.zeros((8, 9), np.float32))
    _expect_error(capsys, ["segment", "--model", tiny_run, "--image", tiny_case["scan_a"], bad, "--out", out], "2 dimensions")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_real_process_exits_2_without_traceback(tiny_case: dict[str, Path], tmp_path: Path) -> None:
    result = engine(*_train(tiny_case, tmp_path / "run", atlas_image=tmp_path / "absent.nii.gz"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert not (tmp_path / "run").exists()


def test_set_refuses_unknown_keys_flags_of_their_own_and_bad_values(tiny_case: dict[str, Path], tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "registraton_steps=5"], "unknown setting; settable are", run)
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "teacher=tiny"], "use its own flag --teacher", run)
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "atlas_prior=maybe"], "expected on or off", run)
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "ema_alpha=high"], "expected a value like 0.99", run)
    _expect_error(capsys, [*_train(tiny_case, run), "--set", "joint_steps"], "--set takes KEY=VALUE", run)
