"""The input-aware attention mask (METHOD.md), built at the level of token groups.

A group is one (frame, region) pair. Whether a query token may see a key token depends only on
their groups, so the mask is a small group × group table plus each token's group id:

  query (t_q, r_q) sees key (t_k, r_k) iff
    t_k = t_q                                              (dense inside a frame), or
    t_k ∈ the K past frames most pose-similar to t_q, r_k = r_q ∈ cross_regions, or
    r_q = r_k = background and 0 < t_q − t_k ≤ background_reach, or
    t_k is the reference frame and r_k = r_q ≠ background (when a reference frame is used);
  and, with `chunk` c > 0, never a frame of a later chunk (block-causal, for the student).
The reference frame's own tokens see only the reference frame.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from posecast.pose.regions import Region

REGION_COUNT = len(Region)
CROSS_FRAME_REGIONS = (Region.BODY, Region.ARMS, Region.LEFT_HAND, Region.RIGHT_HAND,
                       Region.FACE)


@dataclass(frozen=True, eq=False)
class InputAwareMask:
    """token_groups (N,) int64: each token's group; allowed (G, G) bool: group visibility.

    Groups are numbered frame slot × REGION_COUNT + region, where frame slot 0 is the
    reference frame when there is one, so sorting tokens by group gives the frame-major,
    region-sorted order the block layout uses.

    query_start > 0: only tokens from there on are queries (a student's chunk), the ones
    before are keys only (its KV cache of past frames); see `for_queries_from`.
    """

    token_groups: torch.Tensor
    allowed: torch.Tensor
    query_start: int = 0

    def for_queries_from(self, start: int) -> InputAwareMask:
        """The same mask with queries restricted to tokens [start:] (keys stay all tokens)."""
        return InputAwareMask(self.token_groups, self.allowed, start)

    @property
    def tokens(self) -> int:
        return self.token_groups.numel()

    def token_mask(self) -> torch.Tensor:
        """(N − query_start, N) bool: True where the query (row) may attend the key (column)."""
        queries = self.token_groups[self.query_start:]
        return self.allowed[queries[:, None], self.token_groups[None, :]]

    def density(self) -> float:
        """The fraction of (query, key) token pairs that are attended."""
        counts = torch.bincount(self.token_groups, minlength=self.allowed.shape[0]).double()
        return float(counts @ self.allowed.double() @ counts) / self.tokens**2

    @functools.cached_property
    def gather_plan(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """Per group with queries: (its query indices, counted from query_start; the key token
        indices it may see); and the permutation that puts the groups' concatenated outputs
        back in query order."""
        groups = self.token_groups.cpu()
        present = torch.unique(groups).tolist()
        members = {g: torch.nonzero(groups == g).flatten() for g in present}
        queries = torch.unique(groups[self.query_start:]).tolist()
        allowed = self.allowed.cpu().numpy()  # numpy: 2-D lookups without tensor overhead
        plan = [(members[g][members[g] >= self.query_start] - self.query_start,
                 torch.cat([members[h] for h in present if allowed[g, h]])) for g in queries]
        return plan, torch.argsort(torch.cat([query for query, _ in plan]))


def build_mask(token_regions: np.ndarray, past_frames: np.ndarray,
               reference_regions: np.ndarray | None = None, chunk: int = 0,
               background_reach: int = 0,
               cross_regions: tuple[int, ...] = CROSS_FRAME_REGIONS) -> InputAwareMask:
    """The mask for a window.

    token_regions (T, rows, cols) Region labels (pose.regions.token_regions); past_frames
    (T, K) indices of each frame's most similar past frames, −1 for none
    (pose.similarity.most_similar_past_frames); reference_regions (rows, cols) labels of a
    leading reference frame, or None. Tokens are ordered (reference frame,) then frame-major,
    row-major, as the denoiser lays them out.
    """
    frames = token_regions.shape[0]
    offset = 0 if reference_regions is None else 1
    slots = frames + offset
    labels = token_regions.reshape(frames, -1).astype(np.int64)
    slot_of_frame = np.arange(frames) + offset
    groups = (slot_of_frame[:, None] * REGION_COUNT + labels).reshape(-1)
    if reference_regions is not None:
        groups = np.concatenate([reference_regions.reshape(-1).astype(np.int64), groups])

    # allowed[slot_q, region_q, slot_k, region_k]
    allowed = np.zeros((slots, REGION_COUNT, slots, REGION_COUNT), bool)
    allowed[np.arange(slots), :, np.arange(slots), :] = True  # inside a frame
    cross = np.zeros(REGION_COUNT, bool)
    cross[list(cross_regions)] = True
    same_region = np.diag(cross)  # (R, R): r_q = r_k ∈ cross_regions
    background = np.zeros((REGION_COUNT, REGION_COUNT), bool)
    background[Region.BACKGROUND, Region.BACKGROUND] = True
    for t in range(frames):
        for k in past_frames[t]:
            if 0 <= k < t:
                allowed[t + offset, :, k + offset, :] |= same_region
        for k in range(max(0, t - background_reach), t):
            allowed[t + offset, :, k + offset, :] |= background
        if reference_regions is not None:
            allowed[t + offset, :, 0, :] |= np.diag(np.arange(REGION_COUNT) != Region.BACKGROUND)
    if chunk > 0:
        chunk_of = np.arange(frames) // chunk
        later = chunk_of[None, :] > chunk_of[:, None]  # (t_q, t_k)
        allowed[offset:, :, offset:, :] &= ~later[:, None, :, None]
    return InputAwareMask(torch.from_numpy(groups),
                          torch.from_numpy(allowed.reshape(slots * REGION_COUNT, -1)))


def mask_for_window(poses, config, reference_keypoints=None) -> InputAwareMask:
    """The mask of one window from its poses (Keypoints in model-frame pixels).

    `config` (a DenoiserConfig) gives the token grid, K, dilation, background reach and
    block-causal chunk size; with
    `config.reference_frame`, the reference frame's regions come from `reference_keypoints`
    (the portrait's), else from the window's first pose.
    """
    from posecast.pose.regions import token_regions
    from posecast.pose.similarity import most_similar_past_frames, pose_distance_matrix

    rows, cols = config.token_grid
    regions = token_regions(poses, rows, cols, dilate_tokens=config.region_dilation)
    past = most_similar_past_frames(pose_distance_matrix(poses), config.k_frames)
    reference = None
    if config.reference_frame:
        source = reference_keypoints if reference_keypoints is not None else poses[0]
        reference = token_regions(source, rows, cols, dilate_tokens=config.region_dilation)[0]
    return build_mask(regions, past, reference, config.chunk, config.background_reach)
