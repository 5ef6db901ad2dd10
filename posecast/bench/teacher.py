"""Teacher speed: ms per denoising step, decode ms per frame, and the resulting FPS.

Weights are random (speed does not depend on them); a VAE codec is built from its standard
architecture with random weights too, so no download is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TeacherBench:
    """`bench teacher`'s answer for one family: the table's title and rows (column → text, in
    order) and the --json summary."""

    title: str
    rows: list[dict[str, str]]
    summary: dict


def gigabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], object], device: torch.device, repeats: int,
               grad: bool = False) -> float:
    """Milliseconds per `call()` (gradients off unless `grad`), after one warm-up call
    (kernels, compilation, allocator), the device synchronised around the timed calls."""
    with torch.set_grad_enabled(grad):
        call()
        sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        sync(device)
    return (time.perf_counter() - started) / repeats * 1000


def peak_memory_gb(device: torch.device) -> float | None:
    """The most memory allocated on a CUDA device since its last reset (None elsewhere)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
