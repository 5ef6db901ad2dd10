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

from collections.abc import Iterator
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
STROKE_SECONDS = 6.0  # a stroke's pulse has decayed below 1e-15 of its peak by then


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


def mouth_envelope(loudness: np.ndarray, fps: float, level: float = 0.0
                   ) -> tuple[np.ndarray, float]:
    """Opening in [0, 1]: opens within ~30 ms, closes within ~80 ms, 0 in silence; from the
    follower's `level` (a stream's last), with the level it ends at."""
    attack, release = 1 - np.exp(-1 / (fps * 0.03)), 1 - np.exp(-1 / (fps * 0.08))
    opening = np.zeros(len(loudness))
    for i, target in enumerate(np.clip((loudness - 0.15) / 0.7, 0, 1)):
        level += (attack if target > level else release) * (target - level)
        opening[i] = level if target > 0 or level > 0.02 else 0.0
    return opening, level


def drift_wave(rng: np.random.Generator):
    """Slow smooth noise in about [−1, 1] as a function of time (s): a few sinusoids of
    0.1–0.4 Hz, random phases."""
    frequencies = rng.uniform(0.1, 0.4, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    return lambda times: np.sin(2 * np.pi * frequencies[:, None] * np.asarray(times)[None]
                                + phases[:, None]).mean(0) * 1.4


def _drift(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    return drift_wave(rng)(np.arange(frames) / fps)


BLINK_TIMES = np.array([0.0, 0.04, 0.08, 0.12, 0.16, 0.2])  # seconds into a blink
BLINK_CLOSURE = np.array([0.0, 0.6, 1.0, 0.9, 0.4, 0.0])
STROKE_PEAK = 0.15  # seconds from a beat to the lowest point of its stroke


def stroke_pulse(since_beat: np.ndarray) -> np.ndarray:
    """A stroke's displacement (peak 1) `since_beat` seconds after its beat: down, then back."""
    lag = np.asarray(since_beat) / STROKE_PEAK
    return lag * np.exp(1 - lag)


def stroke_wrists(portrait: Keypoints) -> tuple[list[int], float]:
    """The wrists a stroke may move (visible, with both shoulders seen) and the shoulders'
    width (pixels); no wrists when the portrait shows no arms."""
    body = portrait.body[0]
    shoulders = body[[LEFT_SHOULDER, RIGHT_SHOULDER]]
    if (shoulders[:, 2] < 0.5).any():
        return [], 0.0
    visible = [wrist for wrist in (LEFT_WRIST, RIGHT_WRIST) if body[wrist, 2] > 0.5]
    return visible, float(np.linalg.norm(shoulders[0, :2] - shoulders[1, :2]))


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


def has_face_mesh(keypoints: Keypoints) -> bool:
    """Whether the first frame holds the whole face mesh (motion moves the face from it)."""
    return bool((keypoints.face[0, :468, 2] > 0).all())


@dataclass(frozen=True)
class MotionTracks:
    """How much of each movement in every video frame: a few numbers per frame, so a whole
    clip's tracks are small (about 100 bytes per frame) and its poses are made from them chunk
    by chunk."""

    fps: float
    opening: np.ndarray  # (T,) mouth opening in [0, 1]
    round: np.ndarray  # (T,) lip corners pulled in, in [0, 1]
    wide: np.ndarray  # (T,) lip corners pushed out, in [0, 1]
    closure: np.ndarray  # (T,) eyelids, 0 open … 1 closed
    roll: np.ndarray  # (T,) head roll in radians
    nod: np.ndarray  # (T,) head shift down the face, pixels
    sway: np.ndarray  # (T,) head shift along the eyes, pixels
    strokes: dict[int, np.ndarray]  # wrist → (T, 2) hand displacement in pixels

    def __len__(self) -> int:
        return len(self.opening)

    def __getitem__(self, frames: slice) -> MotionTracks:
        return MotionTracks(self.fps, *(getattr(self, name)[frames] for name in
                                        ("opening", "round", "wide", "closure", "roll", "nod",
                                         "sway")),
                            {wrist: stroke[frames] for wrist, stroke in self.strokes.items()})


class ProceduralMotion:
    """`generate(clip, portrait, fps, frames, seed)` → Keypoints of `frames` frames;
    `stream(…)` → the same poses as consecutive chunks (bounded memory for any length)."""

    name = "procedural"

    def __init__(self, style: MotionStyle | None = None) -> None:
        self.style = style or MotionStyle()

    def generate(self, clip: AudioClip, portrait: Keypoints, fps: float, frames: int,
                 seed: int = 0) -> Keypoints:
        return Keypoints.concatenate(list(self.stream(clip, portrait, fps, frames, seed,
                                                      chunk=frames)))

    def stream(self, clip: AudioClip, portrait: Keypoints, fps: float, frames: int,
               seed: int = 0, chunk: int = 250) -> Iterator[Keypoints]:
        """The poses `chunk` frames at a time. The tracks come from the whole clip's features
        now (their normalisations are the clip's own; errors surface here), each chunk's
        keypoints when it is read."""
        tracks = self.tracks(speech_features(clip, fps, frames), portrait, seed)
        return (self.poses(tracks[start:start + chunk], portrait)
                for start in range(0, frames, chunk))

    def tracks(self, features: SpeechFeatures, portrait: Keypoints, seed: int = 0
               ) -> MotionTracks:
        """Every movement's amount per frame, deterministic for `seed`."""
        frames, fps = features.frames, features.fps
        rng = np.random.default_rng(seed)
        opening = mouth_envelope(features.loudness, fps)[0] * self.style.mouth
        round_ = opening * np.clip((0.4 - features.centroid) / 0.4, 0, 1)
        wide = opening * np.clip((features.centroid - 0.6) / 0.4, 0, 1)
        closure = self._blinks(frames, fps, rng)
        roll, nod, sway = self._head(portrait, features, rng)
        strokes = self._gestures(portrait, features, rng)
        return MotionTracks(fps, opening, round_, wide, closure, roll, nod, sway, strokes)

    def poses(self, tracks: MotionTracks, portrait: Keypoints) -> Keypoints:
        """The portrait's keypoints moved by `tracks`, one frame per track frame."""
        frames = len(tracks)
        face = np.repeat(portrait.face[:1].astype(np.float64), frames, axis=0)
        body = np.repeat(portrait.body[:1].astype(np.float64), frames, axis=0)
        hands = {part: np.repeat(getattr(portrait, part)[:1].astype(np.float64), frames, 0)
                 for part in ("left_hand", "right_hand")}
        if has_face_mesh(portrait):
            geometry = FaceFrame.of(portrait.face[0])
            self._move_mouth(face, geometry, tracks)
            self._move_lids(face, tracks.closure)
            self._move_head(face, body, geometry, tracks)
        self._move_hands(body, hands, tracks.strokes)
        return replace(portrait, body=body.astype(np.float32), face=face.astype(np.float32),
                       left_hand=hands["left_hand"].astype(np.float32),
                       right_hand=hands["right_hand"].astype(np.float32), fps=tracks.fps)

    # ------------------------------------------------------------------ tracks

    def _blinks(self, frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
        closure = np.zeros(frames)
        rate = max(self.style.blinks, 1e-3)
        time = rng.uniform(0.5, 2.0)
        while self.style.blinks > 0 and time < frames / fps:
            offsets = np.arange(int(np.ceil(0.2 * fps)) + 1) / fps
            index = np.round((time + offsets) * fps).astype(int)
            keep = index < frames
            closure[index[keep]] = np.maximum(closure[index[keep]],
                                              np.interp(offsets[keep], BLINK_TIMES,
                                                        BLINK_CLOSURE))
            time += rng.uniform(2.0, 6.0) / rate
        return closure

    def _head(self, portrait: Keypoints, features: SpeechFeatures, rng
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """roll (radians), nod and sway (pixels) per frame."""
        frames, fps = features.frames, features.fps
        if not has_face_mesh(portrait):
            return np.zeros(frames), np.zeros(frames), np.zeros(frames)
        face_height = FaceFrame.of(portrait.face[0]).face_height
        amount = self.style.head
        loud = _smooth(features.loudness, fps, 0.15)
        emphasis = np.clip(loud - _smooth(features.loudness, fps, 0.8), 0, None)
        roll = np.radians(amount * (1.2 * _drift(frames, fps, rng)
                                    + 1.5 * np.tanh(_smooth(features.pitch, fps, 0.3) / 4)))
        nod = amount * face_height * (0.008 * _drift(frames, fps, rng)
                                      + 0.06 * _smooth(emphasis, fps, 0.1))
        sway = amount * face_height * 0.012 * _drift(frames, fps, rng)
        return roll, nod, sway

    def _gestures(self, portrait: Keypoints, features: SpeechFeatures, rng
                  ) -> dict[int, np.ndarray]:
        """wrist → (T, 2) stroke displacement: a pulse down and back at each beat."""
        visible, width = stroke_wrists(portrait)
        if self.style.gestures <= 0 or len(features.beats) == 0 or not visible:
            return {}
        fps = features.fps
        strokes = {wrist: np.zeros((features.frames, 2)) for wrist in visible}
        span = int(np.ceil(STROKE_SECONDS * fps))
        for beat in features.beats:
            wrist = visible[int(rng.integers(len(visible)))]
            amplitude = rng.uniform(0.5, 1.0) * 0.12 * width * self.style.gestures
            direction = np.array([rng.uniform(-0.4, 0.4), 1.0])
            first = int(np.ceil(beat * fps - 1e-9))  # the first frame at or after the beat
            frames = np.arange(first, min(first + span, features.frames))
            strokes[wrist][frames] += amplitude * stroke_pulse(frames / fps - beat)[:, None] \
                * direction
        return strokes

    # ------------------------------------------------------------------ poses

    def _move_mouth(self, face: np.ndarray, geometry: FaceFrame, tracks: MotionTracks
                    ) -> None:
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
        drop = 0.35 * geometry.mouth_width * tracks.opening  # (T,)
        down = drop[:, None] * (lower + upper)[None]  # (T, N) pixels along the face's down
        spread = (-0.3 * tracks.round + 0.15 * tracks.wide)[:, None] * (across * lips)[None]
        face[:, :, :2] += down[..., None] * geometry.down + spread[..., None] * geometry.right

    @staticmethod
    def _move_lids(face: np.ndarray, closure: np.ndarray) -> None:
        for lids, iris in ((fm.RIGHT_EYE_LIDS, fm.RIGHT_IRIS), (fm.LEFT_EYE_LIDS, fm.LEFT_IRIS)):
            upper, lower = (list(points) for points in zip(*lids, strict=True))
            gap = face[:, lower, :2] - face[:, upper, :2]
            face[:, upper, :2] += 0.9 * closure[:, None, None] * gap
            if face.shape[1] > max(iris):
                face[:, list(iris), :2] += 0.3 * closure[:, None, None] * gap.mean(1)[:, None]

    @staticmethod
    def _move_head(face: np.ndarray, body: np.ndarray, geometry: FaceFrame,
                   tracks: MotionTracks) -> None:
        pivot = geometry.mouth + 0.75 * geometry.face_height * geometry.down  # about the neck
        cos, sin = np.cos(tracks.roll)[:, None], np.sin(tracks.roll)[:, None]
        shift = tracks.nod[:, None, None] * geometry.down \
            + tracks.sway[:, None, None] * geometry.right
        for points, index in ((face, slice(None)), (body, list(HEAD_BODY_POINTS))):
            xy = points[:, index, :2] - pivot
            rotated = np.stack([cos * xy[..., 0] - sin * xy[..., 1],
                                sin * xy[..., 0] + cos * xy[..., 1]], -1)
            points[:, index, :2] = rotated + pivot + shift

    @staticmethod
    def _move_hands(body: np.ndarray, hands: dict[str, np.ndarray],
                    strokes: dict[int, np.ndarray]) -> None:
        for wrist, stroke in strokes.items():
            body[:, list(HAND_BODY_POINTS[wrist]), :2] += stroke[:, None]
            body[:, ELBOW[wrist], :2] += 0.4 * stroke
            hand = hands[HAND_PART[wrist]]
            present = hand[0, :, 2] > 0
            hand[:, present, :2] += stroke[:, None]
