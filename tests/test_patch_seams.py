"""scripts/patch_seams.py: per folder, the seam ratio of its videos; a folder whose videos
show a 4-pixel patch grid scores higher than one of smooth videos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from posecast.media import write_mp4

SCRIPT = Path(__file__).parents[1] / "scripts" / "patch_seams.py"


def test_the_script_tabulates_each_folders_seam_ratio(tmp_path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64].astype(float)
    offsets = np.kron(rng.integers(-12, 13, (16, 16)), np.ones((4, 4)))  # one level a patch
    for name, grid in (("smooth", 0), ("grid", offsets)):
        (tmp_path / name).mkdir()
        for clip in range(2):
            with write_mp4(tmp_path / name / f"{clip}.mp4", fps=25) as mp4:
                for t in range(3):  # a ramp with a slow wave, drifting
                    image = 60 + 1.3 * x + 0.9 * y + 12 * np.sin((x + 2 * y + t + 9 * clip) / 7)
                    image = np.clip(image + grid, 0, 255).astype(np.uint8)
                    mp4.write(np.repeat(image[..., None], 3, axis=2))
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, str(SCRIPT), *(str(tmp_path / name) for name in
                                                             ("smooth", "grid", "empty"))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {Path(line.split("|")[1].strip()).name: [cell.strip() for cell in
                                                    line.split("|")[2:-1]]
            for line in result.stdout.splitlines()[2:]}
    assert rows["empty"] == ["0", "-", "-"]
    assert rows["smooth"][0] == rows["grid"][0] == "2"
    assert float(rows["smooth"][1]) < 1.3 < 1.6 < float(rows["grid"][1])
    assert float(rows["grid"][2]) >= float(rows["grid"][1])
