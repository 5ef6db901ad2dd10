"""The live loop: audio pieces in, encoded frames out, on the real-time clock.

Time starts when the first audio arrives. Every sample is due when it would be heard: its
arrival, or later when a source delivers faster than real time (those pieces wait, so a fast
producer is played at real-time pace). A live source that pauses (no pieces for FILL_AFTER
seconds) is filled with silence, so the speaker idles and the video goes on. The motion
(motion/live.py) makes poses LOOKAHEAD seconds behind the audio, and the student (this
thread) makes each chunk as soon as its poses exist.

A writer thread sends frame i with exactly its 1/fps seconds of audio as soon as both exist,
and at the latest `max_latency` after that audio was due: if the student has not made the
frame by then, the last frame sent is held in its place (counted in `frames_dropped`) and
the audio goes on, so audio never stalls and never leaves video behind by a sample. A student
that falls a whole chunk behind skips its poses to the audio's present and starts again from
there with a fresh cache.

Latency of a frame: from its last audio sample being due to the frame reaching the encoder.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from posecast.errors import InputError, UsageError
from posecast.live.sources import AudioSource
from posecast.motion.features import SAMPLE_RATE
from posecast.motion.live import LOOKAHEAD, LiveMotion
from posecast.pose.framing import crop_resize, fit_keypoints
from posecast.pose.stream import PoseStream

FILL_AFTER = 0.25  # seconds a live source may be late before silence stands in for it
NEVER_ENDING = 10 ** 9  # frames a live pose stream reports (about a year at 25 fps)


class LatencyRecord:
    """Latencies in 1 ms bins up to 60 s: percentiles over hours in flat memory."""

    def __init__(self) -> None:
        self.counts = np.zeros(60_001, np.int64)
        self.count, self.largest = 0, 0.0
        self.recent: list[float] = []  # the last second's, for the rolling figure

    def add(self, seconds: float) -> None:
        self.counts[min(int(round(seconds * 1000)), len(self.counts) - 1)] += 1
        self.count += 1
        self.largest = max(self.largest, seconds)
        self.recent = (self.recent + [seconds])[-25:]

    def percentile(self, share: float) -> float:
        if not self.count:
            return 0.0
        return float(np.searchsorted(np.cumsum(self.counts), share * self.count)) / 1000


@dataclass
class _Timeline:
    """Audio not yet encoded, from absolute sample `start`, and when each piece was due."""

    start: int = 0
    samples: list[np.ndarray] = field(default_factory=list)
    dues: list[tuple[int, float]] = field(default_factory=list)  # (end sample, due time)
    heard: int = 0  # samples fed so far

    def add(self, samples: np.ndarray, due: float) -> None:
        self.samples.append(samples)
        self.heard += len(samples)
        self.dues.append((self.heard, due))

    def take(self, end: int) -> np.ndarray:
        """Samples start … end − 1 (zeros past what was heard)."""
        joined = np.concatenate(self.samples) if self.samples else np.zeros(0, np.float32)
        count = end - self.start
        taken, rest = joined[:count], joined[count:]
        self.samples, self.start = [rest], end
        return np.pad(taken, (0, count - len(taken)))

    def due(self, sample: int) -> float:
        """When sample `sample` was due (the piece holding it)."""
        while len(self.dues) > 1 and self.dues[0][0] <= sample:
            self.dues.pop(0)
        return self.dues[0][1]


class StopLive(Exception):
    """Raised inside the pose stream when the session stops or has sent every frame."""


class LiveSession:
    """A renderer, a portrait (render.Portrait) and an audio source; `run(write)` gives every
    frame and its audio to `write(frame, samples, index, due)` until the source ends or
    `stop` is set."""

    def __init__(self, renderer, portrait, source: AudioSource, fps: float = 25.0,
                 seed: int = 0, max_latency: float = 1.0,
                 on_status: Callable[[dict], None] | None = None) -> None:
        self.renderer, self.source, self.fps, self.seed = renderer, source, fps, seed
        self.max_latency, self.on_status = max_latency, on_status
        # a chunk's first frame waits for its last frame's audio and the motion's look-ahead
        shortest = (renderer.student.chunk - 1) / fps + LOOKAHEAD + 0.1
        if max_latency < shortest:
            raise UsageError(f"--max-latency {max_latency:g}: this model needs at least "
                             f"{shortest:.2f} s (a chunk of {renderer.student.chunk} frames "
                             f"waits for its last frame's audio, and the motion looks "
                             f"{LOOKAHEAD:.2f} s ahead)")
        self.box = renderer.frame(portrait.image, portrait.keypoints)
        self.reference = crop_resize(portrait.image, self.box)
        self.motion = LiveMotion(portrait.keypoints, fps, seed)
        self.timeline = _Timeline()
        self.latency = LatencyRecord()
        self.started: float | None = None  # when the first audio arrived
        self.ended = False  # the source's audio is over
        self.silence = 0.0  # seconds of silence put in for a live source's pauses
        self.frames = self.dropped = 0  # frames sent, and those held in place of a late one
        self.made: dict[int, np.ndarray] = {}  # frames made and not yet sent, by index
        self.changed = threading.Condition()  # guards timeline, made, frames
        self.stop = threading.Event()
        self.finished = threading.Event()  # every frame of the audio is sent
        self.av_offset = 0.0  # the largest |audio − video| duration sent to the encoder
        self.failure: BaseException | None = None  # the writer's, raised by run()

    # ------------------------------------------------------------------ audio in

    def _feed(self, samples: np.ndarray, due: float) -> None:
        with self.changed:
            self.timeline.add(samples, due)
            self.motion.feed(samples)
            self.changed.notify_all()

    def _take_in(self) -> None:
        """The audio thread: every piece into the timeline and the motion as it is due;
        silence for a live source's pauses; after the end, silence enough for the motion's
        look-ahead and the last chunk."""
        chunk = self.renderer.student.chunk
        try:
            while not (self.stop.is_set() or self.finished.is_set()):
                if self.ended:
                    flushed = self.source.seconds + self.silence + LOOKAHEAD + 2 * chunk / self.fps
                    if self.timeline.heard / SAMPLE_RATE < flushed + 0.1:
                        self._feed(np.zeros(SAMPLE_RATE // 10, np.float32), time.perf_counter())
                    else:
                        self.stop.wait(0.05)
                    continue
                self._take_piece()
        except BaseException as error:  # the source failed: the session ends with it
            self.failure = error
            self.stop.set()

    def _take_piece(self) -> None:
        try:
            piece = self.source.pieces.get(timeout=0.02)
        except queue.Empty:
            piece = False
        now = time.perf_counter()
        if piece is None:
            with self.changed:
                self.ended = True
                self.changed.notify_all()
        elif piece is not False:
            arrived, samples = piece
            if self.started is None:  # a piece arrives once its last sample is spoken
                self.started = arrived - len(samples) / SAMPLE_RATE
            heard = self.timeline.heard + len(samples)
            due = self.started + heard / SAMPLE_RATE  # its last sample, at real-time pace
            # early: played when it is due, as a sound card would
            if due > now and self.stop.wait(due - now):
                return
            self._feed(samples, max(arrived, due))
        elif self.started is not None and self.source.live:
            late = now - self.started - self.timeline.heard / SAMPLE_RATE - FILL_AFTER
            if late > 0:  # a pause: silence, so the speaker idles
                silence = np.zeros(int(late * SAMPLE_RATE) + 1, np.float32)
                self.silence += len(silence) / SAMPLE_RATE
                self._feed(silence, now)

    def _pose_chunks(self):
        chunk = self.renderer.student.chunk
        while True:
            with self.changed:
                while self.motion.ready() < chunk:
                    if self.stop.is_set() or self.finished.is_set():
                        raise StopLive
                    self.changed.wait(0.05)
                poses = self.motion.take(chunk)
            yield fit_keypoints(poses, self.box)

    # ------------------------------------------------------------------ frames

    def run(self, write: Callable[[np.ndarray, np.ndarray, int, float], None]) -> dict:
        """Send frames until the audio ends or `stop` is set; the session's figures."""
        writer = threading.Thread(target=self._send_all, args=(write,),
                                  name="posecast-live-writer", daemon=True)
        listener = threading.Thread(target=self._take_in, name="posecast-live-audio",
                                    daemon=True)
        self.source.start()
        listener.start()
        writer.start()
        try:
            self._make_frames()
        except StopLive:
            pass
        finally:
            if not self.finished.is_set():
                self.stop.set()
            with self.changed:
                self.changed.notify_all()
            writer.join()
            listener.join()
            self.source.stop()
        if self.failure is not None:
            raise self.failure
        if self.source.error is not None:
            raise InputError(self.source.error)
        return self.figures()

    def _make_frames(self) -> None:
        """The student's frames into `made`, chunk by chunk (this thread); after a chunk that
        came too late to be sent at all, skip to the audio's present and start again."""
        while True:
            first = self.motion.made  # the index of this run's first frame
            poses = PoseStream(self._pose_chunks(), NEVER_ENDING,
                               keep=self.renderer.frames_kept)
            for start, pixels in self.renderer.chunks(self.reference, poses, self.seed):
                with self.changed:
                    for offset, frame in enumerate(pixels):
                        if first + start + offset >= self.frames:  # not yet sent: in time
                            self.made[first + start + offset] = frame
                    self.changed.notify_all()
                    behind = first + start + len(pixels) <= self.frames
                if self.finished.is_set() or self.stop.is_set():
                    return
                if behind:
                    break
            with self.changed:  # every pose the audio in allows: the present
                skip = self.motion.ready()
                if skip:
                    self.motion.take(skip)

    def _target(self) -> int | None:
        """Frames the video has once the audio ended: as a render, ceil(audio seconds × fps),
        at least one (seconds at the source's own rate, since resampling may add a sample;
        pauses included); None while the audio goes on."""
        if not self.ended:
            return None
        return max(1, int(np.ceil(round((self.source.seconds + self.silence) * self.fps, 6))))

    def _send_all(self, write) -> None:
        held = self.reference  # sent in place of a frame not made in time
        try:
            while not self.stop.is_set():
                index = self.frames
                target = self._target()
                if target is not None and index >= target:
                    self.finished.set()
                    return
                end = int(round((index + 1) * SAMPLE_RATE / self.fps))
                with self.changed:
                    state, frame, due = self._next_frame(index, end)
                    if state == "wait":
                        continue
                    samples = self.timeline.take(end)
                    for done in [key for key in self.made if key <= index]:
                        del self.made[done]
                if state == "late":
                    frame, self.dropped = held, self.dropped + 1
                write(frame, samples, index, due)
                held = frame
                self._sent(index, end, due)
        except BaseException as error:  # the encoder failed: the session ends with it
            self.failure = error
            self.stop.set()

    def _next_frame(self, index: int, end: int) -> tuple[str, np.ndarray | None, float]:
        """Under the lock: ("made", frame, due) once frame `index` and its audio are in;
        ("late", None, due) once `max_latency` has passed since that audio was due without
        the frame; else ("wait", None, 0) after a short wait."""
        if self.timeline.heard < end:  # its audio has not arrived
            self.changed.wait(0.05)
            return "wait", None, 0.0
        due = self.timeline.due(end - 1)
        if index in self.made:
            return "made", self.made.pop(index), due
        left = due + self.max_latency - time.perf_counter()
        if left <= 0:
            return "late", None, due
        self.changed.wait(min(left, 0.05))
        return "wait", None, 0.0

    def _sent(self, index: int, end: int, due: float) -> None:
        self.frames = index + 1
        self.av_offset = max(self.av_offset, abs(end / SAMPLE_RATE - self.frames / self.fps))
        self.latency.add(time.perf_counter() - due)
        if self.on_status is not None and self.frames % int(self.fps) == 0:
            self.on_status(self.status())

    # ------------------------------------------------------------------ figures

    def status(self) -> dict:
        recent = self.latency.recent
        return {"frames": self.frames, "frames_dropped": self.dropped,
                "latency_s": round(float(np.median(recent)), 3) if recent else None,
                "seconds": round(self.frames / self.fps, 2)}

    def figures(self) -> dict:
        return {"frames": self.frames, "frames_dropped": self.dropped,
                "seconds": round(self.frames / self.fps, 3), "fps": self.fps,
                "latency_p50_s": round(self.latency.percentile(0.5), 3),
                "latency_p95_s": round(self.latency.percentile(0.95), 3),
                "latency_max_s": round(self.latency.largest, 3),
                "lookahead_s": round(LOOKAHEAD, 3),
                "av_offset_s": round(self.av_offset, 6)}
