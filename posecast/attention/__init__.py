"""Attention backends behind one call: (q, k, v, layout) → output, all (B, heads, N, d).

Mode "dense" is joint attention over every token of the window (PyTorch SDPA); a `layout`
may carry a boolean mask (B or 1, heads or 1, N, N) where True means "may attend".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ATTENTION_MODES = ("dense",)


@dataclass(frozen=True)
class DenseLayout:
    """An optional boolean attention mask for the dense backend (None: everything visible)."""

    mask: torch.Tensor | None = None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str = "dense",
           layout: DenseLayout | None = None) -> torch.Tensor:
    if mode == "dense":
        mask = layout.mask if layout is not None else None
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    raise ValueError(f"unknown attention mode '{mode}'; choose one of {', '.join(ATTENTION_MODES)}")
