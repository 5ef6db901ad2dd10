"""Input-aware attention against dense SDPA at the token counts of real windows.

Masks come from a real keypoint sequence (by default examples/astronaut_poses.npz, extracted
with `posecast keypoints` from a clip made of the example portrait), fitted to a square frame
of grid × grid tokens. The error is measured against exact masked attention in fp32 on a
sample of query rows (a dense N × N mask does not fit memory at 147k tokens).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from posecast.attention.backends import block_mask_from_layout, gather_attention
from posecast.attention.layout import build_layout
from posecast.attention.mask import build_mask
from posecast.pose.framing import fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import token_regions
from posecast.pose.similarity import most_similar_past_frames, pose_distance_matrix


@dataclass(frozen=True)
class AttentionTiming:
    tokens: int
    k_frames: int
    density: float  # attended fraction of token pairs
    block_density: float  # kept fraction of blocks in the layout
    dense_forward_ms: float
    sparse_forward_ms: float
    dense_backward_ms: float | None  # forward + backward
    sparse_backward_ms: float | None
    max_error: float


def window_mask(poses: Keypoints, frames: int, grid: int, k_frames: int, dilate_tokens: int = 1):
    """The input-aware mask of the first `frames` poses (repeated if fewer) on a grid²."""
    index = [min(i, len(poses) - 1) for i in range(frames)]
    window = Keypoints.concatenate([poses[i] for i in index])
    side = grid * 8
    fitted = fit_keypoints(window, fit_box(poses.width, poses.height, side, side))
    regions = token_regions(fitted, grid, grid, dilate_tokens=dilate_tokens)
    past = most_similar_past_frames(pose_distance_matrix(fitted), k_frames)
    return build_mask(regions, past)


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (compilation, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / repeats * 1000


def _reference_rows(q, k, v, mask, rows: torch.Tensor) -> torch.Tensor:
    """Exact masked attention in fp32 for the query rows `rows` → (1, heads, len(rows), d)."""
    groups = mask.token_groups.to(q.device)
    allowed = mask.allowed.to(q.device)[groups[rows]][:, groups]  # (rows, N)
    scores = q[:, :, rows].float() @ k.float().transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.float()


def time_attention(poses: Keypoints, frames: int, grid: int, k_frames: int, heads: int,
                   head_dim: int, device: torch.device, block_size: int = 128,
                   repeats: int = 10, backward: bool = True) -> AttentionTiming:
    from posecast.attention.backends import _compiled_flex

    mask = window_mask(poses, frames, grid, k_frames)
    tokens = mask.tokens
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=g).to(device, dtype)
               .requires_grad_(backward) for _ in range(3))
    layout = build_layout(mask, block_size)
    if device.type == "cuda":
        layout = layout.to(device)
        block_mask = block_mask_from_layout(layout, device)
        flex = _compiled_flex()

        def sparse():
            out = flex(layout.permute(q), layout.permute(k), layout.permute(v),
                       block_mask=block_mask)
            return layout.unpermute(out)
    else:  # the CPU path (FlexAttention has no compiled backward on the CPU)
        def sparse():
            return gather_attention(q, k, v, mask)

    def dense():
        return F.scaled_dot_product_attention(q, k, v)

    def with_backward(fn):
        return lambda: fn().sum().backward()

    with torch.no_grad():
        dense_forward = _timed(dense, device, repeats)
        sparse_forward = _timed(sparse, device, repeats)
        rows = torch.randperm(tokens, generator=g)[:256].to(device)
        error = (sparse()[:, :, rows].float() - _reference_rows(q, k, v, mask, rows)).abs().max()
    dense_backward = sparse_backward = None
    if backward:
        dense_backward = _timed(with_backward(dense), device, repeats)
        sparse_backward = _timed(with_backward(sparse), device, repeats)
    return AttentionTiming(tokens, k_frames, mask.density(), layout.block_density(),
                           dense_forward, sparse_forward, dense_backward, sparse_backward,
                           float(error))
