"""The Python API: a loaded student and motion model that turn speech and a portrait into
frames, as they are made.

    from posecast import Pipeline

    pipe = Pipeline.from_pretrained()                      # the bundled starter, or a folder/repo
    for frame in pipe("speech.wav", "portrait.png"):       # (H, W, 3) uint8, chunk by chunk
        ...
    pipe.render("speech.wav", "portrait.png", "talk.mp4")  # the same frames into an MP4

`posecast render` runs through this object; writing the MP4 is one consumer of its frames.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path

import numpy as np


class Pipeline:
    """A student of any family (`renderer`: posecast.render.Renderer's interface) and a motion
    model (None: the built-in one), reused across calls."""

    def __init__(self, renderer, motion=None) -> None:
        self.renderer, self.motion = renderer, motion

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, device: str = "auto",
                        revision: str | None = None, motion: str | None = None,
                        size: tuple[int, int] | None = None, steps: int | None = None,
                        compile: bool | None = None) -> Pipeline:
        """A student model folder or Hub repo id (default: the bundled starter) on `device`
        ("auto": CUDA when there is one); `motion`: a learned motion model's folder or repo id
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

    def __call__(self, audio: str | os.PathLike, portrait: str | os.PathLike,
                 fps: float = 25.0, seed: int = 0,
                 poses: str | os.PathLike | None = None) -> Iterator[np.ndarray]:
        """The video's frames, (H, W, 3) uint8 RGB, each as soon as its chunk is done: exactly
        ceil(audio seconds × fps) of them. `poses`: follow a keypoint file (.npz) instead of
        the motion model."""
        job = self.renderer.prepare(audio, portrait, self.motion, poses, fps, seed)
        return self.renderer.frames(job)

    def render(self, audio: str | os.PathLike, portrait: str | os.PathLike,
               output: str | os.PathLike, fps: float = 25.0, seed: int = 0,
               poses: str | os.PathLike | None = None, **callbacks):
        """The same frames streamed into an MP4 at `output` with the audio muxed in; returns a
        posecast.render.RenderResult. `callbacks`: on_progress, on_warning, warn_seconds,
        max_minutes."""
        return self.renderer.render(audio, portrait, Path(output), motion=self.motion,
                                    poses=poses, fps=fps, seed=seed, **callbacks)
