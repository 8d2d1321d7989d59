"""A run's life with the real engine (``train --preset tiny`` in its own process), as the panel drives it.

New run folder -> training in use (a second process is refused with the engine's message) -> Cancel
through the stop file (checkpoint kept, exit 130, no process left) -> "Slicer restart": a new scene
and only what is on disk -> the run is listed as interrupted and resumed -> finished -> segment
with it -> delete it.
"""

from __future__ import annotations

import sys
import time

import psutil
import pytest
from slicer_test_helpers import REPO_ROOT, add_volume, require_slicer, slicer

require_slicer()

from test_slicer_engine_roundtrip import geometry, phantom  # noqa: E402

from RRLMedSAMSlicerLib import PanelLogic as pl  # noqa: E402
from RRLMedSAMSlicerLib import RunsLogic as rl  # noqa: E402
from RRLMedSAMSlicerLib import SceneConversion as sc  # noqa: E402
from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic  # noqa: E402
from RRLMedSAMSlicerLib.ProcessRunner import EXIT_CANCELLED, EngineProcess, ThreadedStarter  # noqa: E402

pytestmark = pytest.mark.slow
ENGINE = [sys.executable, "-m", "RRLMedSAMLib"]


def start(command: list[str], **options) -> tuple[EngineProcess, list]:
    events: list = []
    process = EngineProcess(command, on_event=events.append, starter=ThreadedStarter(), cwd=str(REPO_ROOT), **options)
    process.start()
    return process, events


def wait(process: EngineProcess, until=lambda: False, timeout_s: float = 600.0) -> None:
    """Deliver output until the process ended or ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while process.outcome is None and not until():
        assert time.monotonic() < deadline, "engine run timed out"
        process.poll()
        time.sleep(0.05)


def scene_with_case(scene):
    atlas_image, atlas_labels = phantom((0, 0, 0), seed=1)
    atlas = add_volume(scene, atlas_image, "Atlas T1", geometry((5.0, -3.0, 2.0)))
    label_node = add_volume(scene, atlas_labels, "atlas labels", geometry((5.0, -3.0, 2.0)), labelmap=True)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Atlas segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation)
    scene.RemoveNode(label_node)
    scans = [add_volume(scene, phantom(shift, seed)[0], name, geometry((4.0, -2.0, 3.0)))
             for name, shift, seed in (("Case A", (1, -1, 1), 2), ("Case B", (-1, 1, 0), 3))]
    return atlas, segmentation, scans


def test_cancel_restart_resume_segment_delete(scene, tmp_path):
    root = tmp_path / "runs"
    atlas, segmentation, scans = scene_with_case(scene)
    logic = RRLMedSAMLogic(scene, command=lambda: ENGINE)
    folder = rl.create_run(root, atlas.GetName())
    command = logic.train_command(folder, atlas, segmentation, scans, preset="tiny", device="cpu", seed=0)
    rl.record_train_args(folder, command)
    assert folder.name.startswith("Atlas_T1-") and rl.read_run(folder).status == rl.RunStatus.NOT_STARTED

    training, events = start(command, cancel_grace_s=120.0)
    wait(training, until=lambda: any(e.event == "progress" and e.step >= 1 for e in events))
    assert training.outcome is None, "the tiny training ended before it could be cancelled"
    run = rl.read_run(folder)
    assert run.status == rl.RunStatus.IN_USE and run.pid is not None
    with pytest.raises(rl.RunError, match="in use"):
        rl.continue_args(run)
    with pytest.raises(rl.RunError, match="in use"):
        rl.delete_run(root, run)
    second, _ = start([*ENGINE, *run.train_args, "--resume"])
    wait(second, timeout_s=120)
    assert second.outcome.returncode == 2 and "in use" in second.outcome.error_message  # the engine's own message
    assert pl.finished_view(pl.TRAINING, second.outcome, 1).status.startswith("The training failed: ")

    tree = [psutil.Process(training.popen.pid), *psutil.Process(training.popen.pid).children(recursive=True)]
    asked = time.monotonic()
    training.cancel()
    assert training.stop_file.exists()
    wait(training, timeout_s=120)
    outcome = training.outcome
    assert outcome.cancelled and outcome.returncode == EXIT_CANCELLED and not outcome.forced
    assert time.monotonic() - asked < 60, "the engine stopped at its next step, well inside the grace period"
    assert not training.stop_file.parent.exists()
    time.sleep(0.2)
    assert not [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert any((folder / "model" / "checkpoints").glob("*.safetensors")), "the engine saved its checkpoint"

    # "Slicer restart": a new scene, a new logic; the run is found and resumed from the files alone.
    slicer.mrmlScene = restarted = slicer.vtkMRMLScene()
    runs = rl.scan_runs(root)
    assert [r.folder for r in runs] == [folder]
    interrupted = runs[0]
    assert interrupted.status == rl.RunStatus.INTERRUPTED and interrupted.resumable
    assert pl.controls(pl.PanelInputs(pl.State.IDLE, False, False, interrupted, True)).resume_enabled
    resumed, resumed_events = start([*ENGINE, *rl.continue_args(interrupted)])
    wait(resumed)
    assert resumed.outcome.succeeded, resumed.outcome.error_message
    assert any(e.event == "stage_start" and e.step > 0 for e in resumed_events), "the resumed stage starts after its checkpoint"
    finished = rl.read_run(folder)
    assert finished.status == rl.RunStatus.FINISHED and rl.default_selection(rl.scan_runs(root)) == finished

    restarted_logic = RRLMedSAMLogic(restarted, command=lambda: ENGINE)
    scan = add_volume(restarted, phantom((1, -1, 1), 2)[0], "Case A", geometry((4.0, -2.0, 3.0)))
    segment, job = restarted_logic.segment_command(rl.require_usable(finished).folder, [scan], device="cpu")
    process, _ = start(segment)
    wait(process)
    assert process.outcome.succeeded, process.outcome.error_message
    results = restarted_logic.load_results(job, finished.folder, field_overlay="magnitude")
    assert results[0].segmentation.GetName() == "Case A segmentation"
    assert set(restarted_logic.result_node_ids()) >= {results[0].segmentation.GetID(), results[0].overlay.GetID()}
    assert scan.GetID() not in restarted_logic.result_node_ids()
    assert len(sc.find_results(restarted, sc.ROLE_FIELD_OVERLAY)) == 1

    rl.delete_run(root, finished)
    assert not folder.exists() and rl.scan_runs(root) == []
    restarted.Clear(True)
