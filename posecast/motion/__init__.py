"""Motion from speech: an audio track and a portrait's keypoints → a pose sequence.

Two models share one interface, `generate(clip, portrait, fps, frames, seed) → Keypoints`, and
`stream(…, chunk)` → the same poses as consecutive chunks, with memory bounded whatever the
clip's length (what a render reads): the built-in weight-free `ProceduralMotion`
(procedural.py) and a learned sequence model trained with `posecast train-motion` (learned.py),
chosen by `load_motion`. Both read speech features (features.py).
"""

from __future__ import annotations

import math

from posecast.media import AudioClip
from posecast.motion.features import SpeechFeatures, speech_features
from posecast.motion.procedural import MotionStyle, ProceduralMotion
from posecast.pose.keypoints import Keypoints

BUILT_IN = "procedural"

__all__ = ["BUILT_IN", "MotionStyle", "ProceduralMotion", "SpeechFeatures", "frame_count",
           "load_motion", "motion_from_speech", "speech_features"]


def frame_count(duration: float, fps: float) -> int:
    """Video frames covering `duration` seconds: ceil, as the MP4 writer pads to."""
    return max(1, math.ceil(round(duration * fps, 6)))


def load_motion(spec: str | None = None, device: str = "cpu", revision: str | None = None):
    """`procedural` (or None): the built-in model; otherwise a learned model's folder or
    Hub repo id (at `revision`)."""
    if spec is None or spec == BUILT_IN:
        return ProceduralMotion()
    from posecast.motion.learned import LearnedMotion

    return LearnedMotion.from_pretrained(spec, device, revision)


def motion_from_speech(clip: AudioClip, portrait: Keypoints, fps: float = 25.0, seed: int = 0,
                       model=None) -> Keypoints:
    """The portrait's keypoints moving with the speech, one frame per video frame."""
    model = model or ProceduralMotion()
    return model.generate(clip, portrait, fps, frame_count(clip.duration, fps), seed)
