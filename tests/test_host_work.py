"""What a steady streaming chunk asks of the host (issue 30, item 5, in part): a CPU proxy for
the work that would stall a CUDA stream. Every aten operation of a chunk passes a dispatch
mode that counts

- tensors made from host data (`aten.lift_fresh`: `torch.tensor(x, device=…)`, a scalar
  written into a slice): on CUDA each is a copy from the host, often a blocking one;
- reads of a value back to the host (`aten._local_scalar_dense`: `.item()`, `bool(t)`,
  `int(t)`) and `nonzero`: on CUDA each waits for the stream.

With dense attention, both families' chunks now make none after the first (which makes the
fixed levels' tensors once). The input-aware paths still refill their plans from host-built
masks every chunk (issue 30, item 4); their counts are not asserted here."""

from __future__ import annotations

import collections

import numpy as np
import torch
from test_mimicmotion_student import _inputs, _student
from test_student import _random_model
from torch.utils._python_dispatch import TorchDispatchMode

from posecast.config import preset
from posecast.data.synthetic import synthetic_clip
from posecast.streaming.rollout import Rollout
from posecast.student import DitStudent, student_timesteps

HOST_WORK = ("aten.lift_fresh.default", "aten._local_scalar_dense.default",
             "aten.nonzero.default")


class HostWork(TorchDispatchMode):
    """Counts the operations of HOST_WORK run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in HOST_WORK:
            self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _per_chunk(run_chunk, chunks: int) -> list[dict]:
    counts = []
    with torch.no_grad():
        for _ in range(chunks):
            with HostWork() as mode:
                run_chunk()
            counts.append(dict(mode.counts))
    return counts


def test_a_steady_dense_chunk_of_the_dit_student_asks_nothing_of_the_host():
    config = preset("tiny", attention="dense", chunk=2, window=6)
    model = _random_model(config)
    _, poses = synthetic_clip(32, 20, 25.0, np.random.default_rng(5))
    g = torch.Generator().manual_seed(0)
    rollout = Rollout(DitStudent(model, student_timesteps(model, 2)), torch.zeros(1, 3, 32, 32),
                      lambda s, e: torch.rand(1, e - s, 3, 32, 32, generator=g),
                      lambda s, e: [poses[s:e]], frames=10)
    counts = _per_chunk(lambda: rollout.chunk(
        torch.randn(1, 2, 3, 32, 32, generator=g),
        lambda: torch.randn(1, 2, 3, 32, 32, generator=g)), 5)
    assert counts[1:] == [{}] * 4, counts  # after the first, past the ring's wrap


def test_a_steady_dense_chunk_of_the_mimicmotion_student_asks_nothing_of_the_host():
    student = _student("dense")
    _, conditions, maps, poses = _inputs(10)
    stream = Rollout(student, conditions, lambda s, e: maps[:, s:e], lambda s, e: [poses[s:e]])
    g = torch.Generator().manual_seed(0)
    counts = _per_chunk(lambda: stream.chunk(
        torch.randn(1, 2, 4, 8, 8, generator=g),
        lambda: torch.randn(1, 2, 4, 8, 8, generator=g)), 5)
    assert counts[0] == {"aten.lift_fresh.default": 3}, counts  # the 3 levels' scalings, once
    assert counts[1:] == [{}] * 4, counts
