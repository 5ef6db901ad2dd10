"""Input-aware attention inside SVD's UNet (the paper's mask, on MimicMotion).

Each spatio-temporal transformer of the UNet has a per-frame spatial self-attention. At the
chosen levels it becomes joint over the window's frames under the input-aware mask
(attention/mask.py): a token sees its whole frame, tokens of its own body region in the K
past frames whose pose is most similar, and, as background, only its own frame. Regions are
rasterised at each level's token grid (the latent grid halved per level). The temporal
attention and the cross-attention to CLIP are left as they are. Attention runs through the
DiT path's AttentionPlan and backends, with tokens sorted by group.

Levels: 0 is the latent grid itself (72 × 128 = 9,216 tokens per frame at 576×1024, the
costly one), 1 to 3 the coarser ones; the default joins levels 1–3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from posecast.attention.backends import input_aware_attention
from posecast.attention.mask import build_mask, past_frames
from posecast.attention.plan import AttentionPlan
from posecast.pose.keypoints import Keypoints

DEFAULT_LEVELS = (1, 2, 3)


@dataclass
class InputAwareSettings:
    k_frames: int = 3
    levels: tuple[int, ...] = DEFAULT_LEVELS
    backend: str = "auto"
    block_size: int = 128
    region_dilation: int = 1


@dataclass
class _Window:
    """The current window: its frame count and a plan per (tokens per frame, batch)."""

    frames: int
    masks: dict[int, list]  # tokens per frame → InputAwareMasks over the window
    plans: dict[tuple[int, int], AttentionPlan] = field(default_factory=dict)


class JointSpatialProcessor:
    """A diffusers attention processor for a spatial self-attention: joint over the window's
    frames under the input-aware mask of its level while a window is set, else plain."""

    def __init__(self, owner: InputAwareUNet) -> None:
        self.owner = owner

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        window = self.owner.window_state
        tokens = hidden_states.shape[1]
        if window is None or encoder_hidden_states is not None or tokens not in window.masks:
            from diffusers.models.attention_processor import AttnProcessor2_0

            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states,
                                      attention_mask, temb)
        frames = window.frames
        batch_frames, _, channels = hidden_states.shape
        batch = batch_frames // frames
        x = hidden_states.reshape(batch, frames * tokens, channels)  # (B, T·n, C)
        plan = self.owner.plan(window, tokens, batch, x.device)
        order = plan.order  # (B, T·n): group-sorted position → token
        index = order[..., None].expand(-1, -1, channels)
        x = torch.gather(x, 1, index)
        heads = attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # (B, T·n, C) → (B, heads, T·n, d)
            return t.view(batch, frames * tokens, heads, -1).transpose(1, 2)

        q, k = split(attn.to_q(x)), split(attn.to_k(x))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        out = input_aware_attention(q, k, split(attn.to_v(x)), plan)
        out = out.transpose(1, 2).reshape(batch, frames * tokens, -1).to(x.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        out = torch.zeros_like(out).scatter(1, order[..., None].expand_as(out), out)
        if attn.residual_connection:
            out = out + hidden_states.reshape(batch, frames * tokens, channels)
        return (out / attn.rescale_output_factor).reshape(batch_frames, tokens, -1)


class InputAwareUNet:
    """Installs JointSpatialProcessor on every spatial self-attention of `network.unet`; inside
    `with window(poses, latent_size):` those at the chosen levels attend jointly."""

    def __init__(self, network, settings: InputAwareSettings | None = None) -> None:
        from diffusers.models.transformers.transformer_temporal import (
            TransformerSpatioTemporalModel,
        )

        self.settings = settings or InputAwareSettings()
        self.window_state: _Window | None = None
        processor = JointSpatialProcessor(self)
        for module in network.unet.modules():
            if isinstance(module, TransformerSpatioTemporalModel):
                for block in module.transformer_blocks:
                    block.attn1.set_processor(processor)

    def prepare(self, poses: Keypoints | list[Keypoints],
                latent_size: tuple[int, int]) -> _Window:
        """The masks of a window from `poses` (one Keypoints frame per window frame, in
        pixels of a frame 8× the latent grid; or a list of such, one per batch element), at
        every chosen level; its plans are built on first use and kept with it."""
        from posecast.pose.regions import token_regions

        sequences = poses if isinstance(poses, list) else [poses]
        height, width = latent_size
        masks: dict[int, list] = {}
        for sequence in sequences:
            past = past_frames(sequence, self.settings.k_frames)
            for level in self.settings.levels:
                rows, cols = -(-height // 2**level), -(-width // 2**level)
                regions = token_regions(sequence, rows, cols,
                                        dilate_tokens=self.settings.region_dilation)
                masks.setdefault(rows * cols, []).append(build_mask(regions, past))
        return _Window(len(sequences[0]), masks)

    @contextlib.contextmanager
    def using(self, window: _Window) -> Iterator[None]:
        """Attend under a prepared window's masks for the UNet calls inside."""
        previous, self.window_state = self.window_state, window
        try:
            yield
        finally:
            self.window_state = previous

    @contextlib.contextmanager
    def window(self, poses: Keypoints | list[Keypoints],
               latent_size: tuple[int, int]) -> Iterator[None]:
        """prepare() and using() in one, for a single use."""
        with self.using(self.prepare(poses, latent_size)):
            yield

    def plan(self, window: _Window, tokens: int, batch: int, device) -> AttentionPlan:
        key = (tokens, batch)
        if key not in window.plans:
            masks = window.masks[tokens]  # one per batch element, or one for all of them
            window.plans[key] = AttentionPlan.for_windows(
                masks * (batch // len(masks)), self.settings.backend, device,
                self.settings.block_size)
        return window.plans[key]
