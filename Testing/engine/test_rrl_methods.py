"""Every ablation and AutoSAM head trains and segments through the same commands (in-process, tiny
teacher, a few steps each); mutual-EMA really acts in stage 2; a missing named teacher is a clean error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from tiny_case import LABEL_IDS, train_args

from RRLMedSAMLib import cli
from RRLMedSAMLib.models.mutual_ema import MutualEMA
from RRLMedSAMLib.training import rrl_stages

FEW_STEPS = ("--teacher", "tiny", "--set", "registration_steps=2", "--set", "distill_steps=2", "--set", "pretrain_steps=2",
             "--set", "joint_steps=3", "--set", "autosam_steps=3")


def _train_and_segment(case: dict[str, Path], folder: Path, method: str, segment: bool = True,
                       *extra: str) -> tuple[Path, Path]:
    run = folder / "run"
    assert cli.main(train_args(case, run, *FEW_STEPS, "--method", method, *extra)) == 0
    results = folder / "results"
    if not segment:
        return run, results
    assert cli.main(["segment", "--model", str(run), "--image", str(case["scan_a"]), "--out", str(results)]) == 0
    return run, results / "scan_a_image"


def _distance(general: torch.nn.Module, medical: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum((g - m).pow(2).sum() for g, m in zip(general.parameters(), medical.parameters())) ** 0.5)


class CountingEMA(MutualEMA):
    """Records the encoders' distance right before and after every update."""

    gaps: list[tuple[float, float]] = []

    def step(self) -> bool:
        before = _distance(self.general, self.medical)
        applied = super().step()
        CountingEMA.gaps.append((before, _distance(self.general, self.medical)))
        return applied


@pytest.mark.parametrize("method", ["rrl", "rrl-no-ema"])
def test_mutual_ema_runs_after_every_stage_2_step(
    method: str, tiny_case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    CountingEMA.gaps = []
    monkeypatch.setattr(rrl_stages, "MutualEMA", CountingEMA)
    run, result = _train_and_segment(tiny_case, tmp_path, method, segment=method == "rrl-no-ema")
    if method == "rrl-no-ema":
        assert CountingEMA.gaps == []
        assert (result / "prompt_mask.nii.gz").exists() and (result / "segmentation.nii.gz").exists()
        return
    assert len(CountingEMA.gaps) == 3
    for before, after in CountingEMA.gaps:
        assert after == pytest.approx(before * (2 * 0.99 - 1), rel=1e-3)
    config = json.loads((run / "config.json").read_text())
    assert config["rrl"]["ema_alpha"] == 0.99


@pytest.mark.parametrize("method", ["rrl-no-distill", "rrl-no-prompt"])
def test_rrl_ablations_train_and_segment(method: str, tiny_case: dict[str, Path], tmp_path: Path) -> None:
    run, result = _train_and_segment(tiny_case, tmp_path, method, True)
    card = json.loads((run / "model_card.json").read_text())
    assert card["method"] == method
    assert card["volume_calibration"] == {"applied": False, "reason": "not requested (train --volume-calibration off)"}
    assert not (run / "volume_calibration.json").exists()
    stages = {json.loads(line)["stage"] for line in (run / "progress.jsonl").read_text().splitlines()}
    assert "volume_calibration" not in stages
    assert ("distill_stage1" in stages) == (method != "rrl-no-distill")
    assert "joint_stage2" in stages
    if method == "rrl-no-distill":
        assert card["teacher"]["name"] == "none" and "distillation_projection" not in card["parameters"]
    prompt = sitk.GetArrayFromImage(sitk.ReadImage(str(result / "prompt_mask.nii.gz")))
    assert set(np.unique(prompt)) - {0} <= set(LABEL_IDS)
    assert json.loads((result / "qc.json").read_text())["method"] == method


@pytest.mark.parametrize("method", ["autosam-vit", "autosam-cnn", "autosam-linear"])
def test_autosam_heads_train_and_segment(method: str, tiny_case: dict[str, Path], tmp_path: Path) -> None:
    run, result = _train_and_segment(tiny_case, tmp_path, method, True, "--volume-calibration", "on")
    card = json.loads((run / "model_card.json").read_text())
    assert card["method"] == method and card["parameters"]["head"] > 0 and card["teacher"]["name"] == "tiny"
    assert card["volume_calibration"] == {"applied": False, "reason": "no deformable registration (AutoSAM)"}
    stages = [json.loads(line)["stage"] for line in (run / "progress.jsonl").read_text().splitlines()]
    assert "autosam_head" in stages and "registration" not in stages
    segmentation = sitk.ReadImage(str(result / "segmentation.nii.gz"))
    assert segmentation.GetSize() == sitk.ReadImage(str(tiny_case["scan_a"])).GetSize()
    assert set(np.unique(sitk.GetArrayFromImage(segmentation))) - {0} <= set(LABEL_IDS)
    assert not (result / "prompt_mask.nii.gz").exists()
    assert json.loads((result / "qc.json").read_text())["registration"] == "affine only"


def test_named_teacher_without_weights_is_a_clean_error(
    tiny_case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("RRLMEDSAM_WEIGHTS_DIR", str(weights))
    out = tmp_path / "run"
    assert cli.main(train_args(tiny_case, out, "--teacher", "vit_b")) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert "sam_vit_b_01ec64.pth not found in" in message and str(weights) in message and "--teacher none" in message
    assert not out.exists()
    assert cli.main(train_args(tiny_case, out, "--method", "autosam-cnn")) == 2
    assert "needs the SAM encoder" in capsys.readouterr().err and not out.exists()


def test_auto_teacher_without_weights_trains_without_distillation_and_says_so(
    tiny_case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("RRLMEDSAM_WEIGHTS_DIR", str(tmp_path / "empty"))
    out = tmp_path / "run"
    steps = ("--set", "registration_steps=1", "--set", "pretrain_steps=1", "--set", "joint_steps=1")
    assert cli.main(train_args(tiny_case, out, *steps)) == 0
    assert "Teacher: none (no verified SAM checkpoint found in" in capsys.readouterr().out
    card = json.loads((out / "model_card.json").read_text())
    assert card["teacher"] == {"name": "none", "reason": f"no verified SAM checkpoint found in {tmp_path / 'empty'}"}
