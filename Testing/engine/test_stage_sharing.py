"""Stage sharing (the benchmark's accelerator): an ablation started from a finished run's common stages
equals one trained from scratch."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from tiny_case import assert_same_weights, engine, train_args

from RRLMedSAMLib.bench.stage_sharing import shareable_stages

STEPS = ("--teacher", "tiny", "--set", "registration_steps=4", "--set", "distill_steps=2", "--set", "pretrain_steps=3",
         "--set", "joint_steps=3", "--set", "segmentation_steps=3")


def shared_train(sources: list[Path], args: list[str]):
    """``python -m RRLMedSAMLib.bench.stage_sharing --from SOURCES -- TRAIN ARGS`` (``args`` start with ``train``)."""
    return engine("--from", *sources, "--", *args[1:], module="RRLMedSAMLib.bench.stage_sharing")


@pytest.fixture(scope="module")
def source_run(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny ``rrl`` training (real subprocess)."""
    out = tmp_path_factory.mktemp("share_source") / "run"
    result = engine(*train_args(tiny_case, out, *STEPS, "--method", "rrl"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _config(method: str = "rrl", teacher: str = "tiny", **changes: object) -> dict:
    config = {
        "format_version": 1, "engine_version": "x", "method": method, "seed": 0, "scan_names": ["a"],
        "inputs": {"images": [{"path": "/a.nii.gz", "bytes": 1}]}, "label_ids": [1, 2],
        "preset": {"grid_size": 32, "affine_iterations": 20, "channels": [4, 8], "registration_steps": 4},
        "rrl": {"joint_steps": 3}, "teacher": {"name": teacher},
    }
    config.update(changes)
    return config


def test_shareable_stages_follow_what_each_stage_depends_on() -> None:
    rrl = _config()
    assert shareable_stages(rrl, _config("rrl-no-ema")) == (
        "prealign", "teacher_features", "distill_stage1", "registration", "medical_pretrain", "pseudo_labels")
    assert shareable_stages(rrl, _config("rrl-no-distill")) == ("prealign", "registration", "medical_pretrain", "pseudo_labels")
    assert shareable_stages(rrl, _config("rrl-no-ema", teacher="random-vit_b")) == (
        "prealign", "registration", "medical_pretrain", "pseudo_labels")
    assert shareable_stages(rrl, _config("plain")) == ("prealign",)
    plain, no_prior = _config("plain"), _config("plain")
    no_prior["preset"] = {**plain["preset"], "atlas_prior": False, "segmentation_steps": 9}
    assert shareable_stages(plain, no_prior) == ("prealign", "registration", "pseudo_labels")
    fine_labels = copy.deepcopy(no_prior)
    fine_labels["preset"]["fine_pseudo_labels"] = True
    assert shareable_stages(plain, fine_labels) == ("prealign", "registration")
    no_prior["preset"]["registration_steps"] = 5
    assert shareable_stages(plain, no_prior) == ("prealign",)
    assert shareable_stages(rrl, _config("rrl-no-prompt", rrl={"joint_steps": 4})) == ("prealign",)
    longer = copy.deepcopy(rrl)
    longer["preset"]["registration_steps"] = 5
    assert shareable_stages(rrl, longer) == ("prealign",)
    assert shareable_stages(rrl, _config(seed=1)) == ()
    assert shareable_stages(rrl, _config(inputs={"images": []})) == ()
    finer = copy.deepcopy(rrl)
    finer["preset"]["grid_size"] = 48
    assert shareable_stages(rrl, finer) == ()


@pytest.mark.parametrize("method", ["rrl-no-ema", "rrl-no-distill", "plain"])
def test_shared_start_gives_the_weights_of_a_run_from_scratch(
    tiny_case: dict[str, Path], source_run: Path, tmp_path: Path, method: str
) -> None:
    # The reference starts from the source's prepared data too: ITK's affine is not bitwise repeatable.
    reference = tmp_path / "reference"
    (reference / "cache").mkdir(parents=True)
    shutil.copy2(source_run / "cache" / "prepared.safetensors", reference / "cache")
    result = engine(*train_args(tiny_case, reference, *STEPS, "--method", method))
    assert result.returncode == 0, result.stderr[-3000:]

    shared = tmp_path / "shared"
    result = shared_train([source_run], train_args(tiny_case, shared, *STEPS, "--method", method))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reusing prealign" in result.stdout
    assert_same_weights(reference, shared)
    record = json.loads((shared / "model_card.json").read_text())["shared_stages"]
    expected = {"rrl-no-ema": 6, "rrl-no-distill": 4, "plain": 1}[method]
    assert record["source_method"] == "rrl" and len(record["stages"]) == expected
    stages = {json.loads(line)["stage"] for line in (shared / "progress.jsonl").read_text().splitlines()}
    assert "prealign" not in stages


def test_a_folder_that_is_not_a_run_is_refused(tiny_case: dict[str, Path], tmp_path: Path) -> None:
    result = shared_train([tmp_path], train_args(tiny_case, tmp_path / "run", *STEPS))
    assert result.returncode == 2
    assert "stage sharing" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()


def test_bench_counts_shared_stages_at_the_source_runs_times() -> None:
    from RRLMedSAMLib.bench.methods import METHODS
    from RRLMedSAMLib.bench.runner import MethodOutcome, _with_inherited_stages

    plain = MethodOutcome(METHODS["plain"], train={"train_s": 100.0, "stages_s": {"prealign": 20.0, "registration": 60.0}})
    rrl_train = {"train_s": 200.0, "stages_s": {"prealign": 0.0, "registration": 50.0, "medical_pretrain": 90.0},
                 "shared": {"source": "/runs/plain", "stages": ["prealign"]}}
    rrl = MethodOutcome(METHODS["rrl"], train=_with_inherited_stages(rrl_train, {"/runs/plain": plain}))
    assert rrl.train["train_s"] == 220.0 and rrl.train["own_train_s"] == 200.0
    ablation = {"train_s": 40.0, "stages_s": {"prealign": 0.0, "joint_stage2": 39.0},
                "shared": {"source": "/runs/rrl", "stages": ["prealign", "registration", "medical_pretrain"]}}
    counted = _with_inherited_stages(ablation, {"/runs/plain": plain, "/runs/rrl": rrl})
    assert counted["train_s"] == 40.0 + 20.0 + 50.0 + 90.0
    assert counted["stages_s"]["prealign"] == 20.0 and counted["stages_s"]["joint_stage2"] == 39.0
    assert _with_inherited_stages({"train_s": 5.0, "shared": None}, {}) == {"train_s": 5.0, "shared": None}


def test_a_plain_run_without_the_atlas_prior_shares_registration_and_pseudo_labels(
    tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    plain = ("--method", "plain", "--set", "registration_steps=4", "--set", "segmentation_steps=3")
    source = tmp_path / "source"
    assert engine(*train_args(tiny_case, source, *plain)).returncode == 0
    reference = tmp_path / "reference"
    (reference / "cache").mkdir(parents=True)
    shutil.copy2(source / "cache" / "prepared.safetensors", reference / "cache")
    result = engine(*train_args(tiny_case, reference, *plain, "--set", "atlas_prior=off"))
    assert result.returncode == 0, result.stderr[-3000:]
    shared = tmp_path / "shared"
    result = shared_train([source], train_args(tiny_case, shared, *plain, "--set", "atlas_prior=off"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reusing prealign, registration, pseudo_labels" in result.stdout
    assert_same_weights(reference, shared)
