"""`posecast render` for MimicMotion students: the DiT renderer's job (audio → motion → poses →
MP4, exact length, batch, shards, --json) with this family's chunks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from posecast.mimicmotion.causal import StudentCache
from posecast.mimicmotion.student import chunk_latents, decode, load_student
from posecast.models.codecs import to_uint8_frames
from posecast.pose.framing import Box, fit_box
from posecast.pose.keypoints import Keypoints
from posecast.pose.stream import PoseStream
from posecast.render import Renderer


class StudentRenderer(Renderer):
    """A loaded MimicMotion student, reused across jobs. It runs eagerly (the compiled chunk
    step is built for the DiT family only); on CUDA in bf16."""

    def __init__(self, model: str | os.PathLike, device: torch.device,
                 size: tuple[int, int] | None = None, steps: int | None = None,
                 compile: bool | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 revision: str | None = None) -> None:
        from posecast.hub import resolve_folder

        self.source = str(model)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.student = load_student(resolve_folder(model, revision), device, dtype)
        parts = self.student.parts
        if size is not None:
            parts.recipe = parts.recipe.replace(height=size[0], width=size[1])
        if steps is not None:
            self.student.settings = dataclasses.replace(self.student.settings, steps=steps)
        if compile and on_warning is not None:
            on_warning("warning: --compile is built for posecast's own students only; "
                       "rendering this MimicMotion student uncompiled")
        self.device = device
        self.cache = StudentCache(self.student.settings.context_frames,
                                  self.student.settings.chunk, device)
        with torch.no_grad():  # warm-up: allocations and first-call costs
            still = Keypoints.empty(self.student.settings.chunk * 2, self.width, self.height)
            for _ in self.chunks(np.zeros((self.height, self.width, 3), np.uint8), still):
                pass

    @property
    def width(self) -> int:
        return self.student.recipe.width

    @property
    def height(self) -> int:
        return self.student.recipe.height

    @property
    def steps(self) -> int:
        return self.student.settings.steps

    @property
    def frames_kept(self) -> int:
        return self.student.settings.window + 2 * self.student.settings.chunk

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        """The whole portrait fitted to the frame, as the teacher frames it."""
        return fit_box(image.shape[1], image.shape[0], self.width, self.height)

    def chunks(self, reference: np.ndarray, poses: Keypoints | PoseStream, seed: int = 0
               ) -> Iterator[tuple[int, np.ndarray]]:
        conditions = self.student.conditions(reference)
        for start, latents in chunk_latents(self.student, conditions, poses, seed, self.cache):
            yield start, to_uint8_frames(decode(self.student, latents[0]))
