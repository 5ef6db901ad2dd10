"""The DiT's causal student: the rollout's shapes, cache bound, CUDA and compiled runs, and
gradient checkpointing (what every family must do, cached chunks equal to a block-causal
whole pass among it, is in test_family_contract.py)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from synthetic import synthetic_clip

import posecast.dit.student
from posecast.config import preset
from posecast.dit.denoiser import Denoiser
from posecast.dit.student import DitStudent, student_timesteps
from posecast.streaming.rollout import Rollout, StreamState


def _random_model(config):
    model = Denoiser(config).eval()
    with torch.no_grad():
        for index, p in enumerate(model.parameters()):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(index)) * 0.1)
    return model


def _rollout(model, reference, pose_maps, poses, steps=2, network=None, frames=None,
             state=None) -> Rollout:
    """The streaming rollout of a DiT student; `reference`: the portrait's latent."""
    student = DitStudent(model, student_timesteps(model, steps))
    if network is not None:
        student.network = network
    return Rollout(student, reference, pose_maps, poses, frames=frames, state=state)


T = 0.3  # the time the cached-equality tests run at


def _chunk_by_chunk(model, x, reference, maps, poses, check):
    """Run x (1, T, C, h, w) at time T chunk by chunk through a rollout's cache, each chunk
    committed by a pass at T too, and call check(start, end, clean estimate of the chunk)."""
    chunk = model.config.chunk
    rollout = _rollout(model, reference, lambda s, e: maps[:, s:e],
                       None if poses is None else lambda s, e: [poses[s:e]])
    with torch.no_grad():
        for start in range(0, x.shape[1], chunk):
            end = start + chunk
            check(start, end, rollout.estimate(x[:, start:end], T))
            rollout.store(x[:, start:end], T)


def _full_estimate(model, x, reference, maps, layout):
    """x − T·v over every frame in one pass under `layout`."""
    return x - T * model(x, torch.full((1,), T), reference, maps, layout=layout)


def _inputs(frames):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, frames, 3, 32, 32, generator=g),
            torch.randn(1, 3, 32, 32, generator=g), torch.rand(1, frames, 3, 32, 32, generator=g))


def test_the_cache_keeps_a_fixed_number_of_frames():
    config = preset("tiny", chunk=2, window=6, attention="input_aware")  # 6 − 2 = 4 frames
    model = _random_model(config)
    _, poses = synthetic_clip(32, 10, 25.0, np.random.default_rng(0))
    reference = torch.zeros(1, 3, 32, 32)
    rollout = _rollout(model, reference, lambda s, e: torch.zeros(1, e - s, 3, 32, 32),
                       lambda s, e: [poses[s:e]])
    g = torch.Generator().manual_seed(0)
    held, shapes = [], set()
    with torch.no_grad():
        for _ in range(5):
            rollout.chunk(torch.randn(1, 2, 3, 32, 32, generator=g),
                          lambda: torch.randn(1, 2, 3, 32, 32, generator=g))
            held.append(int(rollout.cache.valid.sum()))
            shapes.add(tuple(rollout.cache.keys[0].shape))
    assert held == [128, 256, 256, 256, 256]  # 2, then 4 frames of 64 tokens: the capacity
    assert shapes == {(1, 4, 384, 16)}  # preallocated once: 4 ring frames + a 2-frame chunk
    (planner,) = rollout.planners.values()
    assert sorted(planner.slot_frame[0].tolist()) == [6, 7, 8, 9]  # the last 4
    assert rollout.next_frame == 10 and int(rollout.position) == 10


def test_a_student_config_is_validated():
    with pytest.raises(ValueError, match="whole number of chunks"):
        preset("tiny", chunk=3, window=4)
    with pytest.raises(ValueError, match="reference_frame"):
        preset("tiny", chunk=2, reference_frame=True)
    assert preset("tiny", chunk=2).is_student and not preset("tiny").is_student


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("attention", ["dense", "input_aware"])
def test_a_cuda_rollout_equals_the_cpu_rollout(attention, monkeypatch):
    """Two chunks on CUDA (input-aware: the first chunk through the flex layout, the second
    through the gather path) give the CPU's frames. Regression: the flex layout was once left
    on the CPU while q, k, v were on the GPU. Both run in fp32: on CUDA the rollout normally
    runs under bf16 autocast, whose rounding alone moves these frames by up to 0.02 (measured
    on an H200, and the same on the CPU under bf16 autocast), a third of what a wrong mask
    does here (dense against input-aware: up to 0.06)."""
    monkeypatch.setattr(posecast.dit.student, "autocast", lambda device: contextlib.nullcontext())
    config = preset("tiny", attention=attention, chunk=2, window=4, k_frames=2)
    model = _random_model(config)
    _, poses = synthetic_clip(32, 4, 25.0, np.random.default_rng(0))
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(1, 3, 32, 32, generator=g)
    maps = torch.rand(1, 4, 3, 32, 32, generator=g)
    noise = torch.randn(2, 1, 2, 3, 32, 32, generator=g)
    frames = {}
    for device in ("cpu", "cuda"):
        rollout = _rollout(model.to(device), reference.to(device),
                           lambda s, e, d=device: maps[:, s:e].to(d), lambda s, e: [poses[s:e]])
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            frames[device] = torch.cat([rollout.chunk(noise[i].to(device),
                                                      lambda i=i, d=device: noise[1 - i].to(d),
                                                      commit=i == 0).cpu() for i in range(2)],
                                       dim=1)
    torch.testing.assert_close(frames["cuda"], frames["cpu"], atol=2e-3, rtol=2e-3)


def _streaming_run(model, poses, chunks, network=None):
    """A rollout of `chunks` chunks (2 steps each) on moving poses; returns the kernel calls
    of each chunk (denoising passes and the cache pass), counted in eager mode."""
    from posecast.attention.backends import KernelCalls

    chunk = model.config.chunk
    frames = chunks * chunk
    reference = torch.zeros(1, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    rollout = _rollout(model, reference, lambda s, e: torch.rand(1, e - s, 3, 32, 32,
                                                                 generator=g),
                       lambda s, e: [poses[s:e]], network=network, frames=frames)
    calls = []
    with torch.no_grad():
        for _ in range(chunks):
            before = KernelCalls.count
            rollout.chunk(torch.randn(1, chunk, 3, 32, 32, generator=g),
                          lambda: torch.randn(1, chunk, 3, 32, 32, generator=g))
            calls.append(KernelCalls.count - before)
    return calls


@pytest.mark.slow
def test_the_streaming_loop_is_one_kernel_call_per_layer_and_never_recompiles():
    """The chunk step compiled whole with fullgraph=True (a graph break would raise) runs 10
    chunks of moving poses with flex attention: after the first chunk and its cache pass
    nothing compiles again (torch._dynamo's counters), and eagerly every pass makes at most
    one attention call per layer. About a minute of compiling on this CPU."""
    import torch._dynamo

    config = preset("tiny", attention="input_aware", attention_backend="flex", chunk=2,
                    window=6, k_frames=2)
    model = _random_model(config)
    _, poses = synthetic_clip(32, 20, 25.0, np.random.default_rng(5))
    passes = 2 + 1  # two denoising steps and the cache pass
    calls = _streaming_run(model, poses, 4)
    assert all(0 < c <= passes * config.depth for c in calls), calls

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    counters = torch._dynamo.utils.counters
    counters.clear()
    _streaming_run(model, poses, 1, network=compiled)  # warm-up: the step and the cache pass
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2
    _streaming_run(model, poses, 10, network=compiled)
    assert counters["stats"]["unique_graphs"] == graphs, dict(counters["recompiles"])


def test_gradient_checkpointing_reads_the_cache_as_it_was():
    """A training rollout with gradients on every chunk: with gradient checkpointing each block
    recomputes its attention in the backward pass, after later chunks were committed; the
    gradients equal those without checkpointing (with the cache written in place they did
    not: the recomputation read newer frames)."""
    config = preset("tiny", attention="input_aware", chunk=2, window=4, k_frames=2)
    _, poses = synthetic_clip(32, 8, 25.0, np.random.default_rng(2))
    x, reference, maps = _inputs(8)
    grads = []
    for checkpointing in (False, True):
        model = _random_model(config).train()
        model.gradient_checkpointing = checkpointing
        rollout = _rollout(model, reference, lambda s, e: maps[:, s:e],
                           lambda s, e: [poses[s:e]])
        noise = torch.randn(4, 1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        loss = sum(rollout.chunk(x[:, 2 * i:2 * i + 2], lambda n=noise[i]: n, exit_step=1)
                   .square().mean() for i in range(4))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_compiled_cuda_graph_rollout_equals_the_eager_one():
    """render's compiled chunk step (fullgraph, CUDA graphs) gives the eager rollout's frames
    over 6 chunks of moving poses: the plan refilled in place, the ring cache and the device
    frame position all reach the captured graphs."""
    from posecast.streaming.compiling import compile_student

    config = preset("tiny", attention="input_aware", attention_backend="flex", chunk=2,
                    window=6, k_frames=2)
    model = _random_model(config).cuda()
    _, poses = synthetic_clip(32, 12, 25.0, np.random.default_rng(4))
    reference = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).cuda()
    maps = torch.rand(1, 12, 3, 32, 32, generator=torch.Generator().manual_seed(1)).cuda()
    noise = torch.randn(6, 2, 1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    from torch._dynamo.utils import counters

    compiled = compile_student(model)
    state = StreamState()  # as a renderer keeps it: static cache and plan for CUDA graphs
    counters.clear()
    frames = {}
    for name, network in (("eager", None), ("warm-up", compiled), ("compiled", compiled)):
        if network is compiled:
            state.mark_static()  # as the renderer does after its eager warm-up
        rollout = _rollout(model, reference, lambda s, e: maps[:, s:e],
                           lambda s, e: [poses[s:e]], network=network, frames=12, state=state)
        with torch.no_grad():
            frames[name] = torch.cat([rollout.chunk(noise[i, 0].cuda(),
                                                    lambda i=i: noise[i, 1].cuda()).float()
                                      for i in range(6)], dim=1).cpu()
    torch.testing.assert_close(frames["compiled"], frames["eager"], atol=3e-2, rtol=3e-2)
    skips = counters["inductor"].get("cudagraph_skips", 0)
    assert skips == 0, "a chunk-step graph ran without CUDA graphs (mutated non-static input?)"


