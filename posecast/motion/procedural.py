"""The built-in, weight-free motion model: speech features → the portrait's keypoints in motion.

Everything is a displacement of the portrait's own keypoints (pixels of the portrait), in the
face's frame (x along the eyes' line, y down the face), so any face size or roll works:
  mouth   opening a ∈ [0, 1] from loudness (fast attack, slower release); visemes from the
          spectral centroid: "round" pulls the lip corners in, "wide" pushes them out; the jaw,
          lower lip and chin drop by a · 0.35 · mouth width, fading towards the jaw's sides;
          the upper lip lifts a little. Silence gives a = 0: the portrait's own, still mouth.
  head    roll, sway and nod about the neck: slow seeded drift plus pitch (roll) and loudness
          changes (nods), smoothed.
  blinks  every 2–6 s (seeded), 0.2 s each: upper lids close onto the lower lids.
  hands   when the portrait shows wrists: a short down-and-back stroke of a wrist (and its hand;
          the elbow follows at 40 %) at each stressed onset.
Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from posecast.media import AudioClip
from posecast.motion.features import SpeechFeatures, speech_features
from posecast.pose import face_mesh as fm
from posecast.pose.keypoints import (
    LEFT_ELBOW,
    LEFT_SHOULDER,
    LEFT_WRIST,
    RIGHT_ELBOW,
    RIGHT_SHOULDER,
    RIGHT_WRIST,
    Keypoints,
)

HEAD_BODY_POINTS = tuple(range(0, 11))  # nose, eyes, ears, mouth of the body model
HAND_BODY_POINTS = {LEFT_WRIST: (15, 17, 19, 21), RIGHT_WRIST: (16, 18, 20, 22)}
HAND_PART = {LEFT_WRIST: "left_hand", RIGHT_WRIST: "right_hand"}
ELBOW = {LEFT_WRIST: LEFT_ELBOW, RIGHT_WRIST: RIGHT_ELBOW}


@dataclass(frozen=True)
class MotionStyle:
    """How much of each motion; 1 is the default amount."""

    mouth: float = 1.0
    head: float = 1.0
    blinks: float = 1.0  # scales the blink rate
    gestures: float = 1.0


def _smooth(values: np.ndarray, fps: float, seconds: float) -> np.ndarray:
    """One-pole low-pass, run forwards then backwards (no lag)."""
    if seconds <= 0 or len(values) == 0:
        return values
    alpha = 1 - np.exp(-1 / (fps * seconds))
    out = values.astype(np.float64).copy()
    for direction in (1, -1):
        series = out[::direction].copy()
        for i in range(1, len(series)):
            series[i] = series[i - 1] + alpha * (series[i] - series[i - 1])
        out = series[::direction]
    return out


def mouth_envelope(loudness: np.ndarray, fps: float) -> np.ndarray:
    """Opening in [0, 1]: opens within ~30 ms, closes within ~80 ms, 0 in silence."""
    attack, release = 1 - np.exp(-1 / (fps * 0.03)), 1 - np.exp(-1 / (fps * 0.08))
    opening = np.zeros(len(loudness))
    level = 0.0
    for i, target in enumerate(np.clip((loudness - 0.15) / 0.7, 0, 1)):
        level += (attack if target > level else release) * (target - level)
        opening[i] = level if target > 0 or level > 0.02 else 0.0
    return opening


def _drift(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Slow smooth noise in about [−1, 1]: a few sinusoids of 0.1–0.4 Hz, random phases."""
    times = np.arange(frames) / fps
    frequencies = rng.uniform(0.1, 0.4, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    return np.sin(2 * np.pi * frequencies[:, None] * times[None] + phases[:, None]).mean(0) * 1.4


@dataclass(frozen=True)
class FaceFrame:
    """The portrait's face geometry: origin at the mouth, unit axes, sizes in pixels."""

    mouth: np.ndarray  # (2,)
    right: np.ndarray  # (2,) along the eyes' line
    down: np.ndarray  # (2,) towards the chin
    mouth_width: float
    face_height: float
    face_width: float

    @classmethod
    def of(cls, face: np.ndarray) -> FaceFrame:
        """From one frame's (478, 3) face points."""
        xy = face[:, :2].astype(np.float64)
        down = xy[fm.CHIN] - xy[fm.FOREHEAD]
        face_height = float(np.linalg.norm(down))
        down /= max(face_height, 1e-6)
        right = np.array([-down[1], down[0]])
        mouth = (xy[fm.UPPER_LIP_INNER_CENTRE] + xy[fm.LOWER_LIP_INNER_CENTRE]) / 2
        mouth_width = float(np.linalg.norm(xy[fm.MOUTH_CORNERS[0]] - xy[fm.MOUTH_CORNERS[1]]))
        across = (xy - mouth) @ right
        return cls(mouth, right, down, mouth_width, face_height, float(np.ptp(across[:468])))

    def local(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        relative = xy - self.mouth
        return relative @ self.right, relative @ self.down


class ProceduralMotion:
    """`generate(clip, portrait, fps, frames, seed)` → Keypoints of `frames` frames."""

    name = "procedural"

    def __init__(self, style: MotionStyle | None = None) -> None:
        self.style = style or MotionStyle()

    def generate(self, clip: AudioClip, portrait: Keypoints, fps: float, frames: int,
                 seed: int = 0) -> Keypoints:
        return self.from_features(speech_features(clip, fps, frames), portrait, seed)

    def from_features(self, features: SpeechFeatures, portrait: Keypoints, seed: int = 0
                      ) -> Keypoints:
        frames, fps = features.frames, features.fps
        rng = np.random.default_rng(seed)
        face = np.repeat(portrait.face[:1].astype(np.float64), frames, axis=0)
        body = np.repeat(portrait.body[:1].astype(np.float64), frames, axis=0)
        hands = {part: np.repeat(getattr(portrait, part)[:1].astype(np.float64), frames, 0)
                 for part in ("left_hand", "right_hand")}
        has_face = (portrait.face[0, :468, 2] > 0).all()
        if has_face:
            geometry = FaceFrame.of(portrait.face[0])
            self._mouth(face, geometry, features)
            self._blinks(face, fps, rng)
            self._head(face, body, geometry, features, rng)
        self._gestures(body, hands, features, rng)
        return replace(portrait, body=body.astype(np.float32), face=face.astype(np.float32),
                       left_hand=hands["left_hand"].astype(np.float32),
                       right_hand=hands["right_hand"].astype(np.float32), fps=fps)

    def _mouth(self, face: np.ndarray, geometry: FaceFrame, features: SpeechFeatures) -> None:
        opening = mouth_envelope(features.loudness, features.fps) * self.style.mouth
        round_ = opening * np.clip((0.4 - features.centroid) / 0.4, 0, 1)
        wide = opening * np.clip((features.centroid - 0.6) / 0.4, 0, 1)
        xy = face[0, :, :2]
        across, below = geometry.local(xy)
        lip_thickness = 0.04 * geometry.face_height
        sideways = np.clip(1 - (across / (0.45 * geometry.face_width)) ** 2, 0, 1)
        lower = np.zeros(len(xy))
        lower[(below > lip_thickness) & (below < 0.6 * geometry.face_height)] = 1
        lower[list(fm.LOWER_LIP)] = 1
        lower *= sideways
        lower[list(fm.MOUTH_CORNERS + fm.INNER_MOUTH_CORNERS)] = 0.5
        upper = np.zeros(len(xy))
        upper[list(fm.UPPER_LIP)] = -0.12 * sideways[list(fm.UPPER_LIP)]
        lips = np.zeros(len(xy))
        lips[list(fm.UPPER_LIP + fm.LOWER_LIP + fm.MOUTH_CORNERS + fm.INNER_MOUTH_CORNERS)] = 1
        drop = 0.35 * geometry.mouth_width * opening  # (T,)
        down = drop[:, None] * (lower + upper)[None]  # (T, N) pixels along the face's down
        spread = (-0.3 * round_ + 0.15 * wide)[:, None] * (across * lips)[None]  # (T, N)
        face[:, :, :2] += down[..., None] * geometry.down + spread[..., None] * geometry.right

    def _blinks(self, face: np.ndarray, fps: float, rng: np.random.Generator) -> None:
        frames = len(face)
        closure = np.zeros(frames)
        rate = max(self.style.blinks, 1e-3)
        time = rng.uniform(0.5, 2.0)
        profile_times = np.array([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])
        profile = np.array([0.0, 0.6, 1.0, 0.9, 0.4, 0.0])
        while self.style.blinks > 0 and time < frames / fps:
            offsets = np.arange(int(np.ceil(0.2 * fps)) + 1) / fps
            index = np.round((time + offsets) * fps).astype(int)
            keep = index < frames
            closure[index[keep]] = np.maximum(closure[index[keep]],
                                              np.interp(offsets[keep], profile_times, profile))
            time += rng.uniform(2.0, 6.0) / rate
        for lids, iris in ((fm.RIGHT_EYE_LIDS, fm.RIGHT_IRIS), (fm.LEFT_EYE_LIDS, fm.LEFT_IRIS)):
            upper, lower = (list(points) for points in zip(*lids, strict=True))
            gap = face[:, lower, :2] - face[:, upper, :2]
            face[:, upper, :2] += 0.9 * closure[:, None, None] * gap
            if face.shape[1] > max(iris):
                face[:, list(iris), :2] += 0.3 * closure[:, None, None] * gap.mean(1)[:, None]

    def _head(self, face, body, geometry: FaceFrame, features: SpeechFeatures, rng) -> None:
        frames, fps = features.frames, features.fps
        amount = self.style.head
        loud = _smooth(features.loudness, fps, 0.15)
        emphasis = np.clip(loud - _smooth(features.loudness, fps, 0.8), 0, None)
        roll = np.radians(amount * (1.2 * _drift(frames, fps, rng)
                                    + 1.5 * np.tanh(_smooth(features.pitch, fps, 0.3) / 4)))
        nod = amount * geometry.face_height * (0.008 * _drift(frames, fps, rng)
                                               + 0.06 * _smooth(emphasis, fps, 0.1))
        sway = amount * geometry.face_height * 0.012 * _drift(frames, fps, rng)
        pivot = geometry.mouth + 0.75 * geometry.face_height * geometry.down  # about the neck
        cos, sin = np.cos(roll)[:, None], np.sin(roll)[:, None]
        shift = nod[:, None, None] * geometry.down + sway[:, None, None] * geometry.right
        for points, index in ((face, slice(None)), (body, list(HEAD_BODY_POINTS))):
            xy = points[:, index, :2] - pivot
            rotated = np.stack([cos * xy[..., 0] - sin * xy[..., 1],
                                sin * xy[..., 0] + cos * xy[..., 1]], -1)
            points[:, index, :2] = rotated + pivot + shift

    def _gestures(self, body, hands, features: SpeechFeatures, rng) -> None:
        if self.style.gestures <= 0 or len(features.beats) == 0:
            return
        shoulders = body[0, [LEFT_SHOULDER, RIGHT_SHOULDER]]
        if (shoulders[:, 2] < 0.5).any():
            return
        width = float(np.linalg.norm(shoulders[0, :2] - shoulders[1, :2]))
        visible = [wrist for wrist in (LEFT_WRIST, RIGHT_WRIST) if body[0, wrist, 2] > 0.5]
        if not visible:
            return
        times = np.arange(len(body)) / features.fps
        strokes = {wrist: np.zeros((len(body), 2)) for wrist in visible}
        peak = 0.15  # seconds to the lowest point of a stroke
        for beat in features.beats:
            wrist = visible[int(rng.integers(len(visible)))]
            amplitude = rng.uniform(0.5, 1.0) * 0.12 * width * self.style.gestures
            direction = np.array([rng.uniform(-0.4, 0.4), 1.0])
            lag = np.clip(times - beat, 0, None) / peak
            pulse = np.where(times >= beat, lag * np.exp(1 - lag), 0.0)
            strokes[wrist] += amplitude * pulse[:, None] * direction
        for wrist, stroke in strokes.items():
            body[:, list(HAND_BODY_POINTS[wrist]), :2] += stroke[:, None]
            body[:, ELBOW[wrist], :2] += 0.4 * stroke
            hand = hands[HAND_PART[wrist]]
            present = hand[0, :, 2] > 0
            hand[:, present, :2] += stroke[:, None]
