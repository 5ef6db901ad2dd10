"""Generated clips of a simple drawn person, with exact keypoints (for tests and smoke runs).

Each clip: a coloured background, a torso, a head whose mouth opens and closes, and two arms
whose hands swing. The keypoint cache is written alongside (mediapipe would not find a drawn
person), so `ClipDataset` uses the true keypoints. Deterministic for a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from posecast.media import AudioClip, write_mp4
from posecast.pose.cache import KEYPOINT_CACHE, write_cache_entry
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_EYE,
    LEFT_HIP,
    LEFT_SHOULDER,
    LEFT_WRIST,
    NOSE,
    RIGHT_ELBOW,
    RIGHT_EYE,
    RIGHT_HIP,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    Keypoints,
)


def _ring(centre, radius_x, radius_y, count, phase=0.0):
    angles = np.linspace(0, 2 * np.pi, count, endpoint=False) + phase
    return np.stack([centre[0] + radius_x * np.cos(angles),
                     centre[1] + radius_y * np.sin(angles)], -1)


def synthetic_clip(size: int, frames: int, fps: float, rng: np.random.Generator
                   ) -> tuple[np.ndarray, Keypoints]:
    """(frames, size, size, 3) uint8 video and its keypoints."""
    background = rng.integers(40, 200, 3)
    skin = rng.integers(120, 255, 3)
    shirt = rng.integers(0, 255, 3)
    head = np.array([size * rng.uniform(0.42, 0.58), size * 0.28])
    head_r = size * rng.uniform(0.11, 0.14)
    shoulder_y = head[1] + head_r * 1.9
    half_width = size * rng.uniform(0.17, 0.22)
    speed, phase = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi)
    kp = Keypoints.empty(frames, size, size, fps)
    body, face = kp.body.copy(), kp.face.copy()
    left, right = kp.left_hand.copy(), kp.right_hand.copy()
    video = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        time = t / fps
        mouth = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * time + phase)  # opening in [0, 1]
        swing = np.sin(2 * np.pi * speed * time / 4 + phase)
        nod = head + np.array([0.0, size * 0.01 * np.sin(2 * np.pi * time)])
        shoulders = {RIGHT_SHOULDER: nod * [1, 0] + [-half_width, shoulder_y],
                     LEFT_SHOULDER: nod * [1, 0] + [half_width, shoulder_y]}
        joints = dict(shoulders)
        joints[RIGHT_ELBOW] = shoulders[RIGHT_SHOULDER] + [-size * 0.05, size * 0.2]
        joints[LEFT_ELBOW] = shoulders[LEFT_SHOULDER] + [size * 0.05, size * 0.2]
        joints[RIGHT_WRIST] = joints[RIGHT_ELBOW] + [size * 0.1 * swing, -size * 0.12]
        joints[LEFT_WRIST] = joints[LEFT_ELBOW] + [-size * 0.1 * swing, -size * 0.08 * (1 - swing)]
        joints[RIGHT_HIP] = shoulders[RIGHT_SHOULDER] + [size * 0.03, size * 0.45]
        joints[LEFT_HIP] = shoulders[LEFT_SHOULDER] + [-size * 0.03, size * 0.45]
        joints[NOSE] = nod
        joints[RIGHT_EYE] = nod + [-head_r * 0.4, -head_r * 0.25]
        joints[LEFT_EYE] = nod + [head_r * 0.4, -head_r * 0.25]
        for joint, xy in joints.items():
            body[t, joint] = (*xy, 1.0)
        face[t, :, :2] = _ring(nod, head_r, head_r * 1.15, 478)
        face[t, :, 2] = 1.0
        for hand, wrist in ((left, joints[LEFT_WRIST]), (right, joints[RIGHT_WRIST])):
            hand[t, :, :2] = _ring(wrist, size * 0.035, size * 0.035, 21)
            hand[t, :, 2] = 1.0

        frame = np.empty((size, size, 3), np.uint8)
        frame[:] = background
        point = lambda xy: tuple(int(round(v)) for v in xy)  # noqa: E731
        torso = np.array([joints[j] for j in (RIGHT_SHOULDER, LEFT_SHOULDER, LEFT_HIP,
                                               RIGHT_HIP)], np.int32)
        cv2.fillConvexPoly(frame, torso, tuple(int(c) for c in shirt))
        arm_width = max(2, size // 18)
        for chain in ((RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST),
                      (LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST)):
            for a, b in zip(chain[:-1], chain[1:], strict=True):
                cv2.line(frame, point(joints[a]), point(joints[b]),
                         tuple(int(c) for c in shirt // 2 + 60), arm_width)
        for wrist in (LEFT_WRIST, RIGHT_WRIST):
            cv2.circle(frame, point(joints[wrist]), max(2, int(size * 0.035)),
                       tuple(int(c) for c in skin), -1)
        cv2.ellipse(frame, point(nod), (int(head_r), int(head_r * 1.15)), 0, 0, 360,
                    tuple(int(c) for c in skin), -1)
        for eye in (LEFT_EYE, RIGHT_EYE):
            cv2.circle(frame, point(joints[eye]), max(1, int(head_r * 0.12)), (20, 20, 20), -1)
        mouth_centre = nod + [0, head_r * 0.5]
        cv2.ellipse(frame, point(mouth_centre), (int(head_r * 0.4), max(1, int(head_r * 0.3
                    * mouth))), 0, 0, 360, (90, 20, 30), -1)
        video[t] = frame
    keypoints = Keypoints(body, face, left, right, fps, size, size, source="synthetic")
    return video, keypoints


def make_synthetic_clips(folder: str | os.PathLike, clips: int = 4, size: int = 64,
                         frames: int = 16, fps: float = 25.0, seed: int = 0) -> list[Path]:
    """Write `clips` MP4s (with a quiet tone as audio) and their keypoint cache into `folder`."""
    folder = Path(folder)
    cache = folder / KEYPOINT_CACHE
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(clips):
        video, keypoints = synthetic_clip(size, frames, fps, rng)
        path = folder / f"clip_{index:03d}.mp4"
        seconds = frames / fps
        tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000)
        with write_mp4(path, fps, AudioClip(tone.astype(np.float32), 16000), crf=12) as mp4:
            for frame in video:
                mp4.write(frame)
        write_cache_entry(keypoints, folder, path, cache)
        paths.append(path)
    return paths
