"""Input-aware attention backends. Each takes q, k, v (B, heads, N, d) in the order the
plan's masks describe and an AttentionPlan (plan.py), and returns (B, heads, Nq, d).

dense     SDPA with the boolean token mask: the oracle (memory grows as Nq·Nk; small sizes).
gather    per group, SDPA over only its allowed keys: exact, memory-light, autograd backward;
          the CPU path (one kernel call per group).
flex      FlexAttention with the plan's block tables, compiled: one call per layer, blocks
          without an allowed pair skipped; the CUDA path. Its mask_mod looks the group pair up
          in the table, so it is exact in eager mode too (eager FlexAttention ignores the
          block tables and evaluates mask_mod on every pair).
xformers  the gather as one call: queries packed group after group, each group's allowed keys
          packed likewise, and xformers' block-diagonal varlen kernel over the segments
          (optional extra, CUDA only).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from posecast.errors import PosecastError

BACKENDS = ("auto", "dense", "gather", "flex", "xformers")


class KernelCalls:
    """Counts attention kernel launches made eagerly (compiled graphs are not counted)."""

    count = 0

    @classmethod
    def add(cls, calls: int = 1) -> None:
        if not torch.compiler.is_compiling():
            cls.count += calls


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "flex" if device.type == "cuda" else "gather"
    if name not in BACKENDS:
        raise PosecastError(f"unknown attention backend '{name}'; choose one of "
                            f"{', '.join(BACKENDS)}")
    if name == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise PosecastError("the xformers attention backend needs the optional extra: "
                                "pip install 'posecast[xformers]' (CUDA only)") from None
        if device.type != "cuda":
            raise PosecastError("the xformers attention backend runs on CUDA only; use gather")
    return name


def xformers_available() -> bool:
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------------------- dense


def dense_attention(q, k, v, plan) -> torch.Tensor:
    KernelCalls.add()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=plan.dense_mask)


# ---------------------------------------------------------------------------- gather


def _group_keys(queries: np.ndarray, keys: np.ndarray, allowed: np.ndarray
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query group present: (its query indices, the key indices it may see)."""
    present = np.unique(keys)
    members = {g: np.flatnonzero(keys == g) for g in present}
    plan = []
    for group in np.unique(queries):
        visible = [members[h] for h in present if allowed[group, h]]
        if visible:
            plan.append((np.flatnonzero(queries == group), np.concatenate(visible)))
        else:  # nothing to see (cannot happen for a real token: it sees its own frame)
            raise ValueError(f"group {group} has queries but no visible keys")
    return plan


def gather_groups(queries, keys, allowed, device) -> list:
    """Per batch element: ([(query index, key index) per group], inverse order), on the
    device once, so no attention call copies indices."""
    per_batch = []
    for b in range(queries.shape[0]):
        groups = _group_keys(queries[b], keys[b], allowed[b])
        inverse = np.argsort(np.concatenate([query for query, _ in groups]), kind="stable")
        per_batch.append(([(torch.from_numpy(q).to(device), torch.from_numpy(k).to(device))
                           for q, k in groups], torch.from_numpy(inverse).to(device)))
    return per_batch


def gather_attention(q, k, v, plan) -> torch.Tensor:
    outputs = []
    for b, (groups, inverse) in enumerate(plan.gather_groups):
        qb, kb, vb = q[b:b + 1], k[b:b + 1], v[b:b + 1]
        parts = [F.scaled_dot_product_attention(qb.index_select(2, query),
                                                kb.index_select(2, key),
                                                vb.index_select(2, key))
                 for query, key in groups]
        KernelCalls.add(len(groups))
        outputs.append(torch.cat(parts, dim=2).index_select(2, inverse))
    return torch.cat(outputs)


# ---------------------------------------------------------------------------- flex


@functools.lru_cache(maxsize=1)
def compiled_flex():
    """FlexAttention compiled once for fixed shapes; each distinct shape (teacher windows,
    student chunks, batch sizes) compiles once, so the limit is raised above their count."""
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    return torch.compile(flex_attention, dynamic=False)


def flex_block_mask(plan, kv_count, kv_index, full_count, full_index):
    """The BlockMask of a plan from its block tables (B, 1, QB[, KB]); mask_mod is the exact
    group lookup over the plan's device tensors, which `update` refills in place."""
    from torch.nn.attention.flex_attention import BlockMask

    queries, keys, allowed = plan.query_groups, plan.key_groups, plan.allowed

    def group_mask(batch, head, query_index, key_index):
        return allowed[batch, queries[batch, query_index], keys[batch, key_index]]

    return BlockMask.from_kv_blocks(kv_count, kv_index, full_count, full_index,
                                    BLOCK_SIZE=plan.block_size, mask_mod=group_mask,
                                    seq_lengths=(queries.shape[1], keys.shape[1]))


def flex_attention(q, k, v, plan, compiled: bool = True) -> torch.Tensor:
    from torch.nn.attention import flex_attention as flex

    KernelCalls.add()
    if torch.compiler.is_compiling():  # inside a compiled model: compiled with it
        if q.device.type == "cpu":  # torch 2.13's CPU flex template reads a transposed
            # view's size from the buffer under it (2-D) and fails to lower: give it 4-D ones
            q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        return flex.flex_attention(q, k, v, block_mask=plan.block_mask)
    if compiled:
        return compiled_flex()(q, k, v, block_mask=plan.block_mask)
    with warnings.catch_warnings():  # eager on purpose (a check): not a fused kernel
        warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
        return flex.flex_attention(q, k, v, block_mask=plan.block_mask)


# ---------------------------------------------------------------------------- xformers


def packed_segments(queries, keys, allowed, device):
    """xformers' one-call gather: (query pack order, key pack index, inverse of the query
    order, block-diagonal bias), over the whole batch flattened (b·N + token)."""
    from xformers.ops.fmha.attn_bias import BlockDiagonalMask

    query_order, key_index, q_lengths, k_lengths = [], [], [], []
    batch, tokens, key_tokens = queries.shape[0], queries.shape[1], keys.shape[1]
    for b in range(batch):
        for query, key in _group_keys(queries[b], keys[b], allowed[b]):
            query_order.append(query + b * tokens)
            key_index.append(key + b * key_tokens)
            q_lengths.append(len(query))
            k_lengths.append(len(key))
    query_order = np.concatenate(query_order)
    inverse = np.argsort(query_order, kind="stable")
    return (torch.from_numpy(query_order).to(device), torch.from_numpy(np.concatenate(key_index))
            .to(device), torch.from_numpy(inverse).to(device),
            BlockDiagonalMask.from_seqlens(q_lengths, k_lengths, device=device))


def xformers_attention(q, k, v, plan) -> torch.Tensor:
    import xformers.ops

    query_order, key_index, inverse, bias = plan.packed
    batch, heads, tokens, dim = q.shape

    def packed(x, index):  # (B, heads, N, d) → (1, len(index), heads, d)
        return x.transpose(1, 2).flatten(0, 1).index_select(0, index)[None]

    KernelCalls.add()
    out = xformers.ops.memory_efficient_attention(packed(q, query_order), packed(k, key_index),
                                                  packed(v, key_index), attn_bias=bias)
    return out[0].index_select(0, inverse).view(batch, tokens, heads, dim).transpose(1, 2)


KERNELS = {"dense": dense_attention, "gather": gather_attention, "flex": flex_attention,
           "xformers": xformers_attention}


def input_aware_attention(q, k, v, plan) -> torch.Tensor:
    """Attention restricted by the plan's masks, one per batch element."""
    return KERNELS[plan.backend](q, k, v, plan)
