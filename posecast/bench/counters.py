"""Counting, on any device (the CPU included): what would stall a CUDA stream, and FLOPs.

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
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

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


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter (matrix products, convolutions, attention: 2 FLOPs per
    multiply-add), taught the CPU's fused attention, which it does not count by itself.
    Sparse attention is counted as it runs: the gather backend's products are the allowed
    pairs only; FlexAttention is counted as dense by torch."""
    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=False, custom_mapping={cpu_attention: _cpu_attention_flops})


def count_flops(call) -> int:
    """FLOPs of one `call()` (gradients off)."""
    with torch.no_grad(), flop_counter() as counter:
        call()
    return counter.get_total_flops()


# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), TFLOP/s, by a
# word in torch.cuda.get_device_name(); more specific names first.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def peak_tflops(device_name: str) -> float | None:
    """The card's bf16 peak, or None (the CPU, or a card not in the table)."""
    return next((peak for word, peak in PEAK_BF16_TFLOPS if word in device_name), None)


def fps_at_half_peak(flops_per_frame: float | None, device_name: str) -> float | None:
    """The frame rate at half the card's bf16 peak: a ceiling a bench row can be read against
    (a well-fed transformer reaches about half of peak end to end)."""
    peak = peak_tflops(device_name)
    if peak is None or not flops_per_frame:
        return None
    return 0.5 * peak * 1e12 / flops_per_frame
