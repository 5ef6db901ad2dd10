"""Block layout for block-sparse kernels: tokens reordered so every block is one group.

Tokens are sorted by group (frame-major, region-sorted within a frame, see mask.py) and each
group's segment is padded to a multiple of the block size, so each block holds tokens of a
single (frame, region) and the block table is exact: a block pair is either fully allowed or
fully skipped. Blocks that contain padding keys are "partial" (a per-token mask hides the
padding); all others are "full" and need no per-token test. The total length can be padded
further to a fixed capacity so compiled shapes stay static.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from posecast.attention.mask import InputAwareMask


@dataclass(frozen=True)
class BlockLayout:
    block_size: int
    gather_index: torch.Tensor  # (L,) source token of each laid-out slot; N = padding
    scatter_index: torch.Tensor  # (N,) slot of each source token (the inverse permutation)
    key_valid: torch.Tensor  # (L,) bool, False on padding
    block_table: torch.Tensor  # (L/bs, L/bs) bool, query block × key block allowed
    full_blocks: torch.Tensor  # (L/bs, L/bs) bool, allowed and free of padding keys

    @property
    def length(self) -> int:
        return self.gather_index.numel()

    def permute(self, x: torch.Tensor) -> torch.Tensor:
        """(…, N, d) in token order → (…, L, d) in layout order, zeros on padding."""
        padded = torch.cat([x, x.new_zeros(*x.shape[:-2], 1, x.shape[-1])], dim=-2)
        return padded.index_select(-2, self.gather_index)

    def unpermute(self, x: torch.Tensor) -> torch.Tensor:
        """(…, L, d) in layout order → (…, N, d) in token order."""
        return x.index_select(-2, self.scatter_index)

    def block_density(self) -> float:
        return float(self.block_table.float().mean())

    def to(self, device: torch.device | str) -> BlockLayout:
        return BlockLayout(self.block_size, *(getattr(self, name).to(device) for name in
                                              ("gather_index", "scatter_index", "key_valid",
                                               "block_table", "full_blocks")))


def build_layout(mask: InputAwareMask, block_size: int = 128,
                 capacity: int | None = None) -> BlockLayout:
    """Lay out `mask`'s tokens in region-pure blocks; `capacity` (tokens) pads the total."""
    groups = mask.token_groups.cpu()
    tokens = groups.numel()
    order = torch.argsort(groups, stable=True)
    present, counts = torch.unique_consecutive(groups[order], return_counts=True)
    slots, block_groups, position = [], [], 0
    scatter = torch.empty(tokens, dtype=torch.long)
    start = 0
    for group, count in zip(present.tolist(), counts.tolist(), strict=True):
        members = order[start:start + count]
        start += count
        blocks = math.ceil(count / block_size)
        segment = torch.full((blocks * block_size,), tokens, dtype=torch.long)
        segment[:count] = members
        scatter[members] = torch.arange(position, position + count)
        slots.append(segment)
        block_groups += [group] * blocks
        position += blocks * block_size
    gather = torch.cat(slots)
    if capacity is not None:
        if capacity < gather.numel() or capacity % block_size:
            raise ValueError(f"capacity {capacity} must be a multiple of {block_size} and at "
                             f"least the laid-out length {gather.numel()}")
        extra = (capacity - gather.numel()) // block_size
        gather = torch.cat([gather, torch.full((extra * block_size,), tokens, dtype=torch.long)])
        block_groups += [-1] * extra  # empty blocks: attend nothing, seen by nothing
    block_groups = torch.tensor(block_groups)
    real = block_groups >= 0
    safe = block_groups.clamp(min=0)
    table = mask.allowed.cpu()[safe[:, None], safe[None, :]] & real[:, None] & real[None, :]
    key_valid = gather < tokens
    padded_key_block = ~key_valid.view(-1, block_size).all(dim=1)
    return BlockLayout(block_size, gather, scatter, key_valid, table,
                       table & ~padded_key_block[None, :])
