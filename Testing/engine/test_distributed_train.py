"""Training under ``torchrun``: 2 processes on the CPU (gloo) train, segment, and survive a killed rank.

One uninterrupted 2-process training is the reference. A second one starts from its prepared data
(the affine pre-alignment is not bitwise repeatable, everything after it is) and is killed twice:
first a single rank (torchrun's elastic restart continues the run), then the whole job (a manual
relaunch with ``--resume`` continues it). It must end with the reference's weights exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_case import REPO, assert_same_weights, engine, train_args

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.run.distributed import SINGLE, launch_from_env
from RRLMedSAMLib.training.stage_runner import step_generator

STEPS = ("--teacher", "tiny", "--set", "registration_steps=6", "--set", "distill_steps=2", "--set", "pretrain_steps=2",
         "--set", "joint_steps=6")


def torchrun(args: list[str], log: Path, *torchrun_options: str) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 -m RRLMedSAMLib ARGS`` in the background, one thread per rank, output to ``log``."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *torchrun_options, "-m", "RRLMedSAMLib", *args]
    with open(log, "w") as handle:  # a file, not a pipe: nobody reads a pipe while the test waits
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    """Wait for ``process``; assert it succeeded; return its output."""
    code = process.wait(timeout=timeout)
    output = log.read_text()
    assert code == 0, output[-4000:]
    return output


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert process.poll() is None, f"training ended (exit {process.returncode}) before {path.name} appeared"
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear in {timeout} s")


def rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    """The worker process of ``rank`` among the launcher's descendants."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "RRLMedSAMLib" in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no worker of rank {rank} found")


def kill_job(launcher: subprocess.Popen) -> None:
    """SIGKILL torchrun and every worker (torchrun starts each worker in its own session)."""
    processes = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=60)
    launcher.wait(timeout=60)


def prepared_only(reference: Path, out: Path) -> None:
    """A new run folder holding only ``reference``'s prepared data (a ``cache/`` a new training reuses)."""
    (out / "cache").mkdir(parents=True)
    for name in ("prepared.safetensors", "prealignment.json"):
        shutil.copyfile(reference / "cache" / name, out / "cache" / name)


def stage_starts(run: Path, stage: str) -> list[int]:
    """The step each start of ``stage`` began at, in order (from ``progress.jsonl``)."""
    events = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["stage"] == stage and e["event"] == "stage_start"]


@pytest.fixture(scope="module")
def reference(tiny_case: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An uninterrupted 2-process training and its output."""
    out = tmp_path_factory.mktemp("distributed") / "run"
    log = out.parent / "train.log"
    output = finish(torchrun(train_args(tiny_case, out, *STEPS), log), log)
    return out, output


def test_two_processes_train_a_model_that_segments(
    reference: tuple[Path, str], tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    run, output = reference
    card = json.loads((run / "model_card.json").read_text())
    assert card["trained_on"]["world_size"] == 2 and card["trained_on"]["backend"] == "gloo"
    assert output.count("Training finished") == 1  # rank 0 speaks for the job
    events = [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "done"]
    # the per-volume stages were split: rank 0 logs its share only, and the shares were assembled
    pseudo = next(e for e in events if e["stage"] == "pseudo_labels" and e["event"] == "stage_start")
    assert pseudo["total"] == 1 and "2 ranks" in pseudo["message"]
    teacher = next(e for e in events if e["stage"] == "teacher_features" and e["event"] == "stage_start")
    assert teacher["total"] == 2  # atlas and scan_b of [atlas, scan_a, scan_b]; rank 1 encoded scan_a
    assert len(list((run / "cache" / "teacher").glob("*.safetensors"))) == 3
    assert (run / "cache" / "pseudo_labels.safetensors").is_file()
    assert not (run / "cache" / "pseudo_label_shares").exists()
    result = engine("segment", "--model", run, "--image", tiny_case["scan_a"], "--out", tmp_path / "seg")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "seg" / "scan_a_image" / "segmentation.nii.gz").is_file()


def test_killed_rank_and_killed_job_both_resume_to_the_reference_weights(
    reference: tuple[Path, str], tiny_case: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    prepared_only(reference[0], out)
    log = tmp_path / "train.log"
    # one rank dies: torchrun's elastic restart relaunches both, and the restarted job continues the run
    job = torchrun(train_args(tiny_case, out, *STEPS), log, "--max-restarts", "1")
    wait_for_file(out / "checkpoints" / "registration.safetensors", job)
    rank_process(job, 1).kill()
    # later the whole job dies (torchrun and both ranks), as when a node goes down
    wait_for_file(out / "checkpoints" / "joint_stage2.safetensors", job)
    kill_job(job)
    assert not (out / "model.safetensors").exists()
    assert stage_starts(out, "registration")[-1] >= 4
    refused = torchrun(train_args(tiny_case, out, *STEPS), tmp_path / "refused.log")
    assert refused.wait(timeout=300) != 0 and "pass --resume" in (tmp_path / "refused.log").read_text()
    finish(torchrun(train_args(tiny_case, out, *STEPS, "--resume"), log), log)
    assert stage_starts(out, "joint_stage2")[-1] >= 4
    assert_same_weights(reference[0], out)


def test_launch_is_read_from_torchrun_environment() -> None:
    assert launch_from_env({}) is None
    assert launch_from_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) is None  # one process: as alone
    launch = launch_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "TORCHELASTIC_RESTART_COUNT": "2",
                              "TORCHELASTIC_RUN_ID": "job"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.restart_count, launch.job_id) == (3, 4, 1, 2, "job")
    for broken in ({"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"},
                   {"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}):
        with pytest.raises(InputError):
            launch_from_env(broken)


def test_rank_0_draws_what_a_single_process_draws_and_other_ranks_differ() -> None:
    single = step_generator(7, "registration", 5).random(4)
    assert (step_generator(7, "registration", 5, rank=0).random(4) == single).all()
    assert not (step_generator(7, "registration", 5, rank=1).random(4) == single).any()
    assert SINGLE.shard(list(range(5))) == [0, 1, 2, 3, 4] and not SINGLE.active and SINGLE.is_main
