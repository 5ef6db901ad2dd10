"""A causal student's memory of the past: keys and values of recent clean frames, per layer.

Every layer holds one preallocated buffer: a ring of `capacity` frames × n tokens followed by
the slots of one chunk (c · n tokens). While a chunk is denoised, a layer's keys are [ring ‖
the chunk's own keys]: the chunk's keys are written into its slots, so a pass copies only them
(not the whole ring, as joining two tensors would), the shape never changes, and slots that
hold no frame yet are hidden by the attention mask (their group is EMPTY, or the dense
student's key-validity mask is False there). When a chunk is done, one more pass over the clean
chunk at t = 0 writes its keys and values over the oldest frames of the ring, after its
attention has read them, so memory stays fixed however long the video is. Tensors are
(B, heads, tokens, head dim), already rotated by RoPE at their own frame positions (attention
scores depend only on relative positions).

For inference the buffers are written in place (copy_ and index_copy_ at a device index), so
compiled code and CUDA graphs see constant shapes and addresses. In training (`in_place=False`)
keys carry gradients, so a pass joins [ring ‖ keys] into a new tensor, and a commit makes new
buffers: a gradient-checkpointed block recomputes its attention during the backward pass,
after later chunks were committed, and must read the cache as it was. Which frame sits in
which slot is the host's business (student.py keeps that table for the masks).
"""

from __future__ import annotations

import copy

import torch


class KVCache:
    def __init__(self, capacity: int, tokens_per_frame: int, layers: int, batch: int,
                 heads: int, head_dim: int, device: torch.device, dtype: torch.dtype,
                 chunk_frames: int = 1, in_place: bool = True) -> None:
        self.capacity = capacity  # frames
        self.in_place = in_place
        self.tokens_per_frame = tokens_per_frame
        self.ring = capacity * tokens_per_frame  # the ring's tokens; the chunk's slots follow
        shape = (batch, heads, self.ring + chunk_frames * tokens_per_frame, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        # the token slots the next commit of `chunk_frames` frames writes (a device tensor:
        # no recompiles as it moves)
        self.write_index = torch.zeros(chunk_frames * tokens_per_frame, dtype=torch.long,
                                       device=device)
        # (1, 1, 1, capacity · n) bool: slots that hold a frame (for dense attention)
        self.valid = torch.zeros(1, 1, 1, capacity * tokens_per_frame, dtype=torch.bool,
                                 device=device)

    def point_at(self, first_slot: int) -> None:
        """Aim the next commit (a chunk of `chunk_frames` frames) at ring frame slots
        first_slot … (host bookkeeping, between passes)."""
        n = self.tokens_per_frame
        frames = self.write_index.numel() // n
        # written where they live, in place: no tensor is copied from the host
        torch.arange(first_slot * n, (first_slot + frames) * n, out=self.write_index)

    def filled(self) -> None:
        """The slots the last commit wrote now hold frames (marked after that pass, which
        attends under the chunk's layout made before it)."""
        self.valid.index_fill_(3, self.write_index, True)

    def reset(self) -> None:
        """Forget every frame (a new video); the buffers keep their memory and addresses."""
        self.valid.zero_()

    def mark_static(self) -> None:
        """Tell torch.compile that these tensors keep their addresses (CUDA graphs then read
        and write them in place instead of copying them in at every replay)."""
        import torch._dynamo

        for tensor in (*self.keys, *self.values, self.write_index, self.valid):
            torch._dynamo.mark_static_address(tensor)

    def snapshot(self) -> KVCache:
        """The cache as it is now, unaffected by later commits when they make new buffers
        (in_place=False): what a checkpointed block recomputing in the backward pass reads."""
        frozen = copy.copy(self)
        frozen.keys, frozen.values = list(self.keys), list(self.values)
        return frozen

    def read(self, layer: int, k: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's cached keys and values followed by the current ones (B, heads,
        capacity · n + N, d)."""
        if self.capacity == 0:
            return k, v
        keys, values = self.keys[layer], self.values[layer]
        if self.in_place and not k.requires_grad and k.shape[2] == keys.shape[2] - self.ring:
            keys[:, :, self.ring:].copy_(k)  # into the chunk's slots: the ring stays put
            values[:, :, self.ring:].copy_(v)
            return keys, values
        return (torch.cat([keys[:, :, :self.ring], k.to(keys.dtype)], dim=2),
                torch.cat([values[:, :, :self.ring], v.to(values.dtype)], dim=2))

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write the current chunk's keys and values (B, heads, c · n, d) into the ring at
        `write_index` (after this pass's attention has read the ring)."""
        if self.capacity == 0:
            return
        for buffers, new in ((self.keys, k), (self.values, v)):
            new = new.detach().to(buffers[layer].dtype)
            if self.in_place:
                buffers[layer].index_copy_(2, self.write_index, new)
            else:
                buffers[layer] = buffers[layer].index_copy(2, self.write_index, new)

    def key_validity(self, chunk_tokens: int) -> torch.Tensor:
        """(1, 1, 1, capacity · n + chunk_tokens) bool: the keys a dense student may see."""
        own = torch.ones(1, 1, 1, chunk_tokens, dtype=torch.bool, device=self.valid.device)
        return torch.cat([self.valid, own], dim=-1)
