"""The seam ratio (posecast/seams.py): about 1 on a smooth video after MP4 encoding, clearly
higher where a 4- or 2-pixel grid is drawn, along either axis and wherever the grid sits."""

from __future__ import annotations

import numpy as np
import pytest

from posecast.media import iter_video_frames, write_mp4
from posecast.seams import SeamMeter, seam_ratio

SIZE = 64


def smooth_frames(frames: int = 5) -> list[np.ndarray]:
    """(SIZE, SIZE) grey frames: a diagonal ramp with a slow wave, drifting a pixel a frame
    (steps along both axes, no grid)."""
    y, x = np.mgrid[:SIZE, :SIZE].astype(float)
    return [60 + 1.3 * x + 0.9 * y + 12 * np.sin((x + 2 * y + t) / 7) for t in range(frames)]


def grid(period: int, axes: str, phase: int = 0) -> np.ndarray:
    """(SIZE, SIZE) offsets, one random level per cell of `period` pixels along `axes`."""
    rng = np.random.default_rng(period)
    cells = rng.integers(-10, 11, SIZE // period + 1)
    levels = np.repeat(cells, period)[phase:phase + SIZE]  # cell borders after pixel phase − 1
    offsets = np.zeros((SIZE, SIZE))
    if "x" in axes:
        offsets += levels[None, :]
    if "y" in axes:
        offsets += levels[::-1][:, None]
    return offsets


def rgb(frame: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(frame, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def encoded_ratio(tmp_path, frames: list[np.ndarray]) -> float:
    """Write grey frames as an MP4, read it back and measure it."""
    path = tmp_path / "clip.mp4"
    with write_mp4(path, fps=25) as mp4:
        for frame in frames:
            mp4.write(rgb(frame))
    return seam_ratio(iter_video_frames(path))


def test_a_smooth_video_scores_about_one(tmp_path):
    assert seam_ratio(rgb(frame) for frame in smooth_frames()) < 1.05
    # H.264's own block structure lifts it a little (1.1-1.25 on smooth 64-pixel clips)
    assert encoded_ratio(tmp_path, smooth_frames()) < 1.3


@pytest.mark.parametrize(("period", "axes", "phase"), [
    (4, "xy", 0), (4, "xy", 3), (2, "xy", 0), (4, "y", 1), (4, "x", 2), (2, "y", 1)])
def test_a_drawn_grid_raises_the_seam_ratio(tmp_path, period, axes, phase):
    offsets = grid(period, axes, phase)
    assert encoded_ratio(tmp_path, [frame + offsets for frame in smooth_frames()]) > 1.6


def test_the_meter_keeps_running_sums_and_handles_flat_and_tiny_frames():
    meter = SeamMeter()
    assert meter.ratio() is None  # no frame yet
    for _ in range(3):
        meter.add(np.full((8, 8, 3), 90, np.uint8))
    assert meter.ratio() == pytest.approx(1.0)  # flat: no grid (not 0 / 0)
    assert meter.frames == 3
    assert seam_ratio([np.zeros((1, 1, 3), np.uint8)]) is None  # no step to compare
    lines = np.full((8, 8, 3), 90, np.uint8)
    lines[:, 4:] = 120  # one vertical edge, between columns 3 and 4: steps at x = 3 only
    frames = [np.full((8, 8, 3), 90, np.uint8), lines]
    # mean step at x ≡ 3 (mod 4), the only such x: 30 in one frame of two; elsewhere 0
    assert seam_ratio(frames) == pytest.approx((15 + 1e-3) / 1e-3, rel=1e-3)


def test_known_steps_give_their_ratio():
    """Raw frames (no MP4) whose steps are known: the ratio is the step on the grid over the
    step elsewhere, at the period and phase that score most, along either axis."""
    def frame_of_steps(steps: list[float]) -> np.ndarray:
        row = np.cumsum([0.0, *steps])  # (len(steps) + 1,) grey levels
        return rgb(np.tile(row, (len(row), 1)))

    two = frame_of_steps([1, 3] * 31 + [1])  # a 2-pixel grid: step 3 at odd x, 1 at even x
    four = frame_of_steps([1, 1, 5, 1] * 15 + [1, 1, 5])  # step 5 at x ≡ 2 (mod 4)
    for frame, ratio in ((two, 3), (four, 5)):
        assert seam_ratio([frame]) == pytest.approx(ratio, rel=1e-3)
        assert seam_ratio([frame.transpose(1, 0, 2)]) == pytest.approx(ratio, rel=1e-3)

