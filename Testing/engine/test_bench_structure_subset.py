"""``bench/structure_subset.py``: per-scan means over a structure subset, paired differences, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "structure_subset.py"

ROWS = [  # method, case, label, dice
    ("registration-only", "a", 2, 0.8), ("registration-only", "a", 3, 0.6), ("registration-only", "a", 30, 0.1),
    ("registration-only", "b", 2, 0.7), ("registration-only", "b", 3, ""),
    ("plain", "a", 2, 0.9), ("plain", "a", 3, 0.7), ("plain", "a", 30, 0.0),
    ("plain", "b", 2, 0.6), ("plain", "b", 3, ""),
]


def _write_results(folder: Path) -> None:
    folder.mkdir()
    lines = ["method,case,label,name,dice,hd95_mm"] + [f"{m},{c},{label},L{label},{d},1.0" for m, c, label, d in ROWS]
    (folder / "per_structure.csv").write_text("\n".join(lines) + "\n")


def test_subset_means_leave_out_other_structures_and_missing_values(tmp_path: Path) -> None:
    _write_results(tmp_path / "run")
    np.savez(tmp_path / "ids.npz", labels=np.array([2, 3]))
    result = subprocess.run([sys.executable, str(SCRIPT), "--results", str(tmp_path / "run"), "--labels",
                             str(tmp_path / "ids.npz")], capture_output=True, text=True, check=True)
    table = (tmp_path / "run" / "subset.md").read_text()
    assert table == result.stdout
    # registration-only: scan a (0.8+0.6)/2 = 0.7, scan b 0.7 -> 0.700 ± 0.000; plain: 0.8 and 0.6 -> 0.700 ± 0.100
    assert "| registration-only | 2 | 0.700 ± 0.000 | – |" in table
    assert "| plain | 2 | 0.700 ± 0.100 | +0.000 |" in table


def test_comma_separated_ids_and_a_missing_results_folder(tmp_path: Path) -> None:
    _write_results(tmp_path / "run")
    subprocess.run([sys.executable, str(SCRIPT), "--results", str(tmp_path / "run"), "--labels", "2",
                    "--out", str(tmp_path / "two.md")], capture_output=True, text=True, check=True)
    assert "| plain | 2 | 0.750 ± 0.150 | +0.000 |" in (tmp_path / "two.md").read_text()
    missing = subprocess.run([sys.executable, str(SCRIPT), "--results", str(tmp_path / "nowhere"), "--labels", "2"],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr and "per_structure.csv" in missing.stderr
