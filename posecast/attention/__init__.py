"""Attention behind one call: (q, k, v, layout) → output, all (B, heads, N, d).

layout None: joint attention over every key; a boolean tensor (B or 1, heads or 1, Nq, Nk),
True meaning "may attend"; or an AttentionPlan (plan.py): the input-aware masks of the batch,
prepared once for their backend (backends.py) and reused by every layer and step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout=None) -> torch.Tensor:
    if layout is None or isinstance(layout, torch.Tensor):
        from posecast.attention.backends import KernelCalls

        KernelCalls.add()
        return F.scaled_dot_product_attention(q, k, v, attn_mask=layout)
    from posecast.attention.backends import input_aware_attention

    return input_aware_attention(q, k, v, layout)
