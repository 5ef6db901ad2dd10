"""Speech + portrait → MP4 with the distilled student, streamed chunk by chunk.

  audio ──features──▶ motion model ──▶ pose sequence (the portrait's keypoints, moving)
  portrait ──crop (face and upper body centred)──▶ reference frame ──codec──▶ latent
  for each chunk of c frames: pose maps → student (k steps, KV cache of past frames)
                              → decode → ffmpeg (with the audio), as soon as it is ready
Only one chunk's pose maps, latents and frames exist at a time and the KV cache holds a fixed
number of frames, so memory does not grow with the length of the audio. The video has exactly
ceil(audio seconds × fps) frames.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch

from posecast.errors import DetectionError
from posecast.media import AudioClip, load_audio, load_portrait, write_mp4
from posecast.media.audio import MAX_MINUTES
from posecast.media.image import to_uint8_frames
from posecast.motion import frame_count, load_motion
from posecast.pose.extract import extract_image
from posecast.pose.framing import Box, crop_resize, fit_keypoints, retarget
from posecast.pose.keypoints import Keypoints, resample
from posecast.pose.stream import PoseStream
from posecast.streaming.compiling import compile_failure, compile_student, compiles_by_default
from posecast.streaming.rollout import StreamState, StudentBackend, chunk_latents

DEFAULT_WARN_SECONDS = 600.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A render's inputs, read and framed: the audio, the portrait (H, W, 3) uint8 at the
    model's size, its poses in model-frame pixels (one per video frame; streamed), the frame
    rate and the seed."""

    clip: AudioClip
    reference: np.ndarray
    poses: Keypoints | PoseStream
    fps: float
    seed: int


@dataclass(frozen=True)
class RenderResult:
    output: Path
    frames: int
    seconds: float  # of video
    elapsed: float  # wall time of the whole job, I/O included
    first_frame: float  # wall seconds until the first frame went to the encoder
    streaming: float  # wall seconds of the chunk loop alone (generate, decode, encode)

    @property
    def realtime_factor(self) -> float:
        """Seconds of video made per second of wall time (> 1 is faster than real time)."""
        return self.seconds / self.elapsed

    @property
    def streaming_factor(self) -> float:
        """The same for the chunk loop alone, once audio, portrait and model are ready: the
        steady speed of a long render."""
        return self.seconds / self.streaming


@dataclass(frozen=True)
class Portrait:
    """A portrait read and its person found (`read_portrait`): a command can do this before it
    loads a model, so a picture without a face is refused at once, and the render then takes
    it instead of the path. `seconds`: the time that took, counted in the render's own."""

    path: Path
    image: np.ndarray  # (H, W, 3) uint8 RGB
    keypoints: Keypoints
    seconds: float


def read_portrait(path: str | os.PathLike,
                  on_note: Callable[[str], None] | None = None) -> Portrait:
    started = time.perf_counter()
    image = load_portrait(path)
    keypoints = portrait_keypoints(image, Path(path), on_note)
    seconds = time.perf_counter() - started
    log.info("read the portrait %s (%dx%d) and found its person in %.2f s", path,
             image.shape[1], image.shape[0], seconds)
    return Portrait(Path(path), image, keypoints, seconds)


def portrait_keypoints(image: np.ndarray, path: Path,
                       on_note: Callable[[str], None] | None = None) -> Keypoints:
    try:
        return extract_image(image, source=str(path), on_note=on_note)
    except DetectionError:
        raise DetectionError(f"{path}: no face found in the portrait; use a photo in which one "
                             "person's face is clearly visible, front-facing and at least about "
                             "100 pixels tall") from None


class Renderer:
    """A loaded student of any family (a StudentBackend), reused across jobs (a batch loads the
    model once), with one cache and one set of attention plans for every video.

    On CUDA the chunk step is compiled and captured as CUDA graphs by default (`compile`;
    dense attention or the flex backend), after an eager warm-up that makes the cache and plans
    at their final shapes; a second warm-up runs the compiled passes once, so the first timed
    frame pays for neither. On the CPU, uncompiled, there is no warm-up: the first chunk makes
    the cache and plans itself, and the first frame comes sooner (issue 35)."""

    def __init__(self, student: StudentBackend, source: str, compile: bool | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.student, self.source = student, source
        self.device = student.device
        self.stream = StreamState()  # one cache and set of plans for every video
        if compile is None:
            compile = compiles_by_default("input_aware" if student.grids() else "dense",
                                          student.attention_backend, self.device)
        with torch.no_grad():
            if compile or self.device.type != "cpu":
                self._warm_up()  # eager: allocations, first-call costs, the cache and plans
            if compile:
                if self.device.type == "cuda":
                    self.stream.mark_static()
                eager = student.network
                student.network = compile_student(eager)
                try:
                    self._warm_up()
                except Exception as error:  # torch.compile fails in many ways; eager works
                    if on_warning is not None:
                        on_warning(compile_failure(error))
                    student.network = eager

    width = property(attrgetter("student.width"))
    height = property(attrgetter("student.height"))

    @property
    def steps(self) -> int:
        return len(self.student.levels())

    @property
    def frames_kept(self) -> int:
        """Recent poses a streamed pose sequence must keep: a window and two chunks (the one
        generated and the one prepared ahead)."""
        return self.student.context_frames + 3 * self.student.chunk

    def _warm_up(self) -> None:
        """Two chunks of a still pose and the cache pass between them: every kernel, plan
        shape and compiled graph the render will use."""
        still = Keypoints.empty(self.student.chunk * 2, self.width, self.height)
        for _ in self.chunks(np.zeros((self.height, self.width, 3), np.uint8), still):
            pass

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        return self.student.frame(image, keypoints)

    def prepare(self, audio: str | os.PathLike, portrait: str | os.PathLike | Portrait,
                motion=None,
                poses: str | os.PathLike | None = None, fps: float = 25.0, seed: int = 0,
                on_warning: Callable[[str], None] | None = None,
                warn_seconds: float = DEFAULT_WARN_SECONDS,
                max_minutes: float = MAX_MINUTES) -> Job:
        """Read the audio and the portrait, frame the portrait and set up its motion (from
        `motion`, default the built-in model, or the keypoint file `poses`): what `frames` and
        `generate` take. Audio whose header declares more than `max_minutes` is refused before
        it is decoded."""
        started = time.perf_counter()
        clip = load_audio(audio, max_minutes=max_minutes, on_warning=on_warning)
        log.info("read %s: %.2f s of audio in %.2f s", audio, clip.duration,
                 time.perf_counter() - started)
        if clip.duration > warn_seconds and on_warning is not None:
            on_warning(f"warning: {audio} lasts {clip.duration / 60:.1f} min (over "
                       f"{warn_seconds / 60:.0f} min); rendering it anyway")
        if not isinstance(portrait, Portrait):
            portrait = read_portrait(portrait, on_warning)
        image, keypoints = portrait.image, portrait.keypoints
        frames = frame_count(clip.duration, fps)
        box = self.frame(image, keypoints)
        if poses is not None:
            driving = Keypoints.load(poses, seconds=frames / fps)  # only the frames it needs
            sequence = fit_keypoints(resample(retarget(driving, keypoints), fps, frames), box)
        else:  # made chunk by chunk as the video needs it (memory flat in the audio's length)
            motion = motion if motion is not None else load_motion()
            chunks = motion.stream(clip, keypoints, fps, frames, seed)
            sequence = PoseStream((fit_keypoints(chunk, box) for chunk in chunks), frames,
                                  keep=self.frames_kept)
        return Job(clip, crop_resize(image, box), sequence, fps, seed)

    def render(self, audio: str | os.PathLike, portrait: str | os.PathLike | Portrait,
               output: str | os.PathLike, motion=None, poses: str | os.PathLike | None = None,
               fps: float = 25.0, seed: int = 0,
               on_progress: Callable[[float, float], None] | None = None,
               on_warning: Callable[[str], None] | None = None,
               warn_seconds: float = DEFAULT_WARN_SECONDS,
               max_minutes: float = MAX_MINUTES) -> RenderResult:
        """Render one job into `output`; on_progress(seconds of video done, total seconds).
        `portrait`: a path, or a `Portrait` read before (its reading time counts as the job's)."""
        started = time.perf_counter() - (portrait.seconds if isinstance(portrait, Portrait)
                                         else 0.0)
        job = self.prepare(audio, portrait, motion, poses, fps, seed, on_warning, warn_seconds,
                           max_minutes)
        return self.generate(job.clip, job.reference, job.poses, Path(output), fps, seed,
                             started, on_progress)

    def frames(self, job: Job) -> Iterator[np.ndarray]:
        """A prepared job's frames, (H, W, 3) uint8, each as soon as its chunk is done;
        exactly one per pose."""
        count = len(job.poses)
        for start, pixels in self.chunks(job.reference, job.poses, job.seed):
            yield from pixels[:count - start]

    def chunks(self, reference: np.ndarray, poses: Keypoints | PoseStream, seed: int = 0
               ) -> Iterator[tuple[int, np.ndarray]]:
        """The video of `poses` (Keypoints in frame pixels) for `reference` (H, W, 3) uint8 at
        the student's size, chunk by chunk as each is ready: (index of its first frame,
        (c, H, W, 3) uint8 frames); the last chunk may run past the poses' end."""
        conditions = self.student.conditions(reference)
        for start, latents in chunk_latents(self.student, conditions, poses, seed, self.stream):
            with torch.no_grad():
                yield start, to_uint8_frames(self.student.decode(latents[0]))

    def generate(self, clip: AudioClip, reference: np.ndarray, poses: Keypoints | PoseStream,
                 output: Path, fps: float, seed: int = 0, started: float | None = None,
                 on_progress=None) -> RenderResult:
        """The video of `poses` (Keypoints or a PoseStream, in model-frame pixels) for
        `reference` (H, W, 3) uint8 at the model's size, streamed into `output` with `clip`
        muxed in."""
        started = time.perf_counter() if started is None else started
        frames = len(poses)
        first_frame = None
        loop_started = time.perf_counter()
        with write_mp4(output, fps=fps, audio=clip) as mp4:
            for index, frame in enumerate(self.frames(Job(clip, reference, poses, fps, seed))):
                mp4.write(frame)
                if first_frame is None:
                    first_frame = time.perf_counter() - started
                if on_progress is not None:
                    on_progress((index + 1) / fps, frames / fps)
        finished = time.perf_counter()
        log.info("streamed %d frames into %s in %.2f s (first frame %.2f s after the job "
                 "started)", frames, output, finished - loop_started, first_frame or 0.0)
        return RenderResult(output, frames, frames / fps, finished - started,
                            first_frame or 0.0, finished - loop_started)
