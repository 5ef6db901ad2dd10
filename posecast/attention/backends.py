"""Input-aware attention backends; each takes q, k, v (B, heads, N, d) in token order and one
mask per batch element, and returns (B, heads, N, d) in token order.

dense  SDPA with the boolean token mask: the oracle (memory grows as N²; small sizes).
gather per group, gather the allowed keys and run SDPA: exact, memory-light, autograd
       backward; the CPU path.
flex   FlexAttention over the block layout (layout.py), compiled once; the CUDA path. A mask
       whose queries are a subset (a student's chunk against its KV cache) runs by gather.
xformers  the gather plan with xformers' memory-efficient kernel (optional extra, CUDA only).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from posecast.attention.layout import BlockLayout, build_layout
from posecast.attention.mask import InputAwareMask
from posecast.errors import PosecastError

BACKENDS = ("auto", "dense", "gather", "flex", "xformers")


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "flex" if device.type == "cuda" else "gather"
    if name == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise PosecastError("the xformers attention backend needs the optional extra: "
                                "pip install 'posecast[xformers]' (CUDA only)") from None
        if device.type != "cuda":
            raise PosecastError("the xformers attention backend runs on CUDA only; use gather")
    if name not in BACKENDS:
        raise PosecastError(f"unknown attention backend '{name}'; choose one of "
                            f"{', '.join(BACKENDS)}")
    return name


def dense_attention(q, k, v, mask: InputAwareMask) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.token_mask().to(q.device))


def _xformers_kernel(q, k, v) -> torch.Tensor:
    import xformers.ops

    # xformers takes (B, N, heads, d)
    out = xformers.ops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2))
    return out.transpose(1, 2)


def gather_attention(q, k, v, mask: InputAwareMask,
                     kernel=F.scaled_dot_product_attention) -> torch.Tensor:
    plan, inverse = mask.gather_plan
    outputs = []
    for query_index, key_index in plan:
        query_index, key_index = query_index.to(q.device), key_index.to(q.device)
        outputs.append(kernel(q.index_select(2, query_index), k.index_select(2, key_index),
                              v.index_select(2, key_index)))
    return torch.cat(outputs, dim=2).index_select(2, inverse.to(q.device))


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def block_mask_from_layout(layout: BlockLayout, device: torch.device):
    """A FlexAttention BlockMask straight from the layout's exact block table."""
    from torch.nn.attention.flex_attention import BlockMask

    def tables(selected: torch.Tensor):
        counts = selected.sum(-1).to(torch.int32)
        # allowed key blocks first (stable order), the rest ignored beyond `counts`
        indices = torch.argsort((~selected).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return counts[None, None].to(device), indices[None, None].to(device)

    key_valid = layout.key_valid.to(device)
    partial = layout.block_table & ~layout.full_blocks
    kv_num, kv_index = tables(partial)
    full_num, full_index = tables(layout.full_blocks)

    def padding_mask(batch, head, query_index, key_index):
        return key_valid[key_index]

    return BlockMask.from_kv_blocks(kv_num, kv_index, full_num, full_index,
                                    BLOCK_SIZE=layout.block_size, mask_mod=padding_mask)


def flex_attention_layout(q, k, v, layout: BlockLayout, block_mask=None) -> torch.Tensor:
    layout = layout.to(q.device)  # layouts are built on the CPU; the permutation runs beside q
    block_mask = block_mask or block_mask_from_layout(layout, q.device)
    out = _compiled_flex()(layout.permute(q), layout.permute(k), layout.permute(v),
                           block_mask=block_mask)
    return layout.unpermute(out)


def input_aware_attention(q, k, v, masks: list[InputAwareMask], backend: str = "auto",
                          block_size: int = 128) -> torch.Tensor:
    """Attention restricted by one input-aware mask per batch element."""
    backend = resolve_backend(backend, q.device)
    outputs = []
    for index, mask in enumerate(masks):
        qi, ki, vi = q[index:index + 1], k[index:index + 1], v[index:index + 1]
        if backend == "dense":
            outputs.append(dense_attention(qi, ki, vi, mask))
        elif backend == "gather":
            outputs.append(gather_attention(qi, ki, vi, mask))
        elif backend == "xformers":
            outputs.append(gather_attention(qi, ki, vi, mask, kernel=_xformers_kernel))
        elif mask.query_start:
            outputs.append(gather_attention(qi, ki, vi, mask))
        else:
            outputs.append(flex_attention_layout(qi, ki, vi, build_layout(mask, block_size)))
    return torch.cat(outputs)
