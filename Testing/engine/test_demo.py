"""``rrlmedsam demo`` end to end on the embedded sample (tiny preset): report, figures, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_case import engine

from RRLMedSAMLib.commands.demo import DEMO_SCHEDULE, _demo_schedule


def test_the_fast_demo_shortens_only_its_three_stages() -> None:
    schedule = _demo_schedule("fast")
    assert schedule["overrides"] == {"registration_steps": DEMO_SCHEDULE["registration_steps"]}
    assert schedule["rrl"] == {"pretrain_steps": 20, "joint_steps": 40}
    assert _demo_schedule("standard") == {}


@pytest.mark.slow
def test_demo_writes_a_scored_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = engine("demo", "--out", out, "--preset", "tiny", "--method", "plain", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    report = out / "report"
    text = (report / "report.md").read_text()
    assert "Mean Dice, final segmentation" in text and "Registration only" in text
    assert text.count("Method:") == 1 and "Method: **plain**" in text and "uses no SAM teacher" in text
    assert "DSKD" not in text
    assert "patient's left is on the right" in text and "colour bar" in text and "pseudo labels" in text
    for figure in ("loss_curves.png", *(p.name for p in report.glob("overlay_*.png"))):
        assert (report / figure).stat().st_size > 5000, figure
    assert len(list(report.glob("overlay_*.png"))) == len(list((out / "segmentations").iterdir()))
    summary = json.loads((report / "segmentation" / "metrics.json").read_text())
    assert 0.2 < summary["mean_dice"] <= 1.0
    events = [json.loads(line) for line in (out / "run" / "progress.jsonl").read_text().splitlines()]
    pseudo = [e for e in events if e["stage"] == "pseudo_labels" and e["event"] == "stage_start"]
    assert pseudo and pseudo[0]["total"] == len(list((out / "segmentations").iterdir()))  # one step per scan
    again = engine("demo", "--out", out, "--preset", "tiny", "--method", "plain", "--device", "cpu")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Demo finished" in again.stdout
