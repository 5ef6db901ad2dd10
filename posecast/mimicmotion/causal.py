"""MimicMotion made causal in time: the network of the paper's few-step student.

SVD's UNet mixes frames in three places; the student keeps each but lets a frame see only its
own chunk and earlier frames:
  temporal convolutions  (3, 1, 1) kernels of the spatio-temporal ResNet blocks: padded on the
                         past side only (the teacher's taps over t−1, t, t+1 now read t−2, t−1,
                         t), the last two input frames of each kept for the next chunk; their
                         GroupNorms normalise each frame on its own (the teacher's pool every
                         frame of the window, which would let later frames in)
  temporal attention     over frames at every spatial position: block-causal, past frames'
                         keys and values from a ring of `context_frames` slots; the frame
                         position embedding is taken at the frame's place in the video, so
                         cached keys keep the positions they were computed at
  joint spatial attention  (input-aware students, at the chosen UNet levels) over the chunk's
                         tokens and the cached tokens of past frames, under the input-aware
                         mask (attention/mask.py) with EMPTY groups for unfilled slots
Everything else in the UNet works frame by frame already.

A pass runs in one of two ways, set on the `CausalContext` the installed modules share:
  whole   no cache: all frames at once under block-causal masks (training targets, and the
          oracle the cached path must equal)
  cached  one chunk against the cache; with `commit` the chunk's keys, values and last conv
          inputs are written after they are read (the chunk's pass at the commit noise level)
The state-dict keys stay MimicMotion's own, so a student folder loads like a teacher's.

With `recompute_blocks` (gradient checkpointing) the UNet's down, mid and up blocks keep only
their inputs in a forward pass with gradients and run again in the backward pass. By then
later chunks have moved the context on, so each block's recomputation runs under the context
it first ran with (`ContextState`: the cache as it was, its plans and frame position) and
never writes the cache.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from posecast.attention.backends import input_aware_attention
from posecast.attention.plan import AttentionPlan


@dataclass
class StudentCache:
    """Every causal layer's memory of the past, preallocated on first use and reused for the
    whole video (and the next: `reset`), so shapes and addresses never change.

    Ring buffers hold `capacity` frame slots; the chunk's frames go to `slots` (a device
    tensor set by `point_at`); `valid` marks slots that hold a frame. Conv contexts hold
    each temporal convolution's last two input frames (zeros before the video starts, which
    is what the whole pass pads with). With `in_place` False (training) writes make new
    tensors, so a graph that read the old ones stays valid."""

    capacity: int
    chunk: int
    device: torch.device
    in_place: bool = True
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.valid = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        self.slots = torch.arange(self.chunk, device=self.device)  # frame slots written next

    def buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        if name not in self.buffers:
            self.buffers[name] = torch.zeros(shape, dtype=dtype, device=self.device)
        return self.buffers[name]

    def write(self, name: str, dim: int, index: torch.Tensor, value: torch.Tensor) -> None:
        value = value.detach().to(self.buffers[name].dtype)
        if self.in_place:
            self.buffers[name].index_copy_(dim, index, value)
        else:
            self.buffers[name] = self.buffers[name].index_copy(dim, index, value)

    def replace(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().to(self.buffers[name].dtype)
        if self.in_place:
            self.buffers[name].copy_(value)
        else:
            self.buffers[name] = value.clone()

    def point_at(self, first_slot: int) -> None:
        """Aim the next commit at slots first_slot … first_slot + chunk − 1 (host bookkeeping
        between passes; `filled` marks them held once the commit pass has run, since that pass
        must not see its own slots as past frames)."""
        # written where they live, in place: no tensor is copied from the host
        torch.arange(first_slot, first_slot + self.chunk, out=self.slots)

    def filled(self) -> None:
        """The slots the last commit wrote now hold frames."""
        self.valid.index_fill_(0, self.slots, True)

    def reset(self) -> None:
        """A new video: nothing held, conv contexts back to zeros (memory kept)."""
        self.valid.zero_()
        for name, tensor in self.buffers.items():
            if name.startswith("conv"):
                tensor.zero_()

    def snapshot(self) -> StudentCache:
        """The cache as it is now, unaffected by later commits: what a block recomputing in the
        backward pass reads. A training cache (in_place False) replaces its buffers on a write,
        so they are shared; an in-place cache's are copied."""
        frozen = copy.copy(self)
        frozen.buffers = {name: tensor.clone() if self.in_place else tensor
                          for name, tensor in self.buffers.items()}
        frozen.valid, frozen.slots = self.valid.clone(), self.slots.clone()
        return frozen

    def mark_static(self) -> None:
        import torch._dynamo

        for tensor in (self.valid, self.slots, *self.buffers.values()):
            torch._dynamo.mark_static_address(tensor)


class CausalContext:
    """What one pass of the causal network needs besides its inputs, shared by the modules
    `make_causal` installs: the cache (None: a whole pass), whether this pass commits, the
    video position of its first frame (a device tensor: no recompiles as it moves), and the
    input-aware plans of its joint attentions, by tokens per frame."""

    def __init__(self, chunk: int, context_frames: int) -> None:
        self.chunk, self.context_frames = chunk, context_frames
        self.cache: StudentCache | None = None
        self.commit = False
        self.first_frame = torch.zeros((), dtype=torch.long)
        self.plans: dict[int, AttentionPlan] = {}

    def whole_pass_mask(self, frames: int, device: torch.device) -> torch.Tensor:
        """(frames, frames) bool: query frame i sees key frame j iff j's chunk is not later
        than i's and j is among the `context_frames` frames before i's chunk (what the ring
        holds) or in i's chunk."""
        chunk_of = torch.arange(frames, device=device) // self.chunk
        behind = chunk_of[:, None] - chunk_of[None, :]  # (i, j) chunks between them
        return (behind >= 0) & (behind <= self.context_frames // self.chunk)


@dataclass(frozen=True)
class ContextState:
    """What a pass read from its CausalContext, kept for recomputing it."""

    cache: StudentCache | None
    first_frame: torch.Tensor
    plans: dict[int, AttentionPlan]

    @classmethod
    def of(cls, context: CausalContext) -> ContextState:
        cache = None if context.cache is None else context.cache.snapshot()
        return cls(cache, context.first_frame.clone(), dict(context.plans))

    @contextlib.contextmanager
    def installed(self, context: CausalContext) -> Iterator[None]:
        """The context as this state saw it, without commits (the pass already wrote the
        cache); the context's own state is back afterwards."""
        saved = (context.cache, context.commit, context.first_frame, context.plans)
        context.cache, context.commit = self.cache, False
        context.first_frame, context.plans = self.first_frame, self.plans
        try:
            yield
        finally:
            context.cache, context.commit, context.first_frame, context.plans = saved


class _RecomputedForward:
    """A block's forward under gradient checkpointing (non-reentrant), recomputed in the
    context it first ran with; without gradients it is the block's own forward."""

    def __init__(self, forward: Callable, context: CausalContext) -> None:
        self.forward, self.context = forward, context

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.forward(*args, **kwargs)
        state = ContextState.of(self.context)
        return checkpoint(self.forward, *args, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(),
                                              state.installed(self.context)), **kwargs)


def recompute_blocks(network, context: CausalContext) -> None:
    """Gradient checkpointing of a causal network's UNet blocks (see the module's docstring).
    The blocks' forwards are replaced on the instances, so the module tree and state-dict keys
    stay as they are."""
    for block in network.blocks:
        block.forward = _RecomputedForward(block.forward, context)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, heads·d) → (B, heads, N, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _output(attn, out: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) → the attention module's output (B, N, C), as diffusers finishes."""
    out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).flatten(2).to(residual.dtype)))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class FrameGroupNorm(nn.Module):
    """The temporal block's GroupNorm applied to each frame on its own (same parameters, so
    the state-dict keys stay `norm1.weight`, …)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        frames = x.transpose(1, 2).flatten(0, 1)  # (B·T, C, H, W)
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return out.unflatten(0, (x.shape[0], x.shape[2])).transpose(1, 2)


class CausalTemporalConv(nn.Module):
    """A (3, 1, 1) temporal convolution over frames t−2, t−1, t. The two frames before the
    chunk come from the cache (zeros at the start, as in a whole pass)."""

    def __init__(self, conv: nn.Conv3d, context: CausalContext, name: str) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.context, self.name = context, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        cache = self.context.cache
        shape = (*x.shape[:2], 2, *x.shape[3:])
        past = x.new_zeros(shape) if cache is None else cache.buffer(self.name, shape, x.dtype)
        padded = torch.cat([past.to(x.dtype), x], dim=2)
        if cache is not None and self.context.commit:
            cache.replace(self.name, padded[:, :, -2:])
        return F.conv3d(padded, self.weight, self.bias)


class OffsetPositions(nn.Module):
    """The frame-position embedding's input shifted to the video position of the pass's first
    frame (diffusers numbers a pass's frames from 0)."""

    def __init__(self, time_proj: nn.Module, context: CausalContext) -> None:
        super().__init__()
        self.time_proj, self.context = time_proj, context

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.time_proj(positions + self.context.first_frame.to(positions.device))


class CausalTemporalProcessor:
    """Attention over frames at each spatial position: hidden states (B·S, T, C)."""

    def __init__(self, context: CausalContext, name: str) -> None:
        self.context, self.name = context, name

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        context, cache = self.context, self.context.cache
        frames = hidden_states.shape[1]
        q, k, v = (_heads(layer(hidden_states), attn.heads)
                   for layer in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if cache is None:
            mask = context.whole_pass_mask(frames, q.device)
        else:
            shape = (k.shape[0], k.shape[1], context.context_frames, k.shape[3])
            past_k = cache.buffer(self.name + ".k", shape, k.dtype)
            past_v = cache.buffer(self.name + ".v", shape, v.dtype)
            own_k, own_v = k, v
            k, v = torch.cat([past_k.to(k.dtype), k], 2), torch.cat([past_v.to(v.dtype), v], 2)
            if context.commit:  # the chunk joins the ring after the cat has read it
                cache.write(self.name + ".k", 2, cache.slots, own_k)
                cache.write(self.name + ".v", 2, cache.slots, own_v)
            own = torch.ones(frames, dtype=torch.bool, device=q.device)
            mask = torch.cat([cache.valid, own])[None].expand(frames, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return _output(attn, out, hidden_states)


class CausalJointProcessor:
    """An input-aware joint spatial self-attention over the pass's frames (and the cached
    tokens of past frames); hidden states (B·T, n, C). Levels without a plan, and the
    cross-attention, attend per frame as SVD does."""

    def __init__(self, context: CausalContext, name: str) -> None:
        self.context, self.name = context, name

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, *args, **kwargs) -> torch.Tensor:
        context, cache = self.context, self.context.cache
        tokens = hidden_states.shape[1]
        plan = context.plans.get(tokens)
        if plan is None or encoder_hidden_states is not None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states,
                                      attention_mask, temb)
        batch = plan.batch
        x = hidden_states.reshape(batch, -1, hidden_states.shape[-1])  # (B, T·n, C)
        order = plan.order[..., None].expand(-1, -1, x.shape[-1])  # sorted position → token
        x = torch.gather(x, 1, order)
        q, k, v = (_heads(layer(x), attn.heads) for layer in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if cache is not None:
            shape = (batch, k.shape[1], context.context_frames * tokens, k.shape[3])
            past_k = cache.buffer(self.name + ".k", shape, k.dtype)
            past_v = cache.buffer(self.name + ".v", shape, v.dtype)
            own_k, own_v = k, v
            k, v = torch.cat([past_k.to(k.dtype), k], 2), torch.cat([past_v.to(v.dtype), v], 2)
            if context.commit:  # after the cat read the ring; sorted order, slot by slot
                index = (cache.slots[:, None] * tokens
                         + torch.arange(tokens, device=q.device)).flatten()
                cache.write(self.name + ".k", 2, index, own_k)
                cache.write(self.name + ".v", 2, index, own_v)
        out = _output(attn, input_aware_attention(q, k, v, plan), x)
        out = torch.zeros_like(out).scatter(1, plan.order[..., None].expand_as(out), out)
        return out.reshape(hidden_states.shape[0], tokens, -1)


def make_causal(network, context: CausalContext, joint: bool) -> None:
    """Turn a MimicMotion network (posecast.mimicmotion.model.MimicMotion) into the causal
    student's, in place; `joint`: its spatial self-attentions become input-aware joint ones
    (at the levels the plans name), else they stay per frame."""
    from diffusers.models.resnet import TemporalResnetBlock
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

    for name, module in list(network.unet.named_modules()):
        if isinstance(module, TemporalResnetBlock):
            module.norm1, module.norm2 = FrameGroupNorm(module.norm1), FrameGroupNorm(module.norm2)
            module.conv1 = CausalTemporalConv(module.conv1, context, f"conv:{name}.conv1")
            module.conv2 = CausalTemporalConv(module.conv2, context, f"conv:{name}.conv2")
        elif isinstance(module, TransformerSpatioTemporalModel):
            module.time_proj = OffsetPositions(module.time_proj, context)
            for i, block in enumerate(module.temporal_transformer_blocks):
                block.attn1.set_processor(CausalTemporalProcessor(context, f"time:{name}.{i}"))
            if joint:
                for i, block in enumerate(module.transformer_blocks):
                    block.attn1.set_processor(CausalJointProcessor(context, f"joint:{name}.{i}"))
