"""A video's pose inputs as a streaming student reads them: the poses held to a whole number
of chunks, and each chunk's pose maps drawn once on the host and sent to the device."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from posecast.pose.keypoints import Keypoints
from posecast.pose.stream import PoseStream


def hold_to_length(poses: Keypoints | PoseStream, frames: int) -> Keypoints | PoseStream:
    """Exactly `frames` frames: cut, or the last pose held."""
    if isinstance(poses, PoseStream):
        return poses.hold_to_length(frames)
    return poses[np.minimum(np.arange(frames), len(poses) - 1)]


class ChunkPoseMaps:
    """A video's pose maps chunk by chunk, for either family's student: each chunk's drawn
    once on the host (`draw(start, end)` → (n, H, W, 3) uint8) and copied to the device as
    uint8 without blocking (from pinned memory on CUDA), then `convert`ed there from
    (1, n, 3, H, W) uint8 to the student's input. Called for every pass of a chunk, it draws
    only on the first; the chunks before `start` are dropped, so at most this chunk's and the
    next one's (drawn ahead while the device works) are kept."""

    def __init__(self, draw: Callable[[int, int], np.ndarray], device: torch.device,
                 convert: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.draw, self.device, self.convert = draw, device, convert
        self.maps: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, start: int, end: int) -> torch.Tensor:
        if (start, end) not in self.maps:
            for key in [key for key in self.maps if key[0] < start]:
                del self.maps[key]
            drawn = torch.from_numpy(self.draw(start, end))
            if self.device.type == "cuda":
                drawn = drawn.pin_memory()
            on_device = drawn.to(self.device, non_blocking=True).permute(0, 3, 1, 2)[None]
            self.maps[start, end] = self.convert(on_device)
        return self.maps[start, end]
