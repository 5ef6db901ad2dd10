"""`posecast render` for MimicMotion students: the DiT renderer's job (audio → motion → poses →
MP4, exact length, batch, shards, --json) with this family's chunks."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch

from posecast.attention.plan import AttentionPlan
from posecast.mimicmotion.causal import StudentCache
from posecast.mimicmotion.student import chunk_latents, compile_network, decode, load_student
from posecast.models.codecs import to_uint8_frames
from posecast.pose.framing import Box, fit_box
from posecast.pose.keypoints import Keypoints
from posecast.pose.stream import PoseStream
from posecast.render import Renderer, compile_failure, compiles_by_default


class StudentRenderer(Renderer):
    """A loaded MimicMotion student, reused across jobs, with one cache and one set of
    attention plans for every video. On CUDA it runs in bf16 and its chunk step is compiled
    and captured as CUDA graphs by default (`compile`; dense attention or the flex backend),
    after an eager warm-up that allocates the cache and plans; a second warm-up runs the
    compiled passes once, so the first timed frame pays for neither."""

    def __init__(self, model: str | os.PathLike, device: torch.device,
                 size: tuple[int, int] | None = None, steps: int | None = None,
                 compile: bool | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 revision: str | None = None) -> None:
        from posecast.hub import resolve_folder

        self.source = str(model)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.student = load_student(resolve_folder(model, revision), device, dtype)
        parts, settings = self.student.parts, self.student.settings
        if size is not None:
            parts.recipe = parts.recipe.replace(height=size[0], width=size[1])
        if steps is not None:
            self.student.settings = settings = dataclasses.replace(settings, steps=steps)
        self.device = device
        self.cache = StudentCache(settings.context_frames, settings.chunk, device)
        self.plans: dict[int, AttentionPlan] = {}  # by tokens per frame, refilled per chunk
        if compile is None:
            compile = compiles_by_default(settings.attention, settings.backend, device)
        with torch.no_grad():
            self._warm_up()  # eager: allocations, first-call costs, the cache and plans
            if compile:
                eager = compile_network(self.student, self.cache, self.plans)
                try:
                    self._warm_up()
                except Exception as error:  # torch.compile fails in many ways; eager works
                    if on_warning is not None:
                        on_warning(compile_failure(error))
                    self.student.network = eager

    def _warm_up(self) -> None:
        """Two chunks of a still pose and the cache pass between them: every pass and graph
        the render uses."""
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
        for start, latents in chunk_latents(self.student, conditions, poses, seed, self.cache,
                                            self.plans):
            yield start, to_uint8_frames(decode(self.student, latents[0]))
