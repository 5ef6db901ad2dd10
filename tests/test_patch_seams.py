"""scripts/patch_seams.py: a video whose 4-pixel patches are offset from each other scores a
higher seam ratio than a smooth one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from posecast.media import write_mp4

SCRIPT = Path(__file__).parents[1] / "scripts" / "patch_seams.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("patch_seams", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_patch_grid_raises_the_seam_ratio(tmp_path):
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(40, 200, 64), (64, 1))  # smooth left-to-right gradient
    offsets = np.kron(rng.integers(-12, 13, (16, 16)), np.ones((4, 4)))  # one step per patch
    for name, image in (("smooth", ramp), ("grid", ramp + offsets)):
        (tmp_path / name).mkdir()
        frame = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        with write_mp4(tmp_path / name / "clip.mp4", fps=25) as mp4:
            for _ in range(5):
                mp4.write(frame)
    seams = _load_script().seam_ratio
    smooth_across, smooth_inside, count = seams(tmp_path / "smooth", 4)
    grid_across, grid_inside, _ = seams(tmp_path / "grid", 4)
    assert count == 1
    assert abs(smooth_across / smooth_inside - 1) < 0.2
    assert grid_across / grid_inside > 2
