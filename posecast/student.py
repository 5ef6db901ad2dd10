"""The causal few-step student: chunk-by-chunk generation against a KV cache.

A video is generated in chunks of c = config.chunk frames. Each chunk starts from noise and
takes k steps at the fixed times t_0 = 1 > t_1 > … > t_k = 0 (config.sampler: steps, shift):
at t_i the student predicts the clean chunk x̂₀ = x − t_i·v, which is re-noised with fresh
noise to t_{i+1} (x = (1 − t_{i+1})·x̂₀ + t_{i+1}·ε); the last prediction is the chunk. One more
pass over the clean chunk at t = 0 stores its keys and values in the KV cache, which holds the
last config.context_frames frames, so memory does not grow with the video's length.

Training runs this same rollout (backward simulation: the student's inputs at every step come
from the student), stopping each chunk at a chosen step with gradients on that step only, so
training sees what inference sees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from posecast.attention.mask import mask_for_window
from posecast.diffusion.flow import sampling_timesteps
from posecast.generate import autocast
from posecast.models.denoiser import Denoiser
from posecast.models.kv_cache import KVCache
from posecast.pose.keypoints import Keypoints

# pose_maps(start, end) → (B, end − start, 3, H, W) in [0, 1] on the model's device
PoseMaps = Callable[[int, int], torch.Tensor]
# poses(start, end) → one Keypoints of those frames per batch element (input-aware masks)
Poses = Callable[[int, int], list[Keypoints]]


def student_timesteps(model: Denoiser, steps: int | None = None) -> list[float]:
    """(k + 1) times from 1 to 0; k = `steps` or the model's own."""
    sampler = model.config.sampler
    return sampling_timesteps(steps or sampler.steps, sampler.shift).tolist()


class CausalRollout:
    """Generates one video (per batch element) chunk after chunk, in order."""

    def __init__(self, model: Denoiser, reference: torch.Tensor, pose_maps: PoseMaps,
                 poses: Poses | None, timesteps: list[float]) -> None:
        """reference (B, C, h, w): the portrait's latent; `poses` is needed for input-aware
        attention only."""
        config = model.config
        if not config.is_student:
            raise ValueError("CausalRollout needs a causal student (config.chunk > 0)")
        if config.attention == "input_aware" and poses is None:
            raise ValueError("an input-aware student needs the poses")
        self.model, self.reference, self.timesteps = model, reference, timesteps
        self.pose_maps, self.poses = pose_maps, poses
        self.cache = KVCache(config.context_frames)
        self.next_frame = 0

    def _layout(self, start: int, end: int):
        config = self.model.config
        if config.attention != "input_aware":
            return None  # dense: a chunk sees all of itself and all of its cache
        context = start - self.cache.frames
        rows, cols = config.token_grid
        return [mask_for_window(poses, config).for_queries_from(self.cache.frames * rows * cols)
                for poses in self.poses(context, end)]

    def _run(self, x: torch.Tensor, t: float, start: int, layout, commit: bool = False
             ) -> torch.Tensor | None:
        """The clean prediction x − t·v from x at time t; with `commit` (x clean, t = 0) only
        the chunk's keys and values go into the cache, and None is returned."""
        end = start + x.shape[1]
        times = torch.full((x.shape[0],), t, device=x.device)
        with autocast(x.device):
            velocity = self.model(x, times, self.reference, self.pose_maps(start, end),
                                  layout=layout, cache=self.cache, commit=commit,
                                  first_frame=start)
        return None if commit else x - t * velocity.float()

    def regress_chunk(self, noisy: torch.Tensor, t: float, clean: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (ODE-pair initialisation): predict the next chunk's clean frames
        from `noisy` at time t (with gradients), then commit the given `clean` chunk, not the
        prediction, as context for the chunks after it."""
        start = self.next_frame
        layout = self._layout(start, start + noisy.shape[1])
        prediction = self._run(noisy, t, start, layout)
        with torch.no_grad():
            self._run(clean, 0.0, start, layout, commit=True)
        self.next_frame += noisy.shape[1]
        return prediction

    def chunk(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
              exit_step: int | None = None, commit: bool = True) -> torch.Tensor:
        """Generate the next chunk from `noise` (B, c, C, h, w); `renoise()` draws the fresh
        noise between steps. `exit_step` i < k stops after step i and returns its prediction
        with gradients (training); None runs all k steps. `commit=False` skips the cache pass
        (the video's last chunk). Returns the clean chunk (B, c, C, h, w)."""
        start, end = self.next_frame, self.next_frame + noise.shape[1]
        layout = self._layout(start, end)
        last = len(self.timesteps) - 2 if exit_step is None else exit_step
        x = noise
        for i in range(last + 1):
            t, t_next = self.timesteps[i], self.timesteps[i + 1]
            if i < last:
                with torch.no_grad():
                    clean = self._run(x, t, start, layout)
                x = (1 - t_next) * clean + t_next * renoise()
            else:
                clean = self._run(x, t, start, layout)
        if commit:
            with torch.no_grad():
                self._run(clean.detach(), 0.0, start, layout, commit=True)
        self.next_frame = end
        return clean
