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

The table's last group is EMPTY: it sees nothing and nothing sees it. Key slots that hold no
token (a student's KV cache before it has filled) carry it, so every shape stays fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from posecast.pose.regions import Region

REGION_COUNT = len(Region)
CROSS_FRAME_REGIONS = (Region.BODY, Region.ARMS, Region.LEFT_HAND, Region.RIGHT_HAND,
                       Region.FACE)


@dataclass(frozen=True, eq=False)
class InputAwareMask:
    """query_groups (Nq,) and key_groups (Nk,) int64: each token's group; allowed (G, G) bool:
    group visibility, its last row and column (EMPTY) all False.

    Groups are numbered frame slot × REGION_COUNT + region, where frame slot 0 is the
    reference frame when there is one, so sorting tokens by group gives a frame-major,
    region-sorted order in which every group is one contiguous run (what block-sparse kernels
    need). For self-attention over a window the queries are the keys.
    """

    query_groups: torch.Tensor
    key_groups: torch.Tensor
    allowed: torch.Tensor

    def for_queries_from(self, start: int) -> InputAwareMask:
        """The same mask with queries restricted to keys [start:] (a student's chunk: the keys
        before are its KV cache of past frames)."""
        return InputAwareMask(self.key_groups[start:], self.key_groups, self.allowed)

    def token_mask(self) -> torch.Tensor:
        """(Nq, Nk) bool: True where the query (row) may attend the key (column)."""
        return self.allowed[self.query_groups[:, None], self.key_groups[None, :]]

    def density(self) -> float:
        """The fraction of (query, key) token pairs that are attended."""
        groups = self.allowed.shape[0]
        queries = torch.bincount(self.query_groups, minlength=groups).double()
        keys = torch.bincount(self.key_groups, minlength=groups).double()
        return float(queries @ self.allowed.double() @ keys) / (self.query_groups.numel()
                                                                * self.key_groups.numel())


def group_table(frames: int, past_frames: np.ndarray, reference: bool = False, chunk: int = 0,
                background_reach: int = 0, cross_regions: tuple[int, ...] = CROSS_FRAME_REGIONS,
                slots: int | None = None) -> np.ndarray:
    """allowed (G, G) bool over groups slot × REGION_COUNT + region, plus EMPTY last.

    The window's `frames` frames take the last frame slots of `slots` (default: as many as
    there are frames, after the reference slot when `reference`), so a fixed `slots` gives a
    table of one shape whatever the window's length. past_frames (frames, K): indices (within
    the window) of each frame's most similar past frames, −1 for none.
    """
    offset = 1 if reference else 0
    slots = frames + offset if slots is None else slots
    first = slots - frames  # slot of the window's frame 0
    if first < offset:
        raise ValueError(f"{frames} frames do not fit {slots} slots")
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
                allowed[first + t, :, first + k, :] |= same_region
        for k in range(max(0, t - background_reach), t):
            allowed[first + t, :, first + k, :] |= background
        if reference:
            allowed[first + t, :, 0, :] |= np.diag(np.arange(REGION_COUNT) != Region.BACKGROUND)
    if chunk > 0:
        chunk_of = np.arange(frames) // chunk
        later = chunk_of[None, :] > chunk_of[:, None]  # (t_q, t_k)
        allowed[first:, :, first:, :] &= ~later[:, None, :, None]
    table = np.zeros((slots * REGION_COUNT + 1,) * 2, bool)  # + EMPTY
    table[:-1, :-1] = allowed.reshape(slots * REGION_COUNT, -1)
    return table


def token_groups(token_regions: np.ndarray, first_slot: int) -> np.ndarray:
    """(T, rows, cols) Region labels of frames in slots first_slot… → (T·rows·cols,) groups."""
    frames = token_regions.shape[0]
    slot = (np.arange(frames) + first_slot)[:, None]
    return (slot * REGION_COUNT + token_regions.reshape(frames, -1)).reshape(-1).astype(np.int64)


def build_mask(token_regions: np.ndarray, past_frames: np.ndarray,
               reference_regions: np.ndarray | None = None, chunk: int = 0,
               background_reach: int = 0,
               cross_regions: tuple[int, ...] = CROSS_FRAME_REGIONS) -> InputAwareMask:
    """The self-attention mask of a window.

    token_regions (T, rows, cols) Region labels (pose.regions.token_regions); past_frames
    (T, K) indices of each frame's most similar past frames, −1 for none
    (pose.similarity.most_similar_past_frames); reference_regions (rows, cols) labels of a
    leading reference frame, or None. Tokens are ordered (reference frame,) then frame-major,
    row-major, as the denoiser lays them out.
    """
    frames = token_regions.shape[0]
    reference = reference_regions is not None
    groups = token_groups(token_regions, 1 if reference else 0)
    if reference:
        groups = np.concatenate([token_groups(reference_regions[None], 0), groups])
    table = group_table(frames, past_frames, reference, chunk, background_reach, cross_regions)
    groups = torch.from_numpy(groups)
    return InputAwareMask(groups, groups, torch.from_numpy(table))


def window_regions(poses, config) -> np.ndarray:
    """(T, rows, cols) token Region labels of poses (Keypoints in model-frame pixels)."""
    from posecast.pose.regions import token_regions

    rows, cols = config.token_grid
    return token_regions(poses, rows, cols, dilate_tokens=config.region_dilation)


def past_frames(poses, k_frames: int) -> np.ndarray:
    """(T, K) each frame's K most pose-similar earlier frames of the window, −1 for none."""
    from posecast.pose.similarity import most_similar_past_frames, pose_distance_matrix

    return most_similar_past_frames(pose_distance_matrix(poses), k_frames)


def mask_for_window(poses, config, reference_keypoints=None) -> InputAwareMask:
    """The mask of one window from its poses (Keypoints in model-frame pixels).

    `config` (a DenoiserConfig) gives the token grid, K, dilation, background reach and
    block-causal chunk size; with `config.reference_frame`, the reference frame's regions come
    from `reference_keypoints` (the portrait's), else from the window's first pose.
    """
    reference = None
    if config.reference_frame:
        source = reference_keypoints if reference_keypoints is not None else poses[0]
        reference = window_regions(source, config)[0]
    return build_mask(window_regions(poses, config), past_frames(poses, config.k_frames),
                      reference, config.chunk, config.background_reach)
