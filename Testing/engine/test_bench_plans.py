"""The standard benchmark plans in ``bench/run_standard.py`` name only methods and datasets that exist."""

import importlib.util
import sys
from pathlib import Path

from RRLMedSAMLib.bench.methods import METHODS

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run_standard():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("run_standard", BENCH / "run_standard.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["run_standard"] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_every_plan_uses_known_methods_and_datasets() -> None:
    module = _run_standard()
    assert {"cpu", "gpu", "quick", "table"} <= set(module.PLANS)
    for plan, runs in module.PLANS.items():
        assert len({run.name for run in runs}) == len(runs), f"plan {plan} repeats a result folder name"
        for run in runs:
            assert run.dataset in {"prostate", "brain", "oasis", "ct"}, (plan, run.dataset)
            unknown = [m for m in run.methods if m not in METHODS]
            assert not unknown, f"plan {plan} run {run.name} names unknown methods {unknown}"


def test_table_plan_covers_every_scan_and_every_sam_guided_method() -> None:
    module = _run_standard()
    for run in module.PLANS["table"]:
        assert run.max_scans is None
        assert {"registration-only", "plain", *module.SAM_GUIDED} <= set(run.methods)
