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
from dataclasses import dataclass

import numpy as np
import torch

from posecast.attention.mask import (
    REGION_COUNT,
    InputAwareMask,
    group_table,
    past_frames,
    token_groups,
    window_regions,
)
from posecast.attention.plan import AttentionPlan
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


def compute_dtype(model: Denoiser, device: torch.device) -> torch.dtype:
    """The dtype activations (and so the KV cache) have: bf16 under CUDA autocast."""
    return torch.bfloat16 if device.type == "cuda" else next(model.parameters()).dtype


class ChunkPlanner:
    """Host-side bookkeeping of the input-aware masks of a student's chunks.

    The KV cache is a ring of `capacity` frame slots; frame f lives in slot f mod capacity,
    its tokens in the order they were stored (sorted by group). A chunk's mask is over the
    window [end − window, end): its queries are the chunk's tokens sorted by group, its keys
    the ring's slots (EMPTY where no frame is held yet) followed by the chunk's own tokens,
    so its shapes never change. Token regions are rasterised once per frame."""

    def __init__(self, config, batch: int) -> None:
        self.config, self.batch = config, batch
        rows, cols = config.token_grid
        self.tokens = rows * cols
        capacity = config.context_frames
        self.slot_frame = np.full((batch, capacity), -1)  # frame held by each ring slot
        self.slot_regions = np.zeros((batch, capacity, self.tokens), np.int64)  # as stored
        self.regions: list[dict[int, np.ndarray]] = [{} for _ in range(batch)]

    def _regions(self, b: int, first: int, poses: Keypoints) -> np.ndarray:
        """(T, rows, cols) regions of frames first… (poses hold exactly those frames)."""
        cache = self.regions[b]
        missing = [i for i in range(len(poses)) if first + i not in cache]
        if missing:
            drawn = window_regions(poses[missing[0]:], self.config)
            for i in range(missing[0], len(poses)):
                cache[first + i] = drawn[i - missing[0]]
        for frame in [f for f in cache if f < first]:
            del cache[frame]
        return np.stack([cache[first + i] for i in range(len(poses))])

    def masks(self, start: int, end: int, window_poses: list[Keypoints]
              ) -> tuple[list[InputAwareMask], torch.Tensor]:
        """The chunk [start, end)'s masks (one per batch element) and the order (B, c·n)
        that sorts its tokens; window_poses: per batch element the poses of frames
        max(0, end − window) … end − 1."""
        config = self.config
        window, chunk = config.window, end - start
        window_start = end - window
        masks, orders = [], []
        for b, poses in enumerate(window_poses):
            first = max(0, window_start)
            regions = self._regions(b, first, poses)
            table = group_table(len(poses), past_frames(poses, config.k_frames), chunk=chunk,
                                background_reach=config.background_reach, slots=window)
            empty = table.shape[0] - 1
            queries = token_groups(regions[-chunk:], window - chunk)
            order = np.argsort(queries, kind="stable")
            held = self.slot_frame[b]
            slot_groups = np.where(((held >= 0) & (held >= window_start))[:, None],
                                   (held - window_start)[:, None] * REGION_COUNT
                                   + self.slot_regions[b], empty)
            keys = np.concatenate([slot_groups.reshape(-1), queries[order]])
            masks.append(InputAwareMask(torch.from_numpy(queries[order]), torch.from_numpy(keys),
                                        torch.from_numpy(table)))
            orders.append(torch.from_numpy(order))
        return masks, torch.stack(orders)

    def commit(self, start: int, end: int, masks: list[InputAwareMask]) -> None:
        """The chunk [start, end) now sits in the ring, in its sorted token order."""
        capacity = self.slot_frame.shape[1]
        if capacity == 0:
            return
        slot = start % capacity
        for b, mask in enumerate(masks):
            stored = mask.query_groups.numpy().reshape(end - start, self.tokens)
            self.slot_frame[b, slot:slot + end - start] = np.arange(start, end)
            self.slot_regions[b, slot:slot + end - start] = stored % REGION_COUNT


@dataclass
class StreamState:
    """What a renderer keeps between rollouts: the KV cache and the attention plan, both refilled
    in place, so every video reuses the same device tensors (static inputs of CUDA graphs)."""

    cache: KVCache | None = None
    plan: AttentionPlan | None = None


class CausalRollout:
    """Generates one video (per batch element) chunk after chunk, in order.

    Every shape is fixed from the first chunk on (the KV cache is a preallocated ring, the
    masks cover a whole window with EMPTY slots, one AttentionPlan is refilled in place), so a
    compiled `network` never recompiles after its first chunk and commit pass."""

    def __init__(self, model: Denoiser, reference: torch.Tensor, pose_maps: PoseMaps,
                 poses: Poses | None, timesteps: list[float],
                 network: Callable | None = None, frames: int | None = None,
                 state: StreamState | None = None) -> None:
        """reference (B, C, h, w): the portrait's latent; `poses` is needed for input-aware
        attention only. `network`: what runs the model (default the model itself; a compiled
        version of it); `frames`: the video's length, when known, so the next chunk's host
        work (masks, pose maps) is done while the device runs this one; `state`: a KV cache and
        attention plan kept from an earlier rollout of the same model and shapes (a renderer
        reuses them, so compiled CUDA graphs see the same static tensors in every video)."""
        config = model.config
        if not config.is_student:
            raise ValueError("CausalRollout needs a causal student (config.chunk > 0)")
        if config.attention == "input_aware" and poses is None:
            raise ValueError("an input-aware student needs the poses")
        self.model, self.reference, self.timesteps = model, reference, timesteps
        self.network = model if network is None else network
        self.pose_maps, self.poses, self.frames = pose_maps, poses, frames
        device, batch = reference.device, reference.shape[0]
        rows, cols = config.token_grid
        if state is not None and state.cache is not None:
            self.cache = state.cache
            self.cache.reset()
        else:
            self.cache = KVCache(config.context_frames, rows * cols, config.depth, batch,
                                 config.heads, config.hidden_size // config.heads, device,
                                 compute_dtype(model, device), chunk_frames=config.chunk,
                                 in_place=not model.training)
            if state is not None:
                state.cache = self.cache
                if device.type == "cuda":
                    self.cache.mark_static()
        self.planner = ChunkPlanner(config, batch) if config.attention == "input_aware" \
            else None
        self.plan: AttentionPlan | None = None if state is None else state.plan
        self._plan_has_graph = False
        self.state = state
        self._next_masks: tuple[int, tuple] | None = None  # (start, masks) made ahead
        self.position = torch.zeros((), dtype=torch.long, device=device)  # chunk start
        self.next_frame = 0

    # ------------------------------------------------------------------ masks

    def _planned_masks(self, start: int, end: int) -> tuple:
        """The chunk [start, end)'s masks and token order, from the planner's ring as it is."""
        window_start = max(0, end - self.model.config.window)
        return self.planner.masks(start, end, self.poses(window_start, end))

    def _window_masks(self, start: int, end: int) -> tuple:
        """The same, made ahead of time where `_prepare_next` did."""
        if self._next_masks is not None and self._next_masks[0] == start:
            return self._next_masks[1]
        return self._planned_masks(start, end)

    def _prepare_next(self, end: int) -> None:
        """Host work of the chunk after this one (pose maps, masks), done while the device is
        still busy with this one; needs the cache bookkeeping of this chunk done first."""
        chunk = self.model.config.chunk
        if self.frames is None or end + chunk > self.frames:
            return
        self.pose_maps(end, end + chunk)
        if self.planner is not None:
            self._next_masks = (end, self._planned_masks(end, end + chunk))

    def _layout(self, start: int, end: int):
        """The chunk's attention layout: the input-aware plan (refilled in place), or for a
        dense student the cache's key-validity mask."""
        if self.planner is None:
            if self.cache.capacity == 0:
                return None
            return self.cache.key_validity((end - start) * self.cache.tokens_per_frame)
        masks, order = self._window_masks(start, end)
        config = self.model.config
        if self.plan is None or self._plan_has_graph or torch.is_grad_enabled():
            # a plan that autograd saw is read again by the backward pass: never refilled
            self.plan = AttentionPlan(masks, config.attention_backend, self.reference.device,
                                      config.block_size, order)
            self._plan_has_graph = torch.is_grad_enabled()
            if self.state is not None:
                self.state.plan = self.plan
                if self.plan.device.type == "cuda":
                    self.plan.mark_static()
        else:
            self.plan.update(masks, order)
        self._masks = masks
        return self.plan

    # ------------------------------------------------------------------ passes

    def _run(self, x: torch.Tensor, t: float, start: int, layout, commit: bool = False
             ) -> torch.Tensor | None:
        """The clean prediction x − t·v from x at time t; with `commit` (x clean, t = 0) only
        the chunk's keys and values go into the cache, and None is returned."""
        end = start + x.shape[1]
        times = torch.full((x.shape[0],), t, device=x.device)
        with autocast(x.device):
            velocity = self.network(x, times, self.reference, self.pose_maps(start, end),
                                    layout=layout, cache=self.cache, commit=commit,
                                    first_frame=self.position)
        return None if commit else x - t * velocity.float()

    def _commit(self, clean: torch.Tensor, start: int, layout) -> None:
        """The clean chunk's keys and values into the cache (oldest frames overwritten)."""
        end = start + clean.shape[1]
        if self.cache.capacity:
            self.cache.point_at(start % self.cache.capacity, end - start)
            with torch.no_grad():
                self._run(clean, 0.0, start, layout, commit=True)
            if self.planner is not None:
                self.planner.commit(start, end, self._masks)

    def _advance(self, end: int) -> None:
        self.position.add_(end - self.next_frame)
        self.next_frame = end

    def regress_chunk(self, noisy: torch.Tensor, t: float, clean: torch.Tensor) -> torch.Tensor:
        """Teacher forcing (ODE-pair initialisation): predict the next chunk's clean frames
        from `noisy` at time t (with gradients), then commit the given `clean` chunk, not the
        prediction, as context for the chunks after it."""
        start = self.next_frame
        layout = self._layout(start, start + noisy.shape[1])
        prediction = self._run(noisy, t, start, layout)
        self._commit(clean, start, layout)
        self._advance(start + noisy.shape[1])
        return prediction

    def denoise(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
                exit_step: int | None = None) -> torch.Tensor:
        """The next chunk's clean frames (B, c, C, h, w) from `noise`, without committing it
        (call `commit` next, or `chunk` for both); see `chunk`."""
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
        self._pending = (clean, start, layout)
        return clean

    def commit(self, commit: bool = True) -> None:
        """Finish the chunk `denoise` made: with `commit`, its cache pass (skip it for the
        video's last chunk); then prepare the next chunk's host work."""
        clean, start, layout = self._pending
        end = start + clean.shape[1]
        if commit:
            self._commit(clean.detach(), start, layout)
        self._advance(end)
        self._prepare_next(end)

    def chunk(self, noise: torch.Tensor, renoise: Callable[[], torch.Tensor],
              exit_step: int | None = None, commit: bool = True) -> torch.Tensor:
        """Generate the next chunk from `noise` (B, c, C, h, w); `renoise()` draws the fresh
        noise between steps. `exit_step` i < k stops after step i and returns its prediction
        with gradients (training); None runs all k steps. `commit=False` skips the cache pass
        (the video's last chunk). Returns the clean chunk (B, c, C, h, w)."""
        clean = self.denoise(noise, renoise, exit_step)
        self.commit(commit)
        return clean
