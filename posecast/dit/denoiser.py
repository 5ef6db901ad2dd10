"""The pose-conditioned video denoiser (teacher, student and critic share it).

A DiT over a window of frames:
  noisy latents (B, T, C, h, w) ‖ reference latent on channels → patch embedding (B, T·n, D)
  + pose guider(pose maps (B, T, 3, H, W)) on the same token grid
  → depth × [adaLN-modulated joint spatio-temporal self-attention (3-D RoPE) + MLP]
  → adaLN + linear head → velocity (B, T, C, h, w).
n = tokens per frame. With `reference_frame`, the reference is also prepended as a frame
(time position -1) that every token may attend to; its outputs are discarded.

A causal student (config.chunk > 0) runs one chunk at a time against a KVCache of past clean
frames (kv_cache.py); `first_frame` is the chunk's position in the video.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from posecast.attention import attend
from posecast.attention.plan import AttentionPlan
from posecast.config import DenoiserConfig
from posecast.dit.kv_cache import KVCache


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """(B,) times in [0, 1] → (B, dim) sinusoids (times scaled by 1000, as in DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_3d(frames: torch.Tensor, rows: int, cols: int, head_dim: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary tables for tokens ordered (frame, row, col); `frames` holds each frame's time
    position. The head dimension is split into (time, row, col) parts of even size, and
    channel pairs (2i, 2i+1) rotate by one angle. Returns cos and signed sin, each (N, head_dim):
    cos repeated per pair, sin as (−sin, +sin) per pair (see apply_rope)."""
    part = 2 * (head_dim // 6)
    sizes = (head_dim - 2 * part, part, part)
    t = frames.to(device).float()[:, None, None].expand(-1, rows, cols)
    y = torch.arange(rows, device=device).float()[None, :, None].expand(len(frames), -1, cols)
    x = torch.arange(cols, device=device).float()[None, None, :].expand(len(frames), rows, -1)
    angles = []
    for position, size in zip((t, y, x), sizes, strict=True):
        freqs = 1.0 / (10_000 ** (torch.arange(0, size, 2, device=device).float() / size))
        angles.append(position.reshape(-1, 1) * freqs[None])
    angles = torch.cat(angles, dim=-1).repeat_interleave(2, dim=-1)  # (N, head_dim)
    sign = torch.arange(head_dim, device=device) % 2 * 2.0 - 1.0  # −1, +1, …: made on the device
    return angles.cos(), angles.sin() * sign


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of (B, heads, N, d) by the per-token angles:
    (x₁ cos − x₂ sin, x₁ sin + x₂ cos), written as x·cos + swap(x)·sin with the pair's
    channels swapped (pointwise, so compilers keep it one (B, heads, N, d) buffer)."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return (x.float() * cos + swapped.float() * sin).to(x.dtype)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, config: DenoiserConfig, index: int) -> None:
        super().__init__()
        self.heads, self.config, self.index = heads, config, index
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.k_norm = nn.RMSNorm(dim // heads, eps=1e-6)
        self.out = nn.Linear(dim, dim)

    def _rotated(self, x: torch.Tensor, rope, parts: slice) -> list[torch.Tensor]:
        """The projections `parts` of (q, k, v) for tokens x (B, N, D), each (B, heads, N, d),
        q and k normalised and rotated."""
        batch, tokens, dim = x.shape
        if parts == slice(0, 3):
            projected = self.qkv(x)
        else:  # only the weight rows of those parts
            rows = slice(parts.start * dim, parts.stop * dim)
            projected = F.linear(x, self.qkv.weight[rows], self.qkv.bias[rows])
        projected = projected.view(batch, tokens, -1, self.heads, dim // self.heads)
        out = []
        for index, name in enumerate(("q", "k", "v")[parts]):
            part = projected[:, :, index].transpose(1, 2)
            if name != "v":
                norm = self.q_norm if name == "q" else self.k_norm
                part = apply_rope(norm(part), *rope)
            out.append(part)
        return out

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                layout=None, cache: KVCache | None = None, commit: bool = False
                ) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self._rotated(x, rope, slice(0, 3))
        keys, values = (k, v) if cache is None else cache.read(self.index, k, v)
        out = attend(q, keys.to(q.dtype), values.to(q.dtype), layout)  # (B, heads, N, d)
        if commit:  # the clean chunk joins the cache, after its attention read the ring
            cache.store(self.index, k, v)
        return self.out(out.transpose(1, 2).reshape(batch, tokens, dim))

    def store(self, x: torch.Tensor, rope, cache: KVCache) -> None:
        """Only write this chunk's keys and values into the cache (the last layer of a pass
        that fills the cache needs nothing else)."""
        k, v = self._rotated(x, rope, slice(1, 3))
        cache.store(self.index, k, v)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """adaLN-Zero transformer block: every branch starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, config: DenoiserConfig,
                 index: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, config, index)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x, c, rope, layout=None, cache=None, commit=False, keys_only=False):
        """The block's output; with `keys_only` (the last block of a pass that only fills the
        cache), just the attention's keys and values of x go into the cache, and None comes
        back. (A flag rather than a method: FSDP gathers a block's weights in its forward.)"""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c)).chunk(6, -1)
        if keys_only:
            self.attn.store(modulate(self.norm1(x), shift1, scale1), rope, cache)
            return None
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1), rope, layout,
                                           cache, commit)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class PoseGuider(nn.Module):
    """Pose maps (N, 3, H, W) in [0, 1] → (N, D, rows, cols) token features; stride-2 convs
    down to the token grid, and a zero-initialised projection so training starts unposed."""

    def __init__(self, channels: tuple[int, ...], dim: int) -> None:
        super().__init__()
        layers, previous = [], 3
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.SiLU()]
            previous = width
        self.body = nn.Sequential(*layers)
        self.project = nn.Conv2d(previous, dim, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, pose_maps: torch.Tensor) -> torch.Tensor:
        return self.project(self.body(pose_maps))


class Denoiser(nn.Module):
    """Predicts the flow-matching velocity (noise − clean) of a window of noisy latents."""

    def __init__(self, config: DenoiserConfig) -> None:
        super().__init__()
        self.config = config
        dim, channels, patch = config.hidden_size, config.codec.latent_channels, config.patch_size
        self.patch_embed = nn.Conv2d(2 * channels, dim, patch, stride=patch)
        self.pose_guider = PoseGuider(config.pose_guider_channels, dim)
        self.time_embed = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, config.heads, config.mlp_ratio, config, index)
                                    for index in range(config.depth))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(dim, patch * patch * channels)
        for layer in (self.final_modulation, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.gradient_checkpointing = False

    def attention_plan(self, masks: list, device: torch.device) -> AttentionPlan:
        """The input-aware plan of whole windows (one InputAwareMask per batch element, from
        attention.mask.mask_for_window), for this model's backend; build it once per window
        and pass it as `layout` to every call on that window."""
        return AttentionPlan.for_windows(masks, self.config.attention_backend, device,
                                         self.config.block_size)

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, reference: torch.Tensor,
                pose_maps: torch.Tensor, keep_condition: torch.Tensor | None = None,
                layout=None, cache: KVCache | None = None, commit: bool = False,
                first_frame: int | torch.Tensor = 0) -> torch.Tensor | None:
        """noisy (B, T, C, h, w); timestep (B,) in [0, 1] (1 = pure noise); reference
        (B, C, h, w); pose_maps (B, T, 3, H, W) in [0, 1]; keep_condition (B,) bool, False
        drops pose and reference together (the unconditional branch of CFG); layout: for
        dense attention an optional boolean mask over (queries, keys), for input_aware an
        AttentionPlan (or a list of InputAwareMask, one per batch element, planned here).
        When the plan has an `order`, tokens are permuted into it before the blocks (so
        every mask group is contiguous) and back after them.

        Student chunks: `cache` holds past frames' keys and values; `first_frame` (an int, or
        a 0-d device tensor so that compiled code does not specialise on it) is the chunk's
        frame position. `commit` (on the clean chunk at t = 0) writes this chunk's keys and
        values into the cache and returns None: the pass exists only to fill the cache."""
        batch, frames, channels, height, width = noisy.shape
        patch, rows, cols = self.config.patch_size, height // self.config.patch_size, \
            width // self.config.patch_size
        if isinstance(layout, list):
            layout = self.attention_plan(layout, noisy.device)
        if keep_condition is not None:
            keep = keep_condition.to(noisy.dtype)
            reference = reference * keep[:, None, None, None]
            pose_maps = pose_maps * keep[:, None, None, None, None]
        reference_per_frame = reference[:, None].expand(-1, frames, -1, -1, -1)
        x = torch.cat([noisy, reference_per_frame], dim=2).flatten(0, 1)  # (B·T, 2C, h, w)
        tokens = self.patch_embed(x) + self.pose_guider(pose_maps.flatten(0, 1).to(x.dtype))
        tokens = tokens.flatten(2).transpose(1, 2).reshape(batch, frames * rows * cols, -1)
        positions = first_frame + torch.arange(frames, device=noisy.device)
        if self.config.reference_frame:
            reference_tokens = self.patch_embed(torch.cat([reference, reference], dim=1))
            reference_tokens = reference_tokens.flatten(2).transpose(1, 2)  # (B, n, D)
            tokens = torch.cat([reference_tokens, tokens], dim=1)
            positions = torch.cat([positions.new_tensor([-1]), positions])
        head_dim = self.config.hidden_size // self.config.heads
        rope = rope_3d(positions, rows, cols, head_dim, noisy.device)  # each (N, d)
        order = getattr(layout, "order", None)  # (B, N): sorted position → token
        if order is not None:  # (a plan autograd saw is never refilled: student.py)
            tokens = torch.gather(tokens, 1, order[..., None].expand(-1, -1, tokens.shape[-1]))
            rope = tuple(table[order][:, None] for table in rope)  # (B, 1, N, d)
        c = self.time_embed(timestep_embedding(timestep).to(tokens.dtype))
        if commit:  # a pass that only fills the cache: the last block stops at its keys
            if cache is None:
                raise ValueError("commit=True needs the KV cache to fill")
            for block in self.blocks[:-1]:
                tokens = block(tokens, c, rope, layout, cache, commit=True)
            self.blocks[-1](tokens, c, rope, layout, cache, commit=True, keys_only=True)
            return None
        if cache is not None and self.gradient_checkpointing and self.training:
            cache = cache.snapshot()  # blocks recompute in the backward pass, commits later
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                tokens = checkpoint(block, tokens, c, rope, layout, cache, use_reentrant=False)
            else:
                tokens = block(tokens, c, rope, layout, cache)
        if order is not None:  # back to token order
            tokens = torch.zeros_like(tokens).scatter(
                1, order[..., None].expand(-1, -1, tokens.shape[-1]), tokens)
        if self.config.reference_frame:
            tokens = tokens[:, rows * cols:]
        shift, scale = self.final_modulation(F.silu(c)).chunk(2, -1)
        out = self.head(modulate(self.final_norm(tokens), shift, scale))  # (B, T·n, p·p·C)
        out = out.view(batch, frames, rows, cols, patch, patch, channels)
        return out.permute(0, 1, 6, 2, 4, 3, 5).reshape(batch, frames, channels, height, width)
