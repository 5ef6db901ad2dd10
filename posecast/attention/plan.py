"""A batch's input-aware masks on the device, prepared once and reused by every layer and step.

Building what a kernel needs from a mask (the dense token mask, the gather groups, the
FlexAttention block tables, xformers' packed segments) costs host work and host→device copies,
so it happens once per window or chunk, never per attention call. `update` refills a plan in
place with new masks of the same shapes: a student's chunks then reuse the same device tensors,
so compiled code sees constant shapes and addresses and nothing recompiles.

Tokens arrive in the order `order` gives (the denoiser sorts them by group, so every group is
one contiguous run and the block tables are sparse); the masks describe that order.
"""

from __future__ import annotations

import numpy as np
import torch

from posecast.attention.mask import InputAwareMask
from posecast.errors import PosecastError


def sorted_by_group(mask: InputAwareMask) -> tuple[InputAwareMask, torch.Tensor]:
    """A self-attention mask with its tokens sorted by group (stable), and the order (N,)
    that sorts them: token i of the sorted sequence is token order[i] of the original."""
    order = torch.argsort(mask.query_groups, stable=True)
    groups = mask.query_groups[order]
    return InputAwareMask(groups, groups, mask.allowed), order


def _pinned(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    tensor = torch.as_tensor(array)
    return tensor.pin_memory() if device.type == "cuda" else tensor


def block_tables(query_groups: np.ndarray, key_groups: np.ndarray, allowed: np.ndarray,
                 block_size: int) -> tuple[np.ndarray, ...]:
    """FlexAttention's block tables of one mask: (partial count (QB,), partial indices
    (QB, KB), full count, full indices), each query block's key blocks in ascending order.

    A block pair is kept if any token pair in it is allowed, and "full" (no per-token test)
    if every pair is, computed from which groups each block holds."""
    groups = allowed.shape[0]

    def membership(ids: np.ndarray) -> np.ndarray:  # (blocks, G) bool: group g in block b
        blocks = -(-len(ids) // block_size)
        present = np.zeros((blocks, groups), bool)
        present[np.arange(len(ids)) // block_size, ids] = True
        return present

    q_in, k_in = membership(query_groups), membership(key_groups)
    any_allowed = (q_in.astype(np.int32) @ allowed.astype(np.int32) @ k_in.T.astype(np.int32)) > 0
    any_denied = (q_in.astype(np.int32) @ (~allowed).astype(np.int32)
                  @ k_in.T.astype(np.int32)) > 0
    full = any_allowed & ~any_denied
    if len(key_groups) % block_size:  # the last key block is short: test its tokens
        full[:, -1] = False
    if len(query_groups) % block_size:
        full[-1, :] = False
    partial = any_allowed & ~full

    def table(selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = selected.sum(1).astype(np.int32)
        indices = np.argsort(~selected, axis=1, kind="stable").astype(np.int32)  # kept first
        return counts, indices

    return (*table(partial), *table(full))


class AttentionPlan:
    """masks: one InputAwareMask per batch element, all of one shape; backend: a resolved
    backend name (backends.resolve_backend); order (B, Nq) or None: how the denoiser
    permutes its tokens before the blocks (None: token order)."""

    def __init__(self, masks: list[InputAwareMask], backend: str, device: torch.device,
                 block_size: int = 128, order: torch.Tensor | None = None) -> None:
        from posecast.attention.backends import resolve_backend

        self.backend = resolve_backend(backend, device)
        self.device, self.block_size = device, block_size
        if self.backend == "flex" and device.type == "cuda" and block_size % 128:
            raise PosecastError(f"block_size {block_size}: FlexAttention on CUDA needs blocks "
                                "of a multiple of 128 tokens (its kernel tiles); set "
                                "block_size to 128")
        queries, keys, allowed = self._stack(masks)
        self.query_groups = _pinned(queries, device).to(device, non_blocking=True)
        self.key_groups = _pinned(keys, device).to(device, non_blocking=True)
        self.allowed = _pinned(allowed, device).to(device, non_blocking=True)
        self.order = None if order is None else order.to(device, non_blocking=True)
        self.host = (queries, keys, allowed)  # what the backends' host-side plans read
        self.block_mask = None
        self._flex_tables: list[torch.Tensor] | None = None
        self._prepare()

    @classmethod
    def for_windows(cls, masks: list[InputAwareMask], backend: str, device: torch.device,
                    block_size: int = 128) -> AttentionPlan:
        """Self-attention over whole windows (teacher, critic): tokens sorted by group."""
        pairs = [sorted_by_group(mask) for mask in masks]
        return cls([mask for mask, _ in pairs], backend, device, block_size,
                   torch.stack([order for _, order in pairs]))

    @staticmethod
    def _stack(masks: list[InputAwareMask]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not masks:
            raise ValueError("an attention plan needs one mask per batch element")
        return (np.stack([m.query_groups.cpu().numpy() for m in masks]),
                np.stack([m.key_groups.cpu().numpy() for m in masks]),
                np.stack([m.allowed.cpu().numpy() for m in masks]))

    @property
    def batch(self) -> int:
        return self.query_groups.shape[0]

    def masks(self) -> list[InputAwareMask]:
        """The plan's masks (on the CPU), in the order its tokens arrive."""
        queries, keys, allowed = (torch.from_numpy(a) for a in self.host)
        return [InputAwareMask(queries[b], keys[b], allowed[b]) for b in range(self.batch)]

    def repeat(self, times: int) -> AttentionPlan:
        """The same masks for a batch `times` as large (CFG's two branches as one batch)."""
        order = None if self.order is None else self.order.repeat(times, 1)
        return AttentionPlan(self.masks() * times, self.backend, self.device, self.block_size,
                             order)

    def update(self, masks: list[InputAwareMask], order: torch.Tensor | None = None) -> None:
        """Refill with new masks of the same shapes, in place (device tensors keep their
        addresses; the copies are asynchronous on CUDA)."""
        queries, keys, allowed = self._stack(masks)
        if (queries.shape, keys.shape, allowed.shape) != (self.host[0].shape,
                                                          self.host[1].shape,
                                                          self.host[2].shape):
            raise ValueError("update needs masks of the plan's shapes")
        self.host = (queries, keys, allowed)
        for target, source in ((self.query_groups, queries), (self.key_groups, keys),
                               (self.allowed, allowed)):
            target.copy_(_pinned(source, self.device), non_blocking=True)
        if (order is None) != (self.order is None):
            raise ValueError("update needs an order exactly when the plan has one")
        if order is not None:
            self.order.copy_(order, non_blocking=True)
        self._prepare()

    def mark_static(self) -> None:
        """Tell torch.compile that the refilled tensors keep their addresses (CUDA graphs
        then read them in place instead of copying them in at every replay)."""
        import torch._dynamo

        tensors = [self.query_groups, self.key_groups, self.allowed, *(self._flex_tables or [])]
        for tensor in tensors + ([] if self.order is None else [self.order]):
            torch._dynamo.mark_static_address(tensor)

    def _prepare(self) -> None:
        """The chosen backend's per-plan data."""
        from posecast.attention import backends

        self.dense_mask = self.gather_groups = self.packed = None
        if self.backend == "dense":
            batch = torch.arange(self.batch, device=self.device)[:, None, None]
            self.dense_mask = self.allowed[batch, self.query_groups[:, :, None],
                                           self.key_groups[:, None, :]][:, None]
        elif self.backend == "gather":
            self.gather_groups = backends.gather_groups(*self.host, self.device)
        elif self.backend == "xformers":
            self.packed = backends.packed_segments(*self.host, self.device)
        else:
            self._prepare_flex()

    def _prepare_flex(self) -> None:
        from posecast.attention.backends import flex_block_mask

        tables = [block_tables(q, k, a, self.block_size) for q, k, a in zip(*self.host,
                                                                           strict=True)]
        stacked = [np.stack([t[i] for t in tables])[:, None] for i in range(4)]  # (B, 1, …)
        if self._flex_tables is None:
            self._flex_tables = [_pinned(s, self.device).to(self.device, non_blocking=True)
                                 for s in stacked]
        else:
            for target, source in zip(self._flex_tables, stacked, strict=True):
                target.copy_(_pinned(source, self.device), non_blocking=True)
        self.block_mask = flex_block_mask(self, *self._flex_tables)
