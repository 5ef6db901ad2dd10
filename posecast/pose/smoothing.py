"""Temporal smoothing of keypoint tracks with the One-Euro filter (Casiez et al., CHI 2012).

A low-pass filter whose cutoff rises with speed: still points lose their jitter, fast gestures
keep their timing. Coordinates are filtered in units of the frame's longer side, so the
defaults do not depend on resolution.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from posecast.pose.keypoints import PARTS, Keypoints


def _alpha(cutoff: np.ndarray | float, rate: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * cutoff)
    return 1.0 / (1.0 + tau * rate)


def one_euro(track: np.ndarray, present: np.ndarray, rate: float, min_cutoff: float = 1.0,
             beta: float = 1.0, derivative_cutoff: float = 1.0) -> np.ndarray:
    """Filter `track` (T, N, 2) at `rate` frames/s; `present` (T, N) bool restarts the filter
    after gaps, so a point that reappears does not glide in from where it was lost."""
    out = track.astype(np.float64).copy()
    velocity = np.zeros(track.shape[1:], np.float64)
    previous_present = np.zeros(track.shape[1], bool)
    alpha_derivative = _alpha(derivative_cutoff, rate)
    for t in range(track.shape[0]):
        continuing = present[t] & previous_present  # (N,)
        raw_velocity = (track[t] - out[t - 1]) * rate if t else np.zeros_like(velocity)
        velocity = np.where(continuing[:, None],
                            alpha_derivative * raw_velocity + (1 - alpha_derivative) * velocity,
                            0.0)
        cutoff = min_cutoff + beta * np.linalg.norm(velocity, axis=-1, keepdims=True)
        alpha = _alpha(cutoff, rate)
        smoothed = alpha * track[t] + (1 - alpha) * (out[t - 1] if t else track[t])
        out[t] = np.where(continuing[:, None], smoothed, track[t])
        previous_present = present[t]
    return out.astype(np.float32)


def smooth_keypoints(keypoints: Keypoints, min_cutoff: float = 1.0,
                     beta: float = 10.0) -> Keypoints:
    """One-Euro filter every point of every part over time; confidences are left unchanged.

    Defaults: a still point is low-passed at 1 Hz; at a hand-gesture speed (0.4 frame widths
    per second) the cutoff rises to 5 Hz, so the track lags by under a frame.
    """
    scale = float(max(keypoints.width, keypoints.height))
    parts = {}
    for part in PARTS:
        array = getattr(keypoints, part).copy()
        present = array[..., 2] > 0
        array[..., :2] = one_euro(array[..., :2] / scale, present, keypoints.fps,
                                  min_cutoff, beta) * scale
        parts[part] = array
    return replace(keypoints, **parts)
