"""Input-aware attention: its backends checked against an exact oracle, and timed against
dense SDPA at the token counts of real windows.

Masks come from a real keypoint sequence (by default examples/astronaut_poses.npz, extracted
with `posecast keypoints` from a clip made of the example portrait), fitted to a square frame
of grid × grid tokens. Timings include sorting q, k, v into the plan's group order and the
output back (the denoiser does that once per pass, not per layer, so this overstates it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from posecast.attention.backends import flex_attention, input_aware_attention, xformers_available
from posecast.attention.mask import InputAwareMask, build_mask
from posecast.attention.plan import AttentionPlan
from posecast.bench.teacher import time_calls
from posecast.pose.framing import fit_box, fit_keypoints
from posecast.pose.keypoints import Keypoints
from posecast.pose.regions import token_regions
from posecast.pose.similarity import most_similar_past_frames, pose_distance_matrix


@dataclass(frozen=True)
class AttentionTiming:
    tokens: int
    k_frames: int
    density: float  # attended fraction of token pairs
    block_density: float  # kept fraction of blocks (flex), 1 for other backends
    dense_forward_ms: float
    sparse_forward_ms: float
    dense_backward_ms: float | None  # forward + backward
    sparse_backward_ms: float | None
    max_error: float


def window_mask(poses: Keypoints, frames: int, grid: int, k_frames: int, dilate_tokens: int = 1,
                chunk: int = 0) -> InputAwareMask:
    """The input-aware mask of the first `frames` poses (repeated if fewer) on a grid²."""
    index = [min(i, len(poses) - 1) for i in range(frames)]
    window = Keypoints.concatenate([poses[i] for i in index])
    side = grid * 8
    fitted = fit_keypoints(window, fit_box(poses.width, poses.height, side, side))
    regions = token_regions(fitted, grid, grid, dilate_tokens=dilate_tokens)
    past = most_similar_past_frames(pose_distance_matrix(fitted), k_frames)
    return build_mask(regions, past, chunk=chunk)


def oracle(q, k, v, mask: InputAwareMask) -> torch.Tensor:
    """Exact masked attention in float64 on the CPU, (1, heads, Nq, d); differentiable."""
    q, k, v = (x.cpu().double() for x in (q, k, v))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask.token_mask(), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _oracle_rows(q, k, v, mask: InputAwareMask, rows: torch.Tensor) -> torch.Tensor:
    """The oracle for query rows `rows` only (a dense N × N mask does not fit at 147k)."""
    sub = InputAwareMask(mask.query_groups[rows.cpu()], mask.key_groups, mask.allowed)
    return oracle(q[:, :, rows].detach(), k.detach(), v.detach(), sub)


def _block_density(plan: AttentionPlan) -> float:
    if plan.block_mask is None:
        return 1.0
    kv, full = plan.block_mask.kv_num_blocks, plan.block_mask.full_kv_num_blocks
    key_blocks = plan.block_mask.kv_indices.shape[-1]
    return float((kv.sum() + full.sum()) / (kv.numel() * key_blocks))


def time_attention(poses: Keypoints, frames: int, grid: int, k_frames: int, heads: int,
                   head_dim: int, device: torch.device, block_size: int = 128,
                   repeats: int = 10, backward: bool = True,
                   backend: str = "auto") -> AttentionTiming:
    """Dense SDPA against the input-aware backend (auto: flex on CUDA, gather on the CPU)."""
    mask = window_mask(poses, frames, grid, k_frames)
    plan = AttentionPlan.for_windows([mask], backend, device, block_size)
    order = plan.order[0]
    inverse = torch.argsort(order)
    tokens = mask.query_groups.numel()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backward = backward and not (device.type == "cpu" and plan.backend == "flex")
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v = (torch.randn(1, heads, tokens, head_dim, generator=g).to(device, dtype)
               .requires_grad_(backward) for _ in range(3))

    def sparse():  # token order in and out, as a layer without the model's sorting would
        out = input_aware_attention(q.index_select(2, order), k.index_select(2, order),
                                    v.index_select(2, order), plan)
        return out.index_select(2, inverse)

    def dense():
        return F.scaled_dot_product_attention(q, k, v)

    def with_backward(fn):
        return lambda: fn().sum().backward()

    dense_forward = time_calls(dense, device, repeats)
    sparse_forward = time_calls(sparse, device, repeats)
    with torch.no_grad():
        rows = torch.randperm(tokens, generator=g)[:256].to(device)
        error = (sparse()[:, :, rows].double().cpu() - _oracle_rows(q, k, v, mask, rows)).abs()
    dense_backward = sparse_backward = None
    if backward:
        dense_backward = time_calls(with_backward(dense), device, repeats, grad=True)
        sparse_backward = time_calls(with_backward(sparse), device, repeats, grad=True)
    return AttentionTiming(tokens, k_frames, mask.density(), _block_density(plan),
                           dense_forward, sparse_forward, dense_backward, sparse_backward,
                           float(error.max()))


# ---------------------------------------------------------------------------- --check


@dataclass(frozen=True)
class CheckCase:
    backend: str
    mode: str  # "compiled" | "eager" | "-" (not a compiled kernel)
    queries: str  # "all" (a whole window) | "cache" (a chunk against its KV cache)
    direction: str  # "forward" | "backward"
    mask: str  # "random" | "pose"
    max_err: float
    ok: bool

    def as_json(self) -> dict:
        return asdict(self)


def check_masks(poses: Keypoints, seed: int = 0) -> dict[tuple[str, str], InputAwareMask]:
    """(mask kind, queries) → a small mask: random regions and pose-derived, each over a whole
    window (all tokens query) and as a student chunk whose queries are its last 2 frames
    (the ones before are its KV cache). 6 frames of 8 × 8 tokens."""
    from posecast.attention.mask import REGION_COUNT

    rng = np.random.default_rng(seed)
    frames, grid, k, chunk = 6, 8, 2, 2
    regions = rng.integers(0, REGION_COUNT, (frames, grid, grid))
    past = np.full((frames, k), -1)
    for t in range(1, frames):
        chosen = rng.permutation(t)[:k]
        past[t, :len(chosen)] = chosen
    masks = {"random": build_mask(regions, past, chunk=chunk),
             "pose": window_mask(poses, frames, grid, k, chunk=chunk)}
    start = (frames - chunk) * grid * grid
    return {**{(kind, "all"): m for kind, m in masks.items()},
            **{(kind, "cache"): m.for_queries_from(start) for kind, m in masks.items()}}


def check_backends(poses: Keypoints, device: torch.device, tolerance: float | None = None,
                   on_variant: Callable[[int, int], None] | None = None) -> list[CheckCase]:
    """Every backend available on `device` against the float64 oracle, in fp32: the dense
    backend, gather, flex compiled and eager (FlexAttention has no backward on the CPU), and
    xformers when installed (CUDA). Masks in token order, so the kernels see unsorted groups
    too (the harder case for the block tables). on_variant(done, total) after each backend
    and mask."""
    tolerance = tolerance or (1e-4 if device.type == "cpu" else 2e-3)
    # small blocks make the CPU's block tables non-trivial at these sizes; CUDA's flex
    # kernels tile by 128
    block_size = 16 if device.type == "cpu" else 128
    variants = [("dense", "-"), ("gather", "-"), ("flex", "compiled"), ("flex", "eager")]
    if device.type == "cuda" and xformers_available():
        variants.append(("xformers", "-"))
    cases, masks, done = [], check_masks(poses), 0
    for (kind, queries), mask in masks.items():
        g = torch.Generator().manual_seed(len(kind) + len(queries))
        nq, nk = mask.query_groups.numel(), mask.key_groups.numel()
        q = torch.randn(1, 4, nq, 16, generator=g, requires_grad=True)
        k, v = (torch.randn(1, 4, nk, 16, generator=g, requires_grad=True) for _ in range(2))
        expected = oracle(q, k, v, mask)
        weights = torch.randn(expected.shape, generator=g, dtype=torch.float64)
        expected_grads = torch.autograd.grad((expected * weights).sum(), (q, k, v))
        expected = expected.detach()
        for backend, mode in variants:
            plan = AttentionPlan([mask], backend, device, block_size=block_size)
            backward = not (backend == "flex" and device.type == "cpu")
            leaves = [x.detach().to(device).requires_grad_(backward) for x in (q, k, v)]
            if backend == "flex":
                out = flex_attention(*leaves, plan, compiled=mode == "compiled")
            else:
                out = input_aware_attention(*leaves, plan)
            error = float((out.detach().double().cpu() - expected).abs().max())
            cases.append(CheckCase(backend, mode, queries, "forward", kind, error,
                                   error <= tolerance))
            if backward:
                grads = torch.autograd.grad((out.double() * weights.to(device)).sum(), leaves)
                error = max(float((a.double().cpu() - b).abs().max())
                            for a, b in zip(grads, expected_grads, strict=True))
                cases.append(CheckCase(backend, mode, queries, "backward", kind, error,
                                       error <= tolerance))
            done += 1
            if on_variant is not None:
                on_variant(done, len(masks) * len(variants))
    return cases
