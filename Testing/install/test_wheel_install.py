"""The engine as a terminal user installs it: a non-editable wheel in a fresh environment.

From a temporary working directory far from the checkout, the installed ``rrlmedsam`` trains with
the default teacher (the manifest is read from the package data), segments, and runs the demo on
the embedded sample data. Each output is read back with SimpleITK.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPO, check_run, clean_env

sys.path.insert(0, str(REPO / "Testing" / "engine"))
from tiny_case import make_case  # noqa: E402

pytestmark = pytest.mark.slow


def test_wheel_trains_segments_and_runs_the_demo_from_any_folder(fresh_python, engine_wheel, tmp_path):
    pip = [fresh_python, "-m", "pip", "--disable-pip-version-check"]
    check_run([*pip, "uninstall", "--yes", "RRLMedSAMLib"])
    check_run([*pip, "install", "--quiet", engine_wheel])
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = clean_env(RRLMEDSAM_WEIGHTS_DIR=str(tmp_path / "no-weights"))

    location = check_run([fresh_python, "-c", "import RRLMedSAMLib; print(RRLMedSAMLib.__file__)"], cwd=work, env=env)
    installed = Path(location.stdout.strip()).resolve()
    assert REPO not in installed.parents and fresh_python.parent.parent in installed.parents

    rrlmedsam = fresh_python.parent / "rrlmedsam"
    case = make_case(tmp_path / "case")
    check_run([rrlmedsam, "train", "--atlas-image", case["atlas_image"], "--atlas-label", case["atlas_label"],
               "--images", case["scan_a"], case["scan_b"], "--out", "run", "--preset", "tiny", "--device", "cpu"],
              cwd=work, env=env)
    card = json.loads((work / "run" / "model_card.json").read_text())
    assert "teacher" in json.dumps(card)
    check_run([rrlmedsam, "segment", "--model", "run", "--image", case["scan_a"], "--out", "results", "--device", "cpu"],
              cwd=work, env=env)
    segmentation = sitk.ReadImage(str(work / "results" / "scan_a_image" / "segmentation.nii.gz"))
    scan = sitk.ReadImage(str(case["scan_a"]))
    assert segmentation.GetSize() == scan.GetSize()
    found = set(sitk.GetArrayViewFromImage(segmentation).ravel().tolist())
    assert {5, 9} <= found <= {0, 5, 9, 12}

    check_run([rrlmedsam, "demo", "--out", "demo", "--preset", "tiny", "--method", "plain", "--device", "cpu"],
              cwd=work, env=env)
    report = (work / "demo" / "report" / "report.md").read_text()
    assert "Mean Dice, final segmentation" in report
