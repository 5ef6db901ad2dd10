"""The built-in motion for speech as it arrives: the procedural model (procedural.py) made
causal, for `posecast live`.

Audio comes in pieces (16 kHz mono, `feed`); a video frame's pose can be made once the audio
LOOKAHEAD seconds past its end has arrived (`ready`): 20 ms for the analysis windows and
100 ms for deciding whether a beat falls in it. Everything a whole clip normalises by (peak
level, centroid percentiles, median pitch, the onset envelope's range) comes from the last
HISTORY seconds instead (the history before each GROUP of frames, so the values do not depend
on how the audio was cut into pieces), and every smoothing runs forwards only (one-pole, with
lag); blinks, drift and strokes are scheduled as time goes on. Silence keeps the mouth closed
and the head drifting: a paused speaker idles. State is a few numbers and HISTORY seconds of
measures, so memory is flat for hours.
"""

from __future__ import annotations

import numpy as np

from posecast.motion.features import (
    HOP,
    PITCH_WINDOW,
    SAMPLE_RATE,
    FrameMeasures,
    MeasureBlocks,
    normalise,
)
from posecast.motion.procedural import (
    BLINK_CLOSURE,
    BLINK_TIMES,
    STROKE_SECONDS,
    FaceFrame,
    MotionStyle,
    MotionTracks,
    ProceduralMotion,
    drift_wave,
    has_face_mesh,
    mouth_envelope,
    stroke_pulse,
    stroke_wrists,
)
from posecast.pose.keypoints import Keypoints

ANALYSIS_RATE = SAMPLE_RATE / HOP  # measures per second (100)
BEAT_LOOKAHEAD = 10  # analysis frames after a candidate beat that decide it (its mean's)
LOOKAHEAD = (PITCH_WINDOW // 2) / SAMPLE_RATE + BEAT_LOOKAHEAD / ANALYSIS_RATE  # 0.12 s
HISTORY = 10.0  # seconds of measures the normalisations look back over
GROUP = 10  # analysis frames (0.1 s) normalised by the same statistics
LOUDEST_QUIET = -35.0  # dBFS: a live stream's peak counts as at least this loud
BEAT_GAP = 0.35


class _OnePole:
    """Forward one-pole low-pass with time constant `seconds` at `fps` (lags by about it)."""

    def __init__(self, fps: float, seconds: float) -> None:
        self.alpha, self.value = 1 - np.exp(-1 / (fps * seconds)), None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        for index, value in enumerate(values):
            self.value = value if self.value is None else \
                self.value + self.alpha * (value - self.value)
            out[index] = self.value
        return out


class LiveMotion:
    """`feed(samples)` as audio arrives, then `take(n)` for the next n poses once `ready()`
    says they can be made. Deterministic for a seed and the same audio pieces."""

    def __init__(self, portrait: Keypoints, fps: float, seed: int = 0,
                 style: MotionStyle | None = None) -> None:
        self.portrait, self.fps = portrait, fps
        self.style = style or MotionStyle()
        self.model = ProceduralMotion(self.style)
        blink_rng, drift_rng, stroke_rng = (np.random.default_rng(child) for child in
                                            np.random.SeedSequence(seed).spawn(3))
        self.stroke_rng, self.blink_rng = stroke_rng, blink_rng
        self.drifts = [drift_wave(drift_rng) for _ in range(3)]  # roll, nod, sway
        self.measure = MeasureBlocks()
        self.samples = np.zeros(0, np.float32)  # from absolute sample `self.base` on
        self.base = 0
        self.measured = 0  # analysis frames measured so far
        keep = int(HISTORY * ANALYSIS_RATE)
        self.keep = keep  # analysis frames of history
        self.reference: FrameMeasures | None = None  # the history before this group
        self.history = FrameMeasures(*(np.zeros(0) for _ in range(5)))  # the last `keep`
        self.loudness = np.zeros(0)  # per analysis frame, from self.first_kept on
        self.centroid = np.zeros(0)
        self.semitones = np.zeros(0)
        self.strength = np.zeros(0)
        self.first_kept = 0
        self.beats_decided = 0  # analysis frames before this one are decided
        self.last_beat = -10 ** 9
        self.strokes: list[tuple[float, int, float, np.ndarray]] = []  # beat s, wrist, amp, dir
        self.wrists, self.shoulder_width = stroke_wrists(portrait)
        self.next_blink = blink_rng.uniform(0.5, 2.0)
        self.blinks: list[float] = []
        self.made = 0  # video frames made so far
        self.level = 0.0  # the mouth's opening follower
        self.head = has_face_mesh(portrait)
        self.face_height = FaceFrame.of(portrait.face[0]).face_height if self.head else 0.0
        self.smooth = {name: _OnePole(fps, seconds) for name, seconds in
                       (("loud", 0.15), ("base", 0.8), ("pitch", 0.3), ("emphasis", 0.1))}

    @property
    def heard(self) -> float:
        """Seconds of audio fed so far."""
        return (self.base + len(self.samples)) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> None:
        """Append (N,) float32 samples at 16 kHz and measure every analysis frame whose
        windows they complete."""
        self.samples = np.concatenate([self.samples, np.asarray(samples, np.float32)])
        total = self.base + len(self.samples)
        complete = (total - PITCH_WINDOW // 2) // HOP + 1 if total >= PITCH_WINDOW // 2 else 0
        if complete <= self.measured:
            return
        # frames relative to the buffer, whose first sample is frame base // HOP's centre
        offset = self.base // HOP
        block = self.measure(self.samples, self.measured - offset, complete - offset)
        self.measured = complete
        self._add(block)
        # keep the samples the next frames' widest window reaches back to
        drop = max(0, (complete - offset) * HOP - PITCH_WINDOW) // HOP * HOP
        self.samples, self.base = self.samples[drop:], self.base + drop

    def _add(self, block: FrameMeasures) -> None:
        """Normalise new measures in groups of GROUP analysis frames, each by the HISTORY
        before its group's first frame (so any piece sizes give the same values)."""
        names = FrameMeasures.__annotations__
        first = self.measured - len(block.rms)  # the block's first analysis frame
        done = 0
        while done < len(block.rms):
            index = first + done
            if index % GROUP == 0 or self.reference is None:
                self.reference = self.history
            end = min(len(block.rms), done + GROUP - index % GROUP)
            part = FrameMeasures(**{name: getattr(block, name)[done:end] for name in names})
            loudness, centroid, semitones = normalise(part, self.reference, LOUDEST_QUIET)
            for name, values in (("loudness", loudness), ("centroid", centroid),
                                 ("semitones", semitones), ("strength", part.flux * loudness)):
                setattr(self, name, np.concatenate([getattr(self, name), values]))
            self.history = FrameMeasures(**{
                name: np.concatenate([getattr(self.history, name), getattr(part, name)]
                                     )[-self.keep:] for name in names})
            done = end
        self._decide_beats()
        # HISTORY seconds of per-frame values stay, and every value a frame still to be made
        # reads (a student far behind)
        drop = min(len(self.loudness) - self.keep,
                   int(self.made / self.fps * ANALYSIS_RATE) - 2 - self.first_kept)
        if drop > 0:
            for name in ("loudness", "centroid", "semitones", "strength"):
                setattr(self, name, getattr(self, name)[drop:])
            self.first_kept += drop

    def _decide_beats(self) -> None:
        """Beats among the analysis frames whose look-ahead has arrived: a 30 ms local maximum
        of the onset strength, 0.2 (of the recent range) above its ±100 ms mean, BEAT_GAP
        after the last beat (procedural.beat_times' rule, on a running range)."""
        strength, first = self.strength, self.first_kept
        while self.beats_decided + BEAT_LOOKAHEAD < self.measured:
            n = self.beats_decided - first
            self.beats_decided += 1
            # the range of the HISTORY up to the candidate's look-ahead
            recent = strength[max(0, n + BEAT_LOOKAHEAD + 1 - self.keep):n + BEAT_LOOKAHEAD + 1]
            span = float(recent.max(initial=0.0) - recent.min(initial=0.0))
            if span <= 0 or n < 10:  # nothing heard yet, or the clip's first 100 ms
                continue
            value = strength[n]
            if value < strength[n - 3:n + 1].max() or \
                    (value - strength[n - 10:n + 11].mean()) / span < 0.2 or \
                    n + first - self.last_beat <= round(BEAT_GAP * ANALYSIS_RATE):
                continue
            self.last_beat = n + first
            if self.wrists and self.style.gestures > 0:
                rng = self.stroke_rng
                wrist = self.wrists[int(rng.integers(len(self.wrists)))]
                amplitude = rng.uniform(0.5, 1.0) * 0.12 * self.shoulder_width * \
                    self.style.gestures
                direction = np.array([rng.uniform(-0.4, 0.4), 1.0])
                self.strokes.append(((n + first) / ANALYSIS_RATE, wrist, amplitude, direction))

    def ready(self) -> int:
        """Video frames whose poses can be made now, beyond those already taken."""
        decided = (self.beats_decided - 1) / ANALYSIS_RATE  # the last decided frame's time
        return max(0, int(np.floor(decided * self.fps)) - self.made)

    def take(self, frames: int) -> Keypoints:
        """The next `frames` poses (at most `ready()`)."""
        if frames > self.ready():
            raise ValueError(f"only {self.ready()} poses can be made yet, not {frames}")
        if frames == 0:
            return self.portrait[0:0]
        starts = np.arange(self.made, self.made + frames) / self.fps
        analysis_times = (self.first_kept + np.arange(len(self.loudness))) / ANALYSIS_RATE
        # features at frame centres, as the whole-clip model reads them
        loudness, centroid, pitch = (np.interp(starts + 0.5 / self.fps, analysis_times, values)
                                     for values in (self.loudness, self.centroid,
                                                    self.semitones))
        self.made += frames
        return self.model.poses(self._tracks(starts, loudness, centroid, pitch), self.portrait)

    def _tracks(self, times: np.ndarray, loudness: np.ndarray, centroid: np.ndarray,
                pitch: np.ndarray) -> MotionTracks:
        """Every movement at frames starting at `times` (s), continuing the state."""
        opening, self.level = mouth_envelope(loudness, self.fps, self.level)
        opening *= self.style.mouth
        round_ = opening * np.clip((0.4 - centroid) / 0.4, 0, 1)
        wide = opening * np.clip((centroid - 0.6) / 0.4, 0, 1)
        return MotionTracks(self.fps, opening, round_, wide, self._closure(times),
                            *self._head_moves(times, loudness, pitch), self._strokes(times))

    def _closure(self, times: np.ndarray) -> np.ndarray:
        while self.style.blinks > 0 and self.next_blink <= times[-1]:
            self.blinks.append(self.next_blink)
            self.next_blink += self.blink_rng.uniform(2.0, 6.0) / max(self.style.blinks, 1e-3)
        self.blinks = [start for start in self.blinks if start > times[0] - BLINK_TIMES[-1]]
        closure = np.zeros(len(times))
        for start in self.blinks:
            closure = np.maximum(closure, np.interp(times - start, BLINK_TIMES, BLINK_CLOSURE,
                                                    left=0.0, right=0.0))
        return closure

    def _head_moves(self, times: np.ndarray, loudness: np.ndarray, pitch: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.head:
            return np.zeros(len(times)), np.zeros(len(times)), np.zeros(len(times))
        amount, height = self.style.head, self.face_height
        emphasis = np.clip(self.smooth["loud"](loudness) - self.smooth["base"](loudness), 0,
                           None)
        roll_drift, nod_drift, sway_drift = (drift(times) for drift in self.drifts)
        roll = np.radians(amount * (1.2 * roll_drift
                                    + 1.5 * np.tanh(self.smooth["pitch"](pitch) / 4)))
        nod = amount * height * (0.008 * nod_drift + 0.06 * self.smooth["emphasis"](emphasis))
        return roll, nod, amount * height * 0.012 * sway_drift

    def _strokes(self, times: np.ndarray) -> dict[int, np.ndarray]:
        self.strokes = [stroke for stroke in self.strokes
                        if stroke[0] > times[0] - STROKE_SECONDS]
        moves = {wrist: np.zeros((len(times), 2)) for wrist in self.wrists}
        for beat, wrist, amplitude, direction in self.strokes:
            since = times - beat
            pulse = np.where(since >= 0, stroke_pulse(np.maximum(since, 0)), 0.0)
            moves[wrist] += amplitude * pulse[:, None] * direction
        return moves
