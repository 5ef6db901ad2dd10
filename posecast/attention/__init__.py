"""Attention backends behind one call: (q, k, v, layout) → output, all (B, heads, N, d).

Mode "dense" is joint attention over every token of the window (PyTorch SDPA); its optional
layout is a boolean mask (B or 1, heads or 1, N, N), True meaning "may attend". Mode
"input_aware" restricts attention by the input's poses (mask.py); its layout is one
InputAwareMask per batch element, run by the configured backend (backends.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ATTENTION_MODES = ("dense", "input_aware")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str = "dense",
           layout=None, backend: str = "auto", block_size: int = 128) -> torch.Tensor:
    if mode == "dense":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=layout)
    if mode == "input_aware":
        from posecast.attention.backends import input_aware_attention

        if layout is None:
            raise ValueError("input_aware attention needs one InputAwareMask per batch element")
        return input_aware_attention(q, k, v, layout, backend, block_size)
    raise ValueError(f"unknown attention mode '{mode}'; choose one of {', '.join(ATTENTION_MODES)}")
