"""Counting what would stall a CUDA stream, on any device (the CPU included).

A streaming chunk should queue its kernels and return: every read back to the host makes the
host wait for the device, and every tensor made from host data is a host→device copy the
stream orders behind it. A dispatch mode sees each operation as torch runs it, so the same
count works on the CPU (as a proxy: what these operations would cost on CUDA) and on a GPU:
  syncs   `.item()`, `bool(t)`, `float(t)` (aten._local_scalar_dense), `nonzero` (its size
          is data-dependent), and copies from a CUDA tensor to the CPU
  copies  tensors made from host data (`torch.tensor(...)`: aten.lift_fresh) and copies from
          the CPU to a CUDA tensor
A CPU-only run cannot see `.cpu()`/`.to(device)` copies (they are no-ops there), so its counts
are a floor: the decoded frames' download, one per chunk on CUDA, shows only on a GPU.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_READS_BACK = {"aten._local_scalar_dense.default", "aten.nonzero.default"}
_FROM_HOST = {"aten.lift_fresh.default"}
_COPIES = {"aten._to_copy.default", "aten.copy_.default"}


def _device(value) -> str | None:
    return value.device.type if isinstance(value, torch.Tensor) else None


class HostWork(TorchDispatchMode):
    """`with HostWork() as work: ...` counts `work.syncs` and `work.copies` (see above)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs = self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        out = func(*args, **kwargs)
        if name in _READS_BACK:
            self.syncs += 1
        elif name in _FROM_HOST:
            self.copies += 1
        elif name in _COPIES:  # _to_copy(source, device=…) → out; copy_(target, source)
            source = args[0] if name == "aten._to_copy.default" else args[1]
            target = out if name == "aten._to_copy.default" else args[0]
            moves = (_device(source), _device(target))
            self.syncs += moves == ("cuda", "cpu")
            self.copies += moves == ("cpu", "cuda")
        return out
