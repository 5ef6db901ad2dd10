"""The keypoint schema shared by extraction, motion, pose maps, regions and attention masks.

Every part is (T, N, 3): x and y in pixels of a `width` × `height` frame, and a confidence in
[0, 1] that is 0 where nothing was detected. Left and right are the person's own (mediapipe's
convention), so the left hand usually appears on the image's right side.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from posecast.errors import InputError
from posecast.paths import require_file

# Bounds checked on a keypoint file's headers before its frames are read.
MIN_FPS, MAX_FPS = 1.0, 240.0
MAX_FRAMES = 90_000  # an hour at 25 fps: about 600 MB as float32

PART_SIZES = {"body": 33, "face": 478, "left_hand": 21, "right_hand": 21}
PARTS = tuple(PART_SIZES)

# Indices into the 33 mediapipe body points used here.
NOSE = 0
LEFT_EYE, RIGHT_EYE = 2, 5
LEFT_EAR, RIGHT_EAR = 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
LEFT_ELBOW, RIGHT_ELBOW = 13, 14
LEFT_WRIST, RIGHT_WRIST = 15, 16
LEFT_HIP, RIGHT_HIP = 23, 24
# The upper-body joints that frame similarity aligns (METHOD.md's B).
UPPER_BODY = (NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, LEFT_SHOULDER, RIGHT_SHOULDER,
              LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST, LEFT_HIP, RIGHT_HIP)


@dataclass(frozen=True)
class Keypoints:
    """A keypoint sequence of T frames (T = 1 for an image)."""

    body: np.ndarray  # (T, 33, 3) float32
    face: np.ndarray  # (T, 478, 3) float32
    left_hand: np.ndarray  # (T, 21, 3) float32
    right_hand: np.ndarray  # (T, 21, 3) float32
    fps: float
    width: int
    height: int
    source: str = ""

    def __post_init__(self) -> None:
        for part, size in PART_SIZES.items():
            array = np.asarray(getattr(self, part), dtype=np.float32)
            object.__setattr__(self, part, array)
            if array.ndim != 3 or array.shape[1:] != (size, 3):
                raise ValueError(f"keypoints part '{part}' must be (T, {size}, 3), got "
                                 f"{array.shape}")
            if array.shape[0] != self.body.shape[0]:
                raise ValueError(f"keypoints part '{part}' has {array.shape[0]} frames, "
                                 f"body has {self.body.shape[0]}")
            if not np.isfinite(array).all():
                raise ValueError(f"keypoints part '{part}' holds NaN or infinite values")
            confidence = array[..., 2]
            if confidence.min(initial=0.0) < 0.0 or confidence.max(initial=0.0) > 1.0:
                raise ValueError(f"keypoints part '{part}' has confidences outside [0, 1]")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError(f"keypoints need a positive size and fps, got "
                             f"{self.width}x{self.height} at {self.fps} fps")

    @classmethod
    def empty(cls, frames: int, width: int, height: int, fps: float = 25.0,
              source: str = "") -> Keypoints:
        """All-zero keypoints (nothing detected) for `frames` frames."""
        parts = {part: np.zeros((frames, size, 3), np.float32) for part, size in PART_SIZES.items()}
        return cls(**parts, fps=fps, width=width, height=height, source=source)

    def __len__(self) -> int:
        return self.body.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray) -> Keypoints:
        """Frames `index` (an int keeps a frame axis of length 1; an array picks frames)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return replace(self, **{part: getattr(self, part)[index] for part in PARTS})

    def detected(self, part: str) -> np.ndarray:
        """(T,) bool: whether `part` was found in each frame."""
        return (getattr(self, part)[..., 2] > 0).any(axis=1)

    def detection_rates(self) -> dict[str, float]:
        """The fraction of frames in which each part was found."""
        return {part: float(self.detected(part).mean()) if len(self) else 0.0 for part in PARTS}

    @staticmethod
    def concatenate(sequences: list[Keypoints]) -> Keypoints:
        first = sequences[0]
        parts = {part: np.concatenate([getattr(s, part) for s in sequences]) for part in PARTS}
        return replace(first, **parts)

    def save(self, path: str | os.PathLike, **extra: str) -> None:
        """Write the `.npz` layout of DESIGN.md (no pickled objects), plus `extra` strings (a
        cache entry's clip fingerprint)."""
        np.savez_compressed(Path(path), **{part: getattr(self, part) for part in PARTS},
                            fps=np.float64(self.fps), width=np.int64(self.width),
                            height=np.int64(self.height), source=np.str_(self.source),
                            **{name: np.str_(value) for name, value in extra.items()})

    @classmethod
    def load(cls, path: str | os.PathLike, seconds: float | None = None) -> Keypoints:
        """Read a keypoint file: the frames covering its first `seconds` (all of them when
        None). Headers are checked before any frame is read (fps 1–240, at most MAX_FRAMES
        frames read), and only the frames needed are decompressed, so a small file of zeros
        cannot claim gigabytes."""
        path = require_file(path, "keypoint", (".npz",))
        try:
            with zipfile.ZipFile(path) as archive:
                members = {name.removesuffix(".npy"): name for name in archive.namelist()}
                missing = [key for key in (*PARTS, "fps", "width", "height")
                           if key not in members]
                if missing:
                    raise InputError(f"{path}: not a posecast keypoint file "
                                     f"(missing {', '.join(missing)})")
                small = {key: _read_member(archive, members[key])
                         for key in ("fps", "width", "height", "source") if key in members}
                fps = float(small["fps"])
                if not MIN_FPS <= fps <= MAX_FPS:
                    raise InputError(f"{path}: the keypoint file's fps is {fps:g}; posecast "
                                     f"takes {MIN_FPS:g}–{MAX_FPS:g} fps (the file is damaged, "
                                     "or resample the poses)")
                total = _member_frames(archive, members["body"])
                if total == 0:
                    raise InputError(f"{path}: the keypoint file holds no frames")
                wanted = total if seconds is None else min(total,
                                                            math.ceil(seconds * fps) + 1)
                if wanted > MAX_FRAMES:
                    raise InputError(f"{path}: the keypoint file holds {total} frames, over "
                                     f"the {MAX_FRAMES} posecast reads at once "
                                     f"({MAX_FRAMES / fps / 60:.0f} min at its {fps:g} fps); "
                                     "cut it into shorter files")
                parts = {part: _read_member(archive, members[part], wanted) for part in PARTS}
                return cls(**parts, fps=fps, width=int(small["width"]),
                           height=int(small["height"]),
                           source=str(small["source"]) if "source" in small else "")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise InputError(f"{path}: not a readable keypoint file ({error or 'empty'})"
                             ) from None


def _member_frames(archive: zipfile.ZipFile, name: str) -> int:
    """The first dimension of an `.npy` member, from its header alone."""
    with archive.open(name) as stream:
        shape, _, _ = _npy_header(stream)
    return shape[0] if shape else 0


def _read_member(archive: zipfile.ZipFile, name: str, rows: int | None = None) -> np.ndarray:
    """An `.npy` member of an `.npz`, or its first `rows` rows, decompressed only that far."""
    with archive.open(name) as stream:
        shape, fortran_order, dtype = _npy_header(stream)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects")
        if rows is not None and shape:
            if fortran_order and rows < shape[0]:
                raise ValueError(f"{name} is stored column-major; save it row-major")
            shape = (min(rows, shape[0]), *shape[1:])
        count = math.prod(shape)
        data = stream.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{name} is cut short")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def _npy_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of an `.npy` stream, which is left at its data."""
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    return reader(stream)


def resample(poses: Keypoints, fps: float, frames: int) -> Keypoints:
    """The pose nearest in time for each of `frames` frames at `fps` (last one held)."""
    index = np.round(np.arange(frames) * poses.fps / fps).astype(int)
    return replace(poses[np.minimum(index, len(poses) - 1)], fps=fps)
