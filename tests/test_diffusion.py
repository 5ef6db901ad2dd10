from __future__ import annotations

import pytest
import torch

from posecast.diffusion.flow import euler, guided, heun, sampling_timesteps
from posecast.diffusion.windows import window_starts, windowed_velocity
from posecast.dit.codecs import PixelCodec
from posecast.dit.pretrained import from_pretrained
from posecast.dit.sampling import prepare_conditions, sample_latents


def test_samplers_solve_a_straight_flow_exactly():
    clean = torch.randn(2, 3)
    noise = torch.randn(2, 3)
    velocity = lambda x, t: noise - clean  # noqa: E731  (the true velocity of a straight path)
    for sampler in (euler, heun):
        result = sampler(velocity, noise, sampling_timesteps(5, shift=3.0))
        torch.testing.assert_close(result, clean)


def test_timesteps_run_from_noise_to_clean():
    t = sampling_timesteps(10, shift=3.0)
    assert t[0] == 1 and t[-1] == 0 and (t[1:] < t[:-1]).all()
    assert t[5] > 0.5  # the shift spends more steps at high noise


def test_cfg_one_is_a_single_conditional_pass():
    calls = []

    def velocity(x, t, conditional):
        calls.append(conditional)
        return x * (2.0 if conditional else 5.0)

    x = torch.ones(3)
    assert torch.equal(guided(velocity, 1.0)(x, 0.5), velocity(x, 0.5, True))
    assert calls == [True, True]
    calls.clear()
    torch.testing.assert_close(guided(velocity, 3.0)(x, 0.5), x * (5.0 + 3.0 * (2.0 - 5.0)))
    assert sorted(calls) == [False, True]


@pytest.mark.parametrize("frames", [1, 3, 4, 7, 50, 101])
def test_windows_cover_exactly_the_requested_frames(frames):
    window, overlap = 4, 1
    starts = window_starts(frames, window, overlap)
    covered = torch.zeros(frames, dtype=torch.int64)
    seen_lengths = set()

    def window_velocity(x, t, start, end):
        seen_lengths.add(end - start)
        covered[start:end] += 1
        return torch.full_like(x, 7.0)

    x = torch.randn(1, frames, 2)
    v = windowed_velocity(window_velocity, frames, window, overlap)(x, 0.5)
    assert v.shape == x.shape and torch.allclose(v, torch.full_like(v, 7.0))  # fusion is an average
    assert (covered >= 1).all() and starts[-1] + min(window, frames) == frames
    assert max(seen_lengths) <= window  # memory is bounded by the window


def _conditions(frames: int, seed: int = 3):
    import numpy as np
    from synthetic import synthetic_clip

    video, keypoints = synthetic_clip(32, frames, 25.0, np.random.default_rng(seed))
    return prepare_conditions(video[0], keypoints, 32, 32)


def test_seeded_sampling_repeats_exactly(trained_tiny):
    model = from_pretrained(trained_tiny[0])
    codec = PixelCodec(model.config.codec)
    conditions = _conditions(6)
    first = sample_latents(model, codec, conditions, steps=4, cfg=2.0, seed=11)
    again = sample_latents(model, codec, conditions, steps=4, cfg=2.0, seed=11)
    other = sample_latents(model, codec, conditions, steps=4, cfg=2.0, seed=12)
    assert torch.equal(first, again) and not torch.equal(first, other)
    heun_result = sample_latents(model, codec, conditions, steps=4, cfg=2.0, seed=11,
                                 method="heun")
    assert heun_result.shape == first.shape and not torch.equal(heun_result, first)


@pytest.mark.parametrize("frames", [2, 4, 29])
def test_long_video_sampling_returns_every_frame(trained_tiny, frames):
    model = from_pretrained(trained_tiny[0])  # window 4, overlap 1
    evaluations = []
    latents = sample_latents(model, PixelCodec(model.config.codec), _conditions(frames),
                             steps=2, cfg=1.0, seed=0,
                             on_evaluation=lambda: evaluations.append(1))
    assert latents.shape == (1, frames, 3, 32, 32) and torch.isfinite(latents).all()
    assert len(evaluations) == 2 * len(window_starts(frames, 4, 1))


@pytest.mark.parametrize("frames,window,overlap,expected", [
    # windows [0, 4) and [2, 6); ramps of 1/3, 2/3 over the 2 shared frames: a linear handover
    (6, 4, 2, [10, 10, (2 / 3 * 10 + 1 / 3 * 20) / 1, (1 / 3 * 10 + 2 / 3 * 20) / 1, 20, 20]),
    # windows [0, 4), [3, 7), [6, 10); one shared frame each, weighed 1/2 by both
    (10, 4, 1, [10, 10, 10, 15, 20, 20, 25, 30, 30, 30]),
    # the last window is moved back to end at frame 8: [0, 4), [3, 7), [4, 8); the middle
    # window's ramps are 1/2 at both edges, the last's 1/2 at its first frame only
    (8, 4, 1, [10, 10, 10, (0.5 * 10 + 0.5 * 20) / 1, (1 * 20 + 0.5 * 30) / 1.5,
               (1 * 20 + 1 * 30) / 2, (0.5 * 20 + 1 * 30) / 1.5, 30]),
])
def test_window_fusion_weights_match_a_hand_computed_case(frames, window, overlap, expected):
    """Window k predicts the constant 10·(k + 1); each frame gets the mean of its windows'
    predictions weighted by the ramps written out above (not any positive weights)."""
    starts = window_starts(frames, window, overlap)

    def window_velocity(x, t, start, end):
        return torch.full_like(x, 10.0 * (starts.index(start) + 1))

    fused = windowed_velocity(window_velocity, frames, window, overlap)(
        torch.zeros(1, frames, 1, dtype=torch.float64), 0.5)
    torch.testing.assert_close(fused[0, :, 0], torch.tensor(expected, dtype=torch.float64))


def test_mimicmotion_fusion_weights_match_a_hand_computed_case():
    from posecast.mimicmotion.sampling import fusion_weights

    # (j + 1/2)·2/L up to the middle, mirrored: odd and even lengths, and one frame
    expected = {5: [0.2, 0.6, 1.0, 0.6, 0.2], 6: [1 / 6, 0.5, 5 / 6, 5 / 6, 0.5, 1 / 6], 1: [1.0]}
    for length, weights in expected.items():
        torch.testing.assert_close(fusion_weights(length),
                                   torch.tensor(weights, dtype=torch.float64))
