"""RRL-MedSAM through the real command line: train with the tiny SAM teacher, segment, resume mid stage 2."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_case import LABEL_IDS, assert_same_weights, copy_prepared, engine, start_training, train_args, wait_for_step

from RRLMedSAMLib.run.checkpoint import read_checkpoint
from RRLMedSAMLib.run.folder import RunFolder

#: Long enough a stage 2 to interrupt it reliably, short enough for CI.
STEPS = ("--teacher", "tiny", "--set", "registration_steps=8", "--set", "distill_steps=3", "--set", "pretrain_steps=4",
         "--set", "joint_steps=16")


@pytest.fixture(scope="module")
def rrl_run(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``rrl`` training with the tiny teacher (real subprocess)."""
    out = tmp_path_factory.mktemp("rrl_run") / "run"
    result = engine(*train_args(tiny_case, out, *STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Teacher: tiny" in result.stdout
    return out


@pytest.fixture(scope="module")
def rrl_results(tiny_case: dict[str, Path], rrl_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rrl_results")
    result = engine("segment", "--model", rrl_run, "--image", tiny_case["scan_a"], "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "scan_a_image"


def test_model_card_names_encoders_and_teacher(rrl_run: Path) -> None:
    card = json.loads((rrl_run / "model_card.json").read_text())
    parameters = card["parameters"]
    assert card["method"] == "rrl"
    assert parameters["general_encoder"] == parameters["medical_encoder"] > 0
    assert parameters["total"] == parameters["registration"] + parameters["segmentation"]
    assert parameters["teacher"]["name"] == "tiny" and parameters["teacher"]["parameters"] > 0
    teacher = card["teacher"]
    assert teacher["name"] == "tiny" and teacher["weights_sha256"] == "random init" and teacher["slice_size"] == 128
    assert "not sam weights" in teacher["label"].lower()
    events = [json.loads(line) for line in (rrl_run / "progress.jsonl").read_text().splitlines()]
    order = list(dict.fromkeys(e["stage"] for e in events if e["event"] == "stage_start"))
    assert order == ["prealign", "teacher_features", "distill_stage1", "registration", "medical_pretrain",
                     "pseudo_labels", "joint_stage2"]
    joint = [e for e in events if e["stage"] == "joint_stage2" and e["event"] == "progress"]
    assert {"general", "medical", "distillation", "encoder_gap"} <= set(joint[-1]["losses"])
    assert list((rrl_run / "cache" / "teacher").glob("*.safetensors")), "teacher features are cached"


def test_segment_writes_the_prompt_mask_on_the_native_grid(tiny_case: dict[str, Path], rrl_results: Path) -> None:
    reference = sitk.ReadImage(str(tiny_case["scan_a"]))
    for name in ("segmentation.nii.gz", "prompt_mask.nii.gz", "warped_atlas_label.nii.gz", "deformation.nrrd"):
        output = sitk.ReadImage(str(rrl_results / name))
        assert output.GetSize() == reference.GetSize(), name
        assert np.allclose(output.GetSpacing(), reference.GetSpacing(), atol=1e-5), name
        assert np.allclose(output.GetOrigin(), reference.GetOrigin(), atol=1e-4), name
        assert np.allclose(output.GetDirection(), reference.GetDirection(), atol=1e-6), name
    prompt = sitk.GetArrayFromImage(sitk.ReadImage(str(rrl_results / "prompt_mask.nii.gz")))
    assert set(np.unique(prompt)) - {0} <= set(LABEL_IDS) and prompt.any()
    qc = json.loads((rrl_results / "qc.json").read_text())
    assert qc["method"] == "rrl" and qc["prompt_mask"] == "prompt_mask.nii.gz" and "deformable" in qc["registration"]


def test_sigterm_in_stage_2_resumes_to_identical_weights(tiny_case: dict[str, Path], rrl_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    copy_prepared(rrl_run, out)
    process = start_training(train_args(tiny_case, out, *STEPS, "--resume"))
    wait_for_step(out, "joint_stage2", 2, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130, process.stderr.read()[-3000:]
    assert not (out / "model.safetensors").exists()
    assert (out / "checkpoints" / "joint_stage2.safetensors").exists()
    resumed = engine(*train_args(tiny_case, out, *STEPS, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(rrl_run, out)


def test_pretraining_continues_the_registration_optimiser(rrl_run: Path) -> None:
    """Adam's moments carry over from the warm-up: registration weights have taken 8 + 4 steps, the AP decoder's 4."""
    tensors, _, optimizers = read_checkpoint(RunFolder(rrl_run).checkpoint("medical_pretrain"))
    groups = optimizers["adam"]["param_groups"]
    assert len(groups) == 2

    def steps_taken(group: dict) -> set[float]:
        keys = [f"optim.adam.{index}.step" for index in group["params"]]
        return {float(tensors[key]) for key in keys if key in tensors}  # parameters without gradients have no state

    assert steps_taken(groups[0]) == {12.0}
    assert steps_taken(groups[1]) == {4.0}
    assert json.loads((rrl_run / "config.json").read_text())["rrl"]["pretrain_continues_optimizer"] is True
