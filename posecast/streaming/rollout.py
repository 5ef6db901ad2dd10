"""One streaming rollout for every model family: a causal student makes a video chunk after
chunk against a cache of past frames.

A chunk of c frames starts from unit noise and takes k steps at the student's fixed noise
levels ℓ₀ > … > ℓ_{k−1}: at ℓ_i the student's clean estimate x̂₀ is re-noised with fresh noise
to ℓ_{i+1}, and the last estimate is the chunk. One more pass over the clean chunk at the commit
level writes it into the cache, which holds the last `context_frames` frames, so memory does not
grow with the video's length.

Training runs this same rollout (backward simulation: the student's inputs at every step come
from the student), stopping each chunk at a chosen step with gradients on that step only, so
training sees what inference sees; teacher forcing (`regress`) commits given frames instead.

Every shape is fixed from the first chunk on (the cache is a preallocated ring, the masks cover
a whole window with EMPTY slots, the attention plans are refilled in place), so a compiled
network never recompiles after its first chunk and commit pass.

What differs between families sits behind `StudentBackend` (families/… implement it): what a
level is and how noise is added (flow matching or EDM), how the network is called, the cache
type, and the token grids the input-aware plans are made for (the DiT has one, MimicMotion one
per joint UNet level).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from posecast.attention.plan import AttentionPlan
from posecast.pose.framing import Box
from posecast.pose.keypoints import Keypoints
from posecast.pose.stream import PoseStream
from posecast.streaming.planner import ChunkPlanner
from posecast.streaming.pose_maps import ChunkPoseMaps, hold_to_length

# pose_maps(start, end) → (B, end − start, 3, H, W): the student's pose input on its device
PoseMaps = Callable[[int, int], torch.Tensor]
# poses(start, end) → one Keypoints of those frames per batch element (input-aware masks)
Poses = Callable[[int, int], list[Keypoints]]


class StudentCache(Protocol):
    """A ring of `capacity` past frames, preallocated, written in place while streaming."""

    capacity: int

    def point_at(self, first_slot: int) -> None:
        """Aim the next commit pass at the chunk's slots (host bookkeeping between passes)."""

    def filled(self) -> None:
        """The slots the commit pass just wrote now hold frames."""

    def reset(self) -> None:
        """A new video: nothing held (memory and addresses kept)."""

    def mark_static(self) -> None:
        """Tell torch.compile the tensors keep their addresses (CUDA graphs use them in place)."""


class StudentBackend(Protocol):
    """What a family's causal student provides to stream (the rollout) and to render."""

    device: torch.device
    network: torch.nn.Module  # what runs the model: the module, or a compiled version of it
    chunk: int  # frames made together
    context_frames: int  # past frames the cache holds
    commit_level: float  # the noise level of the cache pass over a clean chunk
    attention_backend: str
    block_size: int
    height: int
    width: int
    attention_layers: int  # layers whose attention reads the cache (benchmarks count calls)

    def levels(self) -> list[float]:
        """The k levels a chunk's steps run at, noisiest first."""

    def noisy(self, clean: torch.Tensor | float, level: float,
              noise: torch.Tensor) -> torch.Tensor:
        """`clean` noised with unit `noise` to `level` (clean = 0 gives a chunk's start)."""

    def grids(self) -> dict[int, Any]:
        """Per token grid (by tokens per frame) the config a ChunkPlanner makes input-aware
        masks for; empty for dense attention."""

    def batch_size(self, conditions: Any) -> int: ...

    def new_cache(self, batch: int) -> StudentCache: ...

    def layout(self, cache: StudentCache, plans: dict[int, AttentionPlan], frames: int) -> Any:
        """What the network attends under for a chunk of `frames` frames (made once per chunk,
        before its commit pass)."""

    def predict(self, x: torch.Tensor, level: float, conditions: Any, pose_maps: torch.Tensor,
                cache: StudentCache, layout: Any, position: torch.Tensor,
                commit: bool) -> torch.Tensor | None:
        """The clean estimate (B, c, C, h, w) of x at `level`; with `commit` only the cache is
        written and None comes back. `position`: the chunk's first frame (device tensor)."""

    # rendering: a portrait and poses in, frames out
    def latent_shape(self) -> tuple[int, int, int]: ...

    def conditions(self, reference: np.ndarray) -> Any:
        """Of a portrait (H, W, 3) uint8 at the student's size."""

    def draw_poses(self, poses: Keypoints) -> np.ndarray:
        """(n, H, W, 3) uint8 pose maps."""

    def pose_input(self, drawn: torch.Tensor) -> torch.Tensor:
        """(1, n, 3, H, W) uint8 on the device → the network's pose input."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(c, C, h, w) → (c, 3, H, W) in [-1, 1]."""

    def frame(self, image: np.ndarray, keypoints: Keypoints) -> Box:
        """The part of a portrait (H₀, W₀, 3) that becomes the frame."""


@dataclass
class StreamState:
    """What a renderer keeps between rollouts: the cache and the attention plans (by tokens per
    frame), both refilled in place, so every video reuses the same device tensors (the static
    inputs of CUDA graphs)."""

    cache: StudentCache | None = None
    plans: dict[int, AttentionPlan] = field(default_factory=dict)

    def mark_static(self) -> None:
        """After a warm-up has made the cache and plans at their final shapes."""
        if self.cache is not None:
            self.cache.mark_static()
        for plan in self.plans.values():
            plan.mark_static()


class Rollout:
    """One video (per batch element) chunk after chunk, in order."""

    def __init__(self, student: StudentBackend, conditions: Any, pose_maps: PoseMaps,
                 poses: Poses | None, frames: int | None = None,
                 state: StreamState | None = None) -> None:
        """`conditions`: the student's conditioning of every frame (the portrait's);
        `poses` is needed for input-aware attention only; `frames`: the video's length, when
        known, so the next chunk's host work (masks, plans, pose maps) is done while the device
        runs this one; `state`: a cache and plans kept from an earlier rollout of the same
        student and shapes (a renderer's)."""
        grids = student.grids()
        if grids and poses is None:
            raise ValueError("an input-aware student needs the poses")
        self.student, self.conditions = student, conditions
        self.pose_maps, self.poses, self.frames = pose_maps, poses, frames
        batch = student.batch_size(conditions)
        if state is not None and state.cache is not None:
            self.cache = state.cache
            self.cache.reset()
        else:
            self.cache = student.new_cache(batch)
            if state is not None:
                state.cache = self.cache
        self.planners = {tokens: ChunkPlanner(grid, batch) for tokens, grid in grids.items()}
        self.plans: dict[int, AttentionPlan] = {} if state is None else state.plans
        self._plans_have_graph = False  # a plan autograd saw is read again by backward
        self._ahead: tuple[int, dict[int, list], bool] | None = None  # start, masks, refilled
        self._current: tuple[int, dict[int, list], Any] | None = None  # start, masks, layout
        self._pending: tuple[torch.Tensor, int] | None = None
        self.position = torch.zeros((), dtype=torch.long, device=student.device)  # chunk start
        self.next_frame = 0

    # ------------------------------------------------------------------ masks and plans

    def _masks(self, start: int, end: int) -> dict[int, tuple]:
        """The chunk's masks and token order per grid, from the planners' rings as they are
        (every earlier chunk committed)."""
        if not self.planners:
            return {}
        first = max(0, end - self.student.context_frames - self.student.chunk)
        window_poses = self.poses(first, end)
        return {tokens: planner.masks(start, end, window_poses)
                for tokens, planner in self.planners.items()}

    def _may_refill(self) -> bool:
        return bool(self.plans) and not self._plans_have_graph and not torch.is_grad_enabled()

    def _refill(self, made: dict[int, tuple]) -> dict[int, list]:
        """The plans refilled in place (or made anew) with `made`; returns the masks."""
        refill = self._may_refill()
        for tokens, (masks, order) in made.items():
            if refill:
                self.plans[tokens].update(masks, order)
            else:
                self.plans[tokens] = AttentionPlan(masks, self.student.attention_backend,
                                                   self.student.device, self.student.block_size,
                                                   order)
        self._plans_have_graph = False  # refilled or new: no graph has read them yet
        return {tokens: masks for tokens, (masks, _) in made.items()}

    def _layout(self, start: int, end: int) -> tuple[dict[int, list], Any]:
        """The chunk's masks (per grid) and layout, made once: from the plans refilled ahead by
        `_prepare_next`, or now."""
        if self._current is not None and self._current[0] == start:
            return self._current[1], self._current[2]
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == start:
            masks = ahead[1] if ahead[2] else self._refill(ahead[1])
        else:
            masks = self._refill(self._masks(start, end))
        layout = self.student.layout(self.cache, self.plans, end - start)
        self._current = (start, masks, layout)
        return masks, layout

    def _prepare_next(self, end: int) -> None:
        """Host work of the chunk after this one (pose maps, masks, plans), done while the
        device still runs this one; after this chunk's commit, so the planners' rings are
        current. Refilling plans in place is safe then: the copies queue on the device after
        the passes that read them."""
        chunk = self.student.chunk
        if self.frames is None or end + chunk > self.frames:
            return
        self.pose_maps(end, end + chunk)
        if self.planners:
            made = self._masks(end, end + chunk)
            if self._may_refill():
                self._ahead = (end, self._refill(made), True)
            else:
                self._ahead = (end, made, False)

    # ------------------------------------------------------------------ passes

    def _pass(self, x: torch.Tensor, level: float, commit: bool) -> torch.Tensor | None:
        start = self.next_frame
        _, layout = self._layout(start, start + x.shape[1])
        self._plans_have_graph |= torch.is_grad_enabled()
        return self.student.predict(x, level, self.conditions,
                                    self.pose_maps(start, start + x.shape[1]), self.cache,
                                    layout, self.position, commit)

    def estimate(self, x: torch.Tensor, level: float) -> torch.Tensor:
        """The student's clean estimate of the next chunk from x (B, c, C, h, w) at `level`."""
        return self._pass(x, level, commit=False)

    def store(self, clean: torch.Tensor, level: float | None = None) -> None:
        """Commit `clean` as the next chunk: its pass at `level` (default the commit level)
        writes the cache (oldest frames overwritten); then the chunk after it is prepared."""
        start, end = self.next_frame, self.next_frame + clean.shape[1]
        if self.cache.capacity:
            masks, _ = self._layout(start, end)
            self.cache.point_at(start % self.cache.capacity)
            with torch.no_grad():
                self._pass(clean.detach(), self.student.commit_level if level is None
                           else level, commit=True)
            self.cache.filled()
            for tokens, planner in self.planners.items():
                planner.commit(start, end, masks[tokens])
        self.skip(end - start)

    def skip(self, frames: int) -> None:
        """Move on by `frames` without committing them (the video's last chunk)."""
        end = self.next_frame + frames
        self.position.add_(frames)
        self.next_frame = end
        self._current = None
        self._prepare_next(end)

    def regress(self, x: torch.Tensor, level: float, clean: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (ODE-pair initialisation): the estimate of the next chunk from x at
        `level` (with gradients), then the given `clean` chunk, not the estimate, committed as
        the context of the chunks after it."""
        prediction = self.estimate(x, level)
        self.store(clean)
        return prediction

    def denoise(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
                exit_step: int | None = None) -> torch.Tensor:
        """The next chunk's clean latents (B, c, C, h, w) from unit `noise`, not yet committed
        (`finish` next, or `chunk` for both); `renoise()` draws the fresh unit noise between
        steps. `exit_step` i < k stops after step i and returns its estimate with gradients
        (training); None runs all k steps."""
        levels = self.student.levels()
        last = len(levels) - 1 if exit_step is None else exit_step
        self._layout(self.next_frame, self.next_frame + noise.shape[1])  # in the caller's mode
        x = self.student.noisy(0.0, levels[0], noise)
        for i in range(last + 1):
            if i < last:
                with torch.no_grad():
                    clean = self.estimate(x, levels[i])
                x = self.student.noisy(clean, levels[i + 1], renoise())
            else:
                clean = self.estimate(x, levels[i])
        self._pending = clean
        return clean

    def finish(self, commit: bool = True) -> None:
        """The chunk `denoise` made: committed (skip that for the video's last chunk), and the
        next one prepared."""
        clean, self._pending = self._pending, None
        if commit:
            self.store(clean)
        else:
            self.skip(clean.shape[1])

    def chunk(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
              exit_step: int | None = None, commit: bool = True) -> torch.Tensor:
        """`denoise` and `finish`: the next chunk's clean latents (B, c, C, h, w)."""
        clean = self.denoise(noise, renoise, exit_step)
        self.finish(commit)
        return clean


def chunk_latents(student: StudentBackend, conditions: Any, poses: Keypoints | PoseStream,
                  seed: int = 0, state: StreamState | None = None
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """The student's video of `poses` (in frame pixels) chunk by chunk, each as soon as it
    exists: (index of its first frame, latents (1, c, C, h, w)). The last chunk is filled up by
    holding the last pose (callers drop its frames past the end). A chunk is handed over before
    its cache pass runs, and the next chunk's pose maps and plans are prepared while the device
    works. Noise comes from a generator on the student's device seeded with `seed` (no host
    copies inside the loop). `state`: a renderer's cache and plans, reused."""
    chunk, device = student.chunk, student.device
    padded = hold_to_length(poses, math.ceil(len(poses) / chunk) * chunk)
    pose_maps = ChunkPoseMaps(lambda start, end: student.draw_poses(padded[start:end]), device,
                              student.pose_input)
    rollout = Rollout(student, conditions, pose_maps, lambda s, e: [padded[s:e]],
                      frames=len(padded), state=state)
    generator = torch.Generator(device).manual_seed(seed)
    shape = (1, chunk, *student.latent_shape())
    for start in range(0, len(padded), chunk):
        with torch.no_grad():  # not around the yield: the caller's grad mode stays its own
            noise = torch.randn(shape, generator=generator, device=device)
            latents = rollout.denoise(noise, lambda: torch.randn(shape, generator=generator,
                                                                 device=device))
        yield start, latents
        with torch.no_grad():
            rollout.finish(commit=start + chunk < len(padded))
