"""scripts/host_costs.py: the table of the MimicMotion stream's host work per chunk runs and
has a row per size (its figures are timings, reported, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "host_costs.py"


def test_the_script_prints_a_row_per_size():
    result = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "64x64,128x64",
                             "--chunks", "3"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()
            if line.startswith("| ") and "x" in line.split("|")[1] and "frame" not in line]
    assert [row[0].strip() for row in rows] == ["64x64", "128x64"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])
