"""A causal student's memory of the past: keys and values of recent clean frames, per layer.

While a chunk is denoised, every attention layer reads the cache (its queries are the chunk's
tokens, its keys the cached frames' followed by the chunk's). When the chunk is done, one more
pass over the clean chunk at t = 0 with `commit=True` appends its keys and values, and the
oldest frames drop out beyond `capacity`, so memory stays fixed however long the video is.
Tensors are (B, heads, frames · tokens per frame, head dim), already rotated by RoPE at their
own frame positions (attention scores depend only on relative positions).
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity  # frames
        self.frames = 0  # frames held now
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def read(self, layer: int, k: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached keys and values of `layer` followed by the current ones."""
        if layer not in self._layers:
            return k, v
        cached_k, cached_v = self._layers[layer]
        return torch.cat([cached_k, k], dim=2), torch.cat([cached_v, v], dim=2)

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, new_frames: int) -> None:
        """Append the current chunk's keys and values (`new_frames` frames), keeping the most
        recent `capacity` frames."""
        if self.capacity == 0:
            return
        tokens_per_frame = k.shape[2] // new_frames
        all_k, all_v = self.read(layer, k.detach(), v.detach())
        keep = self.capacity * tokens_per_frame
        self._layers[layer] = (all_k[:, :, -keep:], all_v[:, :, -keep:])

    def advance(self, new_frames: int) -> None:
        """Called once per committed chunk, after every layer has stored it."""
        self.frames = min(self.capacity, self.frames + new_frames)
