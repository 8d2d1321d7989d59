"""Two real segment processes into one --out: the output folder's lock lets one write; nothing is lost or mixed."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk
from guard_helpers import quick_train_args, start_engine
from tiny_case import make_case

from RRLMedSAMLib.cli import main
from RRLMedSAMLib.commands.segment import RESULT_FILES


def test_two_segment_processes_into_one_out(tmp_path: Path) -> None:
    case = make_case(tmp_path / "case")
    run, out = tmp_path / "run", tmp_path / "seg"
    assert main(quick_train_args(case, run)) == 0
    out.mkdir()
    (out / "earlier.txt").write_text("a file of the user's")
    scans = {"scan_a_image": case["scan_a"], "scan_b_image": case["scan_b"]}
    processes = {name: start_engine("segment", "--model", run, "--image", path, "--out", out, "--refinement-steps", "0")
                 for name, path in scans.items()}
    codes = {name: process.wait(timeout=300) for name, process in processes.items()}
    errors = {name: process.stderr.read() for name, process in processes.items()}
    assert sorted(codes.values()) in ([0, 0], [0, 2]), (codes, errors)
    for name, code in codes.items():
        folder = out / name
        if code == 2:
            other = next(p for n, p in processes.items() if n != name)
            assert f"in use by process {other.pid}" in errors[name] and "Traceback" not in errors[name]
            assert not folder.exists()
            continue
        expected = set(RESULT_FILES) - {"prompt_mask.nii.gz"}
        assert {p.name for p in folder.iterdir()} == expected, name
        qc = json.loads((folder / "qc.json").read_text())
        assert qc["image"] == str(scans[name].resolve())
        segmentation = sitk.ReadImage(str(folder / "segmentation.nii.gz"))
        assert segmentation.GetSize() == sitk.ReadImage(str(scans[name])).GetSize()
    assert (out / "earlier.txt").read_text() == "a file of the user's"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial") or p.name == ".rrlmedsam.lock.owner"]
