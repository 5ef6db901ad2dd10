"""The causal student: KV-cached chunks equal a block-causal full-window pass, and the
rollout's shapes, determinism and cache bound."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

import posecast.student
from posecast.attention.mask import mask_for_window
from posecast.config import preset
from posecast.data.synthetic import synthetic_clip
from posecast.models.denoiser import Denoiser
from posecast.student import CausalRollout, student_timesteps


def _random_model(config):
    model = Denoiser(config).eval()
    with torch.no_grad():
        for index, p in enumerate(model.parameters()):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(index)) * 0.1)
    return model


@pytest.mark.parametrize("attention", ["dense", "input_aware"])
def test_cached_chunks_equal_a_block_causal_full_pass(attention):
    """Committing chunk 0 and then running chunk 1 against the cache gives what one pass over
    both chunks gives under the block-causal mask (same time t), so the cache (filled by a
    pass that skips the last block's attention and MLP), its RoPE positions and the
    query-subset mask are exact."""
    config = preset("tiny", attention=attention, chunk=2, window=4, k_frames=2)
    model = _random_model(config)
    _, poses = synthetic_clip(32, 4, 25.0, np.random.default_rng(0))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 3, 32, 32, generator=g)
    t = torch.zeros(1)
    reference = torch.randn(1, 3, 32, 32, generator=g)
    maps = torch.rand(1, 4, 3, 32, 32, generator=g)
    if attention == "dense":
        chunk_of = torch.arange(4).repeat_interleave(64) // 2
        full_layout = chunk_of[None, :] <= chunk_of[:, None]
        chunk_layouts = [None, None]
    else:
        full_layout = [mask_for_window(poses, config)]
        chunk_layouts = [[mask_for_window(poses[:2], config)],
                         [mask_for_window(poses, config).for_queries_from(2 * 64)]]
    rollout = CausalRollout(model, reference, lambda s, e: maps[:, s:e],
                            lambda s, e: [poses[s:e]], [1.0, 0.0])
    with torch.no_grad():
        full = model(x, t, reference, maps, layout=full_layout)
        first = model(x[:, :2], t, reference, maps[:, :2], layout=chunk_layouts[0],
                      cache=rollout.cache, first_frame=0)  # reads the empty cache
        # the pass that fills the cache returns nothing (its last block stops at its keys)
        assert model(x[:, :2], t, reference, maps[:, :2], layout=chunk_layouts[0],
                     cache=rollout.cache, commit=True, first_frame=0) is None
        second = model(x[:, 2:], t, reference, maps[:, 2:], layout=chunk_layouts[1],
                       cache=rollout.cache, first_frame=2)
        assert rollout._layout(2, 4) is None if attention == "dense" else \
            rollout._layout(2, 4)[0].query_start == 2 * 64
    torch.testing.assert_close(first, full[:, :2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, full[:, 2:], atol=1e-5, rtol=1e-5)


def test_the_cache_keeps_a_fixed_number_of_frames():
    config = preset("tiny", chunk=2, window=6)  # a cache of 6 − 2 = 4 frames
    model = _random_model(config)
    reference = torch.zeros(1, 3, 32, 32)
    rollout = CausalRollout(model, reference, lambda s, e: torch.zeros(1, e - s, 3, 32, 32),
                            None, student_timesteps(model, 2))
    g = torch.Generator().manual_seed(0)
    sizes = []
    with torch.no_grad():
        for _ in range(5):
            rollout.chunk(torch.randn(1, 2, 3, 32, 32, generator=g),
                          lambda: torch.randn(1, 2, 3, 32, 32, generator=g))
            keys, _ = rollout.cache.read(0, torch.zeros(1, 4, 0, 16), torch.zeros(1, 4, 0, 16))
            sizes.append(keys.shape[2])
    assert sizes == [128, 256, 256, 256, 256]  # 2, then 4 frames of 64 tokens: the capacity
    assert rollout.next_frame == 10


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
    monkeypatch.setattr(posecast.student, "autocast", lambda device: contextlib.nullcontext())
    config = preset("tiny", attention=attention, chunk=2, window=4, k_frames=2)
    model = _random_model(config)
    _, poses = synthetic_clip(32, 4, 25.0, np.random.default_rng(0))
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(1, 3, 32, 32, generator=g)
    maps = torch.rand(1, 4, 3, 32, 32, generator=g)
    noise = torch.randn(2, 1, 2, 3, 32, 32, generator=g)
    frames = {}
    for device in ("cpu", "cuda"):
        rollout = CausalRollout(model.to(device), reference.to(device),
                                lambda s, e, d=device: maps[:, s:e].to(d),
                                lambda s, e: [poses[s:e]], student_timesteps(model, 2))
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            frames[device] = torch.cat([rollout.chunk(noise[i].to(device),
                                                      lambda i=i, d=device: noise[1 - i].to(d),
                                                      commit=i == 0).cpu() for i in range(2)],
                                       dim=1)
    torch.testing.assert_close(frames["cuda"], frames["cpu"], atol=2e-3, rtol=2e-3)
