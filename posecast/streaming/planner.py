"""Host-side bookkeeping of a causal student's input-aware masks, chunk by chunk, for any
family: which frame each ring slot of the cache holds, and each chunk's masks over its window
(ring slots first, then the chunk's own tokens), so that every chunk's shapes are the same."""

from __future__ import annotations

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
from posecast.pose.keypoints import Keypoints


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
