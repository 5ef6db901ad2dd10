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

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from posecast.errors import DetectionError, UsageError
from posecast.media import AudioClip, load_audio, load_portrait, write_mp4
from posecast.media.audio import MAX_MINUTES
from posecast.models.codecs import make_codec, to_uint8_frames
from posecast.models.denoiser import Denoiser
from posecast.models.pretrained import from_pretrained
from posecast.motion import frame_count, load_motion
from posecast.paths import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, require_file
from posecast.pose.draw import render_pose_maps
from posecast.pose.extract import extract_image
from posecast.pose.framing import Box, crop_resize, fit_keypoints, portrait_box, retarget
from posecast.pose.keypoints import PARTS, Keypoints, resample
from posecast.pose.stream import PoseStream
from posecast.student import CausalRollout, StreamState, student_timesteps

DEFAULT_WARN_SECONDS = 600.0


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
    return Portrait(Path(path), image, keypoints, time.perf_counter() - started)


def portrait_keypoints(image: np.ndarray, path: Path,
                       on_note: Callable[[str], None] | None = None) -> Keypoints:
    try:
        return extract_image(image, source=str(path), on_note=on_note)
    except DetectionError:
        raise DetectionError(f"{path}: no face found in the portrait; use a photo in which one "
                             "person's face is clearly visible, front-facing and at least about "
                             "100 pixels tall") from None


def hold_to_length(poses: Keypoints | PoseStream, frames: int) -> Keypoints | PoseStream:
    """Exactly `frames` frames: cut, or the last pose held."""
    if isinstance(poses, PoseStream):
        return poses.hold_to_length(frames)
    index = np.minimum(np.arange(frames), len(poses) - 1)
    return replace(poses, **{part: getattr(poses, part)[index] for part in PARTS})


class ChunkPoseMaps:
    """A video's pose maps chunk by chunk, for either family's student: each chunk's drawn
    once on the host (`draw(start, end)` → (n, H, W, 3) uint8) and copied to the device as
    uint8 without blocking (from pinned memory on CUDA), then `convert`ed there from
    (1, n, 3, H, W) uint8 to the student's input. Called for every pass of a chunk, it draws
    only on the first; the chunks before `start` are dropped, so at most this chunk's and the
    next one's (drawn ahead while the device works) are kept."""

    def __init__(self, draw: Callable[[int, int], np.ndarray], device: torch.device,
                 convert: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.draw, self.device, self.convert = draw, device, convert
        self.maps: dict[tuple[int, int], torch.Tensor] = {}

    def __call__(self, start: int, end: int) -> torch.Tensor:
        if (start, end) not in self.maps:
            for key in [key for key in self.maps if key[0] < start]:
                del self.maps[key]
            drawn = torch.from_numpy(self.draw(start, end))
            if self.device.type == "cuda":
                drawn = drawn.pin_memory()
            on_device = drawn.to(self.device, non_blocking=True).permute(0, 3, 1, 2)[None]
            self.maps[start, end] = self.convert(on_device)
        return self.maps[start, end]


def chunk_latents(model: Denoiser, codec, reference: torch.Tensor, poses: Keypoints,
                  timesteps: list[float], seed: int = 0, network=None,
                  state: StreamState | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The student's video chunk by chunk, each as soon as it exists: (index of its first
    frame, latents (1, c, C, h, w)). `reference` (1, 3, H, W) in [-1, 1] on the model's device;
    `poses` in model-frame pixels; `network` runs the model (a compiled version of it, say).
    The last chunk is filled up by holding the last pose (callers drop its frames past the
    end). A chunk is handed over before its cache pass runs, and the next chunk's pose maps
    and masks are prepared while the device works. Noise comes from a generator on the
    model's device seeded with `seed` (no host copies inside the loop). `state` keeps the KV
    cache and attention plan for the next call (a renderer's videos share them)."""
    config, device = model.config, reference.device
    chunk = config.chunk
    padded = hold_to_length(poses, math.ceil(len(poses) / chunk) * chunk)
    with torch.no_grad():
        latent = codec.encode(reference)
    pose_maps = ChunkPoseMaps(  # (1, n, 3, H, W) in [0, 1]
        lambda start, end: render_pose_maps(padded[start:end], config.height, config.width),
        device, lambda drawn: drawn.float() / 255.0)
    rollout = CausalRollout(model, latent, pose_maps, lambda s, e: [padded[s:e]], timesteps,
                            network=network, frames=len(padded), state=state)
    generator = torch.Generator(device).manual_seed(seed)
    shape = (1, chunk, config.codec.latent_channels, *config.latent_size)
    for start in range(0, len(padded), chunk):
        with torch.no_grad():  # not around the yield: the caller's grad mode stays its own
            noise = torch.randn(shape, generator=generator, device=device)
            latents = rollout.denoise(noise, lambda: torch.randn(shape, generator=generator,
                                                                 device=device))
        yield start, latents
        with torch.no_grad():
            rollout.commit(commit=start + chunk < len(padded))


def compiles_by_default(attention: str, backend: str, device: torch.device) -> bool:
    """Whether `render` (and `bench render`, timing what render does) compiles a student's
    chunk step when neither --compile nor --no-compile is given, in either family: on CUDA,
    when it compiles to fixed graphs, with dense attention or input-aware with flex
    (gather's and xformers' per-group host plans would recompile chunk after chunk)."""
    from posecast.attention.backends import resolve_backend

    return device.type == "cuda" and \
        (attention != "input_aware" or resolve_backend(backend, device) == "flex")


def compile_student(model: torch.nn.Module):
    """The model's forward compiled whole (fullgraph: no graph breaks) for fixed shapes; on
    CUDA captured as CUDA graphs (mode "reduce-overhead"), so a steady chunk step is a few
    graph replays with no host work inside."""
    mode = "reduce-overhead" if next(model.parameters()).is_cuda else None
    return torch.compile(model, fullgraph=True, dynamic=False, mode=mode)


def compile_failure(error: Exception) -> str:
    """The one-line warning when compiling a student fails (either family then renders
    eagerly)."""
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    return (f"warning: compiling the student failed ({type(error).__name__}: {first_line}); "
            "rendering uncompiled (--no-compile skips the attempt)")


class Renderer:
    """A loaded student and codec, reused across jobs (a batch loads the model once).

    On CUDA the weights are cast to bf16 and the chunk step is compiled and captured by
    default (`compile`); the warm-up inside the constructor runs the compiled passes once, so
    the first timed frame pays for neither."""

    def __init__(self, model: str | os.PathLike, device: torch.device,
                 size: tuple[int, int] | None = None, steps: int | None = None,
                 compile: bool | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 revision: str | None = None) -> None:
        self.source = str(model)
        network = from_pretrained(model, revision, device=device)
        if not network.config.is_student:
            raise UsageError(f"{model}: this model is a teacher (bidirectional, many steps), not "
                             "a distilled student; make one with `posecast distill`, or render "
                             "with `posecast teacher`")
        if size is not None:
            network.config = network.config.replace(height=size[0], width=size[1])
        if device.type == "cuda":
            network = network.to(torch.bfloat16)
        self.model: Denoiser = network
        self.device = device
        self.codec = make_codec(network.config.codec, device, fast_decode=True)
        self.timesteps = student_timesteps(network, steps)
        if compile is None:
            config = network.config
            compile = compiles_by_default(config.attention, config.attention_backend, device)
        self.network = compile_student(network) if compile else network
        self.stream = StreamState()  # one KV cache and plan for every video of this renderer
        with torch.no_grad():  # warm-up: first-call costs are not the user's first frame
            try:
                self._warm_up()
            except Exception as error:  # torch.compile fails in many ways; eager still works
                if self.network is network:
                    raise
                if on_warning is not None:
                    on_warning(compile_failure(error))
                self.network = network
                self._warm_up()

    @property
    def config(self):
        return self.model.config

    @property
    def width(self) -> int:
        return self.config.width

    @property
    def height(self) -> int:
        return self.config.height

    @property
    def steps(self) -> int:
        return len(self.timesteps) - 1

    @property
    def frames_kept(self) -> int:
        """Recent poses a streamed pose sequence must keep: a window and two chunks (the one
        generated and the one prepared ahead)."""
        return self.config.window + 2 * self.config.chunk

    def _warm_up(self) -> None:
        """Two chunks of a still pose and the cache pass between them: every kernel, plan
        shape and compiled graph the render will use."""
        config = self.config
        height, width = config.height, config.width
        still = Keypoints.empty(config.chunk * 2, width, height)
        reference = torch.zeros(1, 3, height, width, device=self.device)
        for _, latents in chunk_latents(self.model, self.codec, reference, still,
                                        self.timesteps, network=self.network,
                                        state=self.stream):
            self.codec.decode(latents[0])

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        return portrait_box(keypoints, image.shape[1], image.shape[0], self.width, self.height)

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
        clip = load_audio(require_file(audio, "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS),
                          max_minutes=max_minutes, on_warning=on_warning)
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
        """The video of `poses` (Keypoints in model-frame pixels) for `reference` (H, W, 3)
        uint8 at the model's size, chunk by chunk as each is ready: (index of its first frame,
        (c, H, W, 3) uint8 frames); the last chunk may run past the poses' end."""
        reference_tensor = torch.from_numpy(reference).permute(2, 0, 1)[None].float()
        reference_tensor = (reference_tensor / 127.5 - 1).to(self.device)
        for start, latents in chunk_latents(self.model, self.codec, reference_tensor, poses,
                                            self.timesteps, seed, self.network, self.stream):
            with torch.no_grad():
                yield start, to_uint8_frames(self.codec.decode(latents[0]))

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
        return RenderResult(output, frames, frames / fps, finished - started,
                            first_frame or 0.0, finished - loop_started)
