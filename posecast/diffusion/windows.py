"""Long videos: windows of W frames overlapping by O, fused at every denoising step.

At each step every window predicts the velocity of its frames and the predictions are averaged
with weights that fall linearly towards a window's overlapping edges, so neighbouring windows
hand over smoothly. Any number of frames works; activation memory is bounded by W.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def window_starts(frames: int, window: int, overlap: int) -> list[int]:
    """First frame of each window; the last window ends at the last frame."""
    if frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, frames - window + 1, stride))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts


def blend_weights(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """(length,) weights: a linear ramp over `overlap` frames at each inner edge, 1 elsewhere."""
    weights = torch.ones(length, dtype=torch.float64)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float64) / (overlap + 1)
    if overlap and not first:
        weights[:overlap] = ramp
    if overlap and not last:
        weights[length - overlap:] = ramp.flip(0)
    return weights


def windowed_velocity(window_velocity: Callable[[torch.Tensor, float, int, int], torch.Tensor],
                      frames: int, window: int, overlap: int
                      ) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Turn window_velocity(x_window, t, start, end) into a velocity over all frames.

    x has frames on dimension 1: (B, T, …).
    """
    starts = window_starts(frames, window, overlap)

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        if len(starts) == 1:
            return window_velocity(x, t, 0, frames)
        total = torch.zeros_like(x, dtype=torch.float32)
        weight_sum = torch.zeros(frames, dtype=torch.float32, device=x.device)
        for index, start in enumerate(starts):
            end = min(start + window, frames)
            weights = blend_weights(end - start, overlap, index == 0,
                                    index == len(starts) - 1).to(x.device, torch.float32)
            v = window_velocity(x[:, start:end], t, start, end).float()
            total[:, start:end] += v * weights.view(1, -1, *([1] * (x.dim() - 2)))
            weight_sum[start:end] += weights
        return (total / weight_sum.view(1, -1, *([1] * (x.dim() - 2)))).to(x.dtype)

    return velocity
