"""A long pose sequence read chunk by chunk, holding only its recent frames.

A motion model's `stream` yields consecutive Keypoints chunks; a render reads the sequence
through `PoseStream` as if it were one Keypoints (`len`, slices `[start:end]`) while only the
last `keep` frames (and at most one chunk ahead) exist, so memory does not grow with the audio's
length. Reads must move forwards: a slice may start at most `keep` frames before the furthest
frame read so far.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import numpy as np

from posecast.pose.keypoints import Keypoints


class PoseStream:
    def __init__(self, chunks: Iterable[Keypoints], frames: int, keep: int,
                 length: int | None = None) -> None:
        """`chunks`: consecutive pieces of a `frames`-frame sequence; `keep`: frames kept
        behind the furthest one read; `length`: the length it reports (frames past the
        source's end hold its last pose)."""
        self.chunks: Iterator[Keypoints] = iter(chunks)
        self.frames, self.keep = frames, keep
        self.length = frames if length is None else length
        self.held: Keypoints | None = None  # source frames first … first + len(held) − 1
        self.first = 0

    def __len__(self) -> int:
        return self.length

    def hold_to_length(self, length: int) -> PoseStream:
        """The same stream reporting `length` frames, its last pose held past its end (it
        takes over the chunks and the frames held: read one or the other)."""
        held = copy.copy(self)
        held.length = length
        return held

    def __getitem__(self, frames: slice) -> Keypoints:
        start, stop, step = frames.indices(self.length)
        if step != 1 or stop <= start:
            raise ValueError(f"a pose stream reads forward ranges, not {frames}")
        index = np.minimum(np.arange(start, stop), self.frames - 1)  # source frames
        self._read_to(int(index[-1]) + 1)
        if index[0] < self.first:
            raise ValueError(f"frame {index[0]} of the pose stream was already dropped "
                             f"(frames from {self.first} are kept)")
        return self.held[index - self.first]

    def _read_to(self, end: int) -> None:
        """Read chunks until source frame end − 1 is held; drop frames more than `keep`
        behind it."""
        while self.held is None or self.first + len(self.held) < end:
            chunk = next(self.chunks, None)
            if chunk is None:
                raise ValueError(f"the pose stream ended before frame {end - 1} of "
                                 f"{self.frames}")
            self.held = chunk if self.held is None else \
                Keypoints.concatenate([self.held, chunk])
        drop = max(0, end - self.keep - self.first)
        if drop:
            self.held, self.first = self.held[drop:], self.first + drop
