"""Long training stages report progress per scan, so that a slow stage does not look hung."""

from __future__ import annotations

import io
from pathlib import Path

from tiny_case import make_case

from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.training.trainer import TrainRequest, train


def test_pseudo_labels_and_prealignment_report_every_scan(tmp_path: Path) -> None:
    case = make_case(tmp_path / "case")
    scans = [case["scan_a"], case["scan_b"]]
    # no throttling: every event the stages send is kept (the default 0.5 s throttle only thins fast ones)
    progress = ProgressReporter(None, stream=io.StringIO(), show_bar=False, min_interval_s=0.0)
    request = TrainRequest(atlas_image=case["atlas_image"], atlas_label=case["atlas_label"], images=scans,
                           out=tmp_path / "run", preset="tiny", device="cpu", method="plain",
                           overrides={"registration_steps": 2, "segmentation_steps": 2}, volume_calibration=False)
    train(request, progress)
    for stage in ("pseudo_labels", "prealign"):
        events = [e for e in progress.history if e["stage"] == stage]
        assert events[0]["event"] == "stage_start" and events[0]["total"] == len(scans), stage
        steps = [e for e in events if e["event"] == "progress"]
        assert [e["step"] for e in steps] == [1, 2], stage
        assert all(name in e["message"] for e, name in zip(steps, ("scan_a", "scan_b"))), stage
        assert events[-1]["event"] == "stage_end", stage
