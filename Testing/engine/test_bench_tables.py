"""Benchmark bookkeeping: method registry, ratios against the reference, tables and figures."""

from __future__ import annotations

import math

import pytest

from RRLMedSAMLib.bench.methods import METHODS, resolve_methods
from RRLMedSAMLib.bench.plots import dice_boxplot, dice_vs_time, line_panels
from RRLMedSAMLib.bench.runner import MethodOutcome
from RRLMedSAMLib.bench.tables import dice_difference, markdown_table, method_table, speed_ratio, to_csv
from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.metrics.evaluation import CaseMetrics


def _outcome(name: str, dices: dict[str, float], seconds: float, train_s: float | None = None) -> MethodOutcome:
    outcome = MethodOutcome(METHODS[name])
    outcome.scans = [{"name": n, "segment_s": seconds, "folding_fraction": 0.0} for n in dices]
    outcome.cases = [CaseMetrics(n, {1: d}, {1: 2.0}) for n, d in dices.items()]
    outcome.train = None if train_s is None else {"train_s": train_s, "parameters": {"a": 10, "total": 10},
                                                  "peak_rss_mb": 100.0, "peak_gpu_mb": None}
    return outcome


def test_dice_difference_is_paired_over_common_scans() -> None:
    assert dice_difference({"a": 0.8, "b": 0.6, "c": 0.9}, {"a": 0.7, "b": 0.7}) == pytest.approx(0.0)
    assert dice_difference({"a": 0.8}, {"b": 0.7}) is None
    assert dice_difference({"a": 0.9, "b": math.nan}, {"a": 0.5, "b": 0.1}) == pytest.approx(0.4)


def test_speed_ratio() -> None:
    assert speed_ratio(120.0, 4.0) == pytest.approx(30.0)
    assert speed_ratio(None, 4.0) is None
    assert speed_ratio(10.0, 0.0) is None


def test_method_table_ratios_against_ants() -> None:
    ants = _outcome("ants-syn", {"s1": 0.80, "s2": 0.70}, seconds=60.0)
    plain = _outcome("plain", {"s1": 0.85, "s2": 0.71}, seconds=6.0, train_s=600.0)
    failed = MethodOutcome(METHODS["rrl"], status="failed: no teacher")
    rows = {r["method"]: r for r in method_table([ants, plain, failed], "ants-syn")}
    assert rows["plain"]["dice_diff_vs_ref"] == pytest.approx(0.03)
    assert rows["plain"]["speed_ratio_vs_ref"] == pytest.approx(10.0)
    assert rows["plain"]["total_time_ratio_vs_ref"] == pytest.approx(120.0 / 612.0)
    assert rows["plain"]["parameters"] == 10
    assert rows["ants-syn"]["dice_diff_vs_ref"] == pytest.approx(0.0)
    assert rows["rrl"]["dice_diff_vs_ref"] is None
    text = markdown_table(list(rows.values()), "ants-syn")
    assert "failed: no teacher" in text and "| plain | 0.780 ± 0.070" in text
    assert to_csv(list(rows.values())).splitlines()[0].startswith("method,kind,status")


def test_no_reference_leaves_ratios_empty() -> None:
    rows = method_table([_outcome("plain", {"s1": 0.8}, 1.0, 10.0)], "ants-syn")
    assert rows[0]["speed_ratio_vs_ref"] is None


def test_resolve_methods_adds_the_source_of_derived_methods() -> None:
    names = [s.name for s in resolve_methods(["registration-only", "affine"])]
    assert names == ["plain", "registration-only", "affine"]
    with pytest.raises(InputError, match="Unknown method"):
        resolve_methods(["snake-oil"])


def test_figures_are_written(tmp_path) -> None:
    ants = _outcome("ants-syn", {"s1": 0.80, "s2": 0.70}, seconds=60.0)
    plain = _outcome("plain", {"s1": 0.85, "s2": 0.71}, seconds=6.0, train_s=600.0)
    rows = method_table([ants, plain], "ants-syn")
    structures = [{"method": o.spec.name, "case": c.name, "label": 1, "name": "One", "dice": c.dice[1]}
                  for o in (ants, plain) for c in o.cases]
    dice_boxplot(structures, tmp_path / "box.png", "t")
    dice_vs_time(rows, tmp_path / "time.png", "t")
    line_panels([64, 128], {"plain": {"seconds": [1.0, None], "mib": [10.0, 20.0]}}, "side",
                {"seconds": "s", "mib": "MiB"}, tmp_path / "lines.png", "t")
    for name in ("box.png", "time.png", "lines.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
