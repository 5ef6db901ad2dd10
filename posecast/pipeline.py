"""posecast from Python: a loaded model that turns speech and a portrait into video frames, as
they are made, or into an MP4.

    import posecast

    pipe = posecast.Pipeline.from_pretrained()            # the bundled starter, or a folder/repo
    video = pipe("speech.wav", "portrait.png")            # nothing made yet: len(video), video.fps
    for frame in video:                                   # each chunk as soon as it is ready
        frame.index, frame.time, frame.image              # 0, 0.0 s, (H, W, 3) uint8 RGB
    pipe.render("speech.wav", "portrait.png", "talk.mp4")  # the same frames into an MP4

`posecast render` runs through this object; writing the MP4 is one consumer of its frames.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import numpy as np

from posecast.media.audio import MAX_MINUTES
from posecast.render import DEFAULT_WARN_SECONDS, Job, Renderer, RenderResult


@dataclass(frozen=True)
class Frame:
    """One frame of the video: its place (`index` from 0, `time` in seconds from the start)
    and its pixels. `np.asarray(frame)` is the image."""

    index: int
    time: float
    image: np.ndarray  # (H, W, 3) uint8 RGB

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.image if dtype is None else self.image.astype(dtype)


class Video:
    """The frames of one talking video, made while you iterate over it (a chunk of a few frames
    at a time, so memory stays flat). How many frames there will be, their rate and size are
    known before the first one is made: exactly ceil(audio seconds × fps) frames."""

    def __init__(self, renderer: Renderer, job: Job) -> None:
        self._renderer, self._job = renderer, job
        self.fps, self.width, self.height = job.fps, renderer.width, renderer.height

    def __len__(self) -> int:
        return len(self._job.poses)

    @property
    def seconds(self) -> float:
        return len(self) / self.fps

    def __iter__(self) -> Iterator[Frame]:
        for index, image in enumerate(self._renderer.frames(self._job)):
            yield Frame(index, index / self.fps, image)

    def __repr__(self) -> str:
        return (f"Video({len(self)} frames at {self.fps:g} fps = {self.seconds:.2f} s, "
                f"{self.width}x{self.height})")


class Pipeline:
    """A talking-video model, loaded once and reused for every call: the student network that
    draws the frames (`renderer`) and the motion model that turns speech into poses (`motion`;
    None: the built-in one). Make one with `Pipeline.from_pretrained`."""

    def __init__(self, renderer: Renderer, motion=None) -> None:
        self.renderer, self.motion = renderer, motion

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, device: str = "auto",
                        revision: str | None = None, motion: str | None = None,
                        size: tuple[int, int] | None = None, steps: int | None = None,
                        compile: bool | None = None) -> Pipeline:
        """A model folder or Hub repo id (default: the bundled starter) on `device` ("auto":
        CUDA when there is one); `motion`: a learned motion model's folder or repo id
        (default: the built-in model); `size` (height, width), `steps`: override the model's."""
        from posecast.devices import pick_device
        from posecast.families import load_renderer
        from posecast.motion import load_motion

        if model is None:
            from posecast.assets import starter_model

            model = starter_model()
        torch_device = pick_device(device)
        renderer = load_renderer(str(model), torch_device, size=size, steps=steps,
                                 compile=compile, revision=revision)
        return cls(renderer, load_motion(motion, str(torch_device)))

    width = property(attrgetter("renderer.width"))
    height = property(attrgetter("renderer.height"))
    steps = property(attrgetter("renderer.steps"))

    def __repr__(self) -> str:
        return (f"Pipeline(model={self.renderer.source!r}, {self.width}x{self.height}, "
                f"{self.steps} steps, device={self.renderer.device})")

    def __call__(self, audio: str | os.PathLike, portrait: str | os.PathLike,
                 fps: float = 25.0, seed: int = 0,
                 poses: str | os.PathLike | None = None) -> Video:
        """The talking video of `portrait` saying `audio`, as a Video to iterate over (the
        audio and portrait are read now; frames are made as you take them). `poses`: follow a
        keypoint file (.npz) instead of the motion model."""
        job = self.renderer.prepare(audio, portrait, self.motion, poses, fps, seed)
        return Video(self.renderer, job)

    def render(self, audio: str | os.PathLike, portrait: str | os.PathLike,
               output: str | os.PathLike, fps: float = 25.0, seed: int = 0,
               poses: str | os.PathLike | None = None, *,
               on_progress: Callable[[float, float], None] | None = None,
               on_warning: Callable[[str], None] | None = None,
               warn_seconds: float = DEFAULT_WARN_SECONDS,
               max_minutes: float = MAX_MINUTES) -> RenderResult:
        """The same frames streamed into an MP4 at `output` with the audio muxed in.
        on_progress(seconds of video done, seconds in all) after each frame; on_warning(text)
        for what the user should know (long audio, a cancelling stereo mix); audio longer than
        `warn_seconds` is warned about and audio whose header declares more than `max_minutes`
        refused. Returns the RenderResult (frames, timings, real-time factors)."""
        return self.renderer.render(audio, portrait, Path(output), motion=self.motion,
                                    poses=poses, fps=fps, seed=seed, on_progress=on_progress,
                                    on_warning=on_warning, warn_seconds=warn_seconds,
                                    max_minutes=max_minutes)
