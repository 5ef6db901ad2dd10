"""Keypoint extraction for an image, a video, or a folder of clips (one cached `.npz` each)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posecast.errors import DetectionError, InputError, PosecastError
from posecast.media import iter_video_frames, load_image, probe_video
from posecast.paths import VIDEO_EXTENSIONS, require_file
from posecast.pose.cache import cached_keypoints, entry_path, write_cache_entry
from posecast.pose.keypoints import MAX_FPS, MIN_FPS, PARTS, Keypoints
from posecast.pose.mediapipe_holistic import HolisticDetector
from posecast.pose.smoothing import smooth_keypoints

# Parts a portrait or clip must show unless the caller allows missing parts.
REQUIRED_PARTS = ("face", "body")
_PART_NAMES = {"face": "face", "body": "person (body)", "left_hand": "left hand",
               "right_hand": "right hand"}


def _check_required(keypoints: Keypoints, path: Path, required: tuple[str, ...]) -> None:
    rates = keypoints.detection_rates()
    missing = [_PART_NAMES[part] for part in required if rates[part] == 0.0]
    if missing:
        raise DetectionError(f"{path}: no {' and no '.join(missing)} found; use a photo or video "
                             "where the person's face and shoulders are clearly visible, or pass "
                             "--allow-missing to write zeros for what is missing")


def _stack(frames: list[dict[str, np.ndarray]], fps: float, width: int, height: int,
           source: str) -> Keypoints:
    parts = {part: np.stack([frame[part] for frame in frames]) for part in PARTS}
    return Keypoints(**parts, fps=fps, width=width, height=height, source=source)


def extract_image(image: str | os.PathLike | np.ndarray, allow_missing: bool = False,
                  source: str = "", on_note: Callable[[str], None] | None = None) -> Keypoints:
    """Keypoints (T = 1) of an image file or an (H, W, 3) uint8 RGB array.

    When the first pass finds no face, a second pass looks at the image framed in a gray
    border (`_bordered`): mediapipe's body detector, which leads its face search, misses
    some tightly cropped portraits, black-and-white ones most often, that it finds with room
    around them. `on_note` hears when the second pass found what the first did not."""
    if isinstance(image, np.ndarray):
        rgb, path = image, Path(source or "image")
    else:
        path = Path(image)
        rgb, source = load_image(path, kind="image"), str(path)
    with HolisticDetector(video=False) as detector:
        parts = detector.detect(rgb)
        if not parts["face"][:, 2].any():
            bordered, margin = _bordered(rgb)
            second = detector.detect(bordered)
            if second["face"][:, 2].any():
                for array in second.values():  # back to the image's own pixels
                    array[:, :2] -= np.where(array[:, 2:] > 0, margin, 0)
                parts = second
                if on_note is not None:
                    on_note(f"note: {path.name}: the face was found on a second pass, with the "
                            "picture framed in a border (the first found none)")
    keypoints = _stack([parts], fps=25.0, width=rgb.shape[1], height=rgb.shape[0], source=source)
    if not allow_missing:
        _check_required(keypoints, path, REQUIRED_PARTS)
    return keypoints


BORDER = 0.3  # of the longer side, on every side: the person a third smaller in the frame


def _bordered(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """(H + 2m, W + 2m, 3): `rgb` in a mid-gray border of m pixels, and m."""
    margin = round(BORDER * max(rgb.shape[:2]))
    return np.pad(rgb, ((margin, margin), (margin, margin), (0, 0)), constant_values=128), margin


def extract_video(path: str | os.PathLike, smooth: bool = False, allow_missing: bool = False,
                  on_frame: Callable[[int, int], None] | None = None) -> Keypoints:
    """Keypoints of every frame of a video, tracked from frame to frame.

    `on_frame(done, expected)` is called after each frame (`expected` comes from the header
    and may be 0 when unknown). With `smooth`, tracks are One-Euro filtered.
    """
    path = require_file(path, "video", VIDEO_EXTENSIONS)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the video file is empty (0 bytes)")
    info = probe_video(path)
    if not MIN_FPS <= info.fps <= MAX_FPS:  # keypoint files hold 1-240 fps
        raise InputError(f"{path}: {info.fps:g} frames per second; posecast takes videos of "
                         f"{MIN_FPS:g} to {MAX_FPS:g} fps: re-encode it first (ffmpeg -i "
                         f"{path.name} -r 30 {path.stem}_30fps{path.suffix})")
    expected = round(info.duration * info.fps)
    frames = []
    with HolisticDetector(video=True) as detector:
        for index, rgb in enumerate(iter_video_frames(path, info)):
            frames.append(detector.detect(rgb))
            if on_frame is not None:
                on_frame(index + 1, expected)
    if not frames:
        raise InputError(f"{path}: the video has no frames; re-export it")
    keypoints = _stack(frames, fps=info.fps, width=info.width, height=info.height,
                       source=str(path))
    if not allow_missing:
        _check_required(keypoints, path, REQUIRED_PARTS)
    return smooth_keypoints(keypoints) if smooth else keypoints


@dataclass(frozen=True)
class ClipResult:
    """What happened to one clip of a folder: 'done', 'skipped' (cached) or 'failed'."""

    clip: Path
    output: Path
    status: str
    message: str = ""


def find_clips(folder: str | os.PathLike) -> list[Path]:
    """Video files under `folder`, recursively, in a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS
                  and p.is_file() and not p.name.startswith("."))


def extract_folder(folder: str | os.PathLike, cache: str | os.PathLike, smooth: bool = False,
                   allow_missing: bool = False) -> Iterator[ClipResult]:
    """Extract every clip of `folder` into `cache`, skipping clips whose entry holds keypoints
    of that very file (pose/cache.py; a replaced clip is extracted again).

    Yields one ClipResult per clip as it finishes; a clip that fails is reported and the rest go
    on. Each `.npz` is written atomically, so an interrupted run never leaves a file that would
    later be taken as done.
    """
    folder, cache = Path(folder), Path(cache)
    for clip in find_clips(folder):
        if (cached := cached_keypoints(folder, clip, cache)) is not None:
            yield ClipResult(clip, cached, "skipped")
            continue
        output = entry_path(folder, clip, cache)
        try:
            keypoints = extract_video(clip, smooth=smooth, allow_missing=allow_missing)
        except PosecastError as error:
            yield ClipResult(clip, output, "failed", str(error))
            continue
        yield ClipResult(clip, write_cache_entry(keypoints, folder, clip, cache), "done")
