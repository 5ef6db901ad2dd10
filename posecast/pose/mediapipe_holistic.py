"""mediapipe 0.10.21's Holistic solution behind a small interface, with its C++ logging muted.

mediapipe's C++ side writes TF Lite / absl log lines straight to file descriptor 2, also from
its worker threads; no environment variable silences them. So while a detector is open, fd 2
points at /dev/null and Python's `sys.stderr` (progress bars, messages) writes to a duplicate
of the real stderr instead.

Importing mediapipe also imports matplotlib.pyplot (for plotting helpers posecast never
calls), about half of mediapipe's import time; a stand-in module takes its place during the
import and imports the real one only if something uses it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types

import numpy as np

from posecast.native_stderr import quiet_stderr
from posecast.pose.keypoints import PART_SIZES


class _ImportedOnUse(types.ModuleType):
    """A stand-in for a module: the first attribute read imports the real one."""

    def __getattr__(self, name: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def import_mediapipe():
    """Import mediapipe quietly (the import can print from C++), without matplotlib."""
    stand_ins = {}
    if "matplotlib" not in sys.modules:
        stand_ins = {name: _ImportedOnUse(name) for name in ("matplotlib", "matplotlib.pyplot")}
        stand_ins["matplotlib"].pyplot = stand_ins["matplotlib.pyplot"]
    sys.modules.update(stand_ins)
    try:
        with quiet_stderr():
            import mediapipe
    finally:
        for name, module in stand_ins.items():  # later imports get the real modules
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return mediapipe


class HolisticDetector:
    """Face (478 points with irises), body (33) and both hands (21 each) for RGB frames.

    `video=True` tracks landmarks from frame to frame (faster, steadier); `video=False` detects
    every image from scratch. Pose uses model_complexity=1, the size bundled in the wheel.
    """

    def __init__(self, video: bool = False) -> None:
        mediapipe = import_mediapipe()
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(quiet_stderr())  # until close(): worker threads log too
        self._holistic = mediapipe.solutions.holistic.Holistic(
            static_image_mode=not video, model_complexity=1, smooth_landmarks=video,
            refine_face_landmarks=True)

    def __enter__(self) -> HolisticDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._holistic.close()
        finally:
            self._quiet.close()

    def detect(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """One (H, W, 3) uint8 frame → {part: (N, 3) float32} in pixels, zeros where absent.

        Body confidence is mediapipe's per-point visibility. Face and hand landmarks carry no
        per-point confidence, so their points get 1.0 when the part was detected.
        """
        height, width = rgb.shape[:2]
        result = self._holistic.process(np.ascontiguousarray(rgb))
        found = {"body": result.pose_landmarks, "face": result.face_landmarks,
                 "left_hand": result.left_hand_landmarks, "right_hand": result.right_hand_landmarks}
        parts = {}
        for part, size in PART_SIZES.items():
            array = np.zeros((size, 3), np.float32)
            landmarks = found[part]
            if landmarks is not None and len(landmarks.landmark) >= size:
                points = landmarks.landmark[:size]
                array[:, 0] = [p.x * width for p in points]
                array[:, 1] = [p.y * height for p in points]
                if part == "body":
                    array[:, 2] = np.clip([p.visibility for p in points], 0.0, 1.0)
                else:
                    array[:, 2] = 1.0
            parts[part] = array
        return parts
