"""A render reads its poses as a stream: the same video as from the whole sequence, with only
recent frames held."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import synthetic_clip

from posecast.config import preset
from posecast.dit.codecs import PixelCodec
from posecast.dit.denoiser import Denoiser
from posecast.dit.student import DitStudent, student_timesteps
from posecast.pose.stream import PoseStream
from posecast.streaming.rollout import chunk_latents


def _chunks(poses, size):
    return (poses[start:start + size] for start in range(0, len(poses), size))


@pytest.mark.parametrize("attention", ["dense", "input_aware"])
def test_a_streamed_pose_sequence_renders_the_same_video(attention):
    config = preset("tiny", attention=attention, chunk=2, window=6, k_frames=2)
    torch.manual_seed(0)
    model = Denoiser(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.1)
    _, poses = synthetic_clip(32, 11, 25.0, np.random.default_rng(4))  # 11: a held last pose
    reference = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codec = PixelCodec(config.codec)
    student = DitStudent(model, student_timesteps(model, 2), codec)

    def video(sequence):
        return torch.cat([latents for _, latents in chunk_latents(
            student, codec.encode(reference), sequence, seed=5)], 1)

    stream = PoseStream(_chunks(poses, 3), len(poses), keep=config.window + 2 * config.chunk)
    torch.testing.assert_close(video(stream), video(poses), atol=0, rtol=0)


def test_a_pose_stream_holds_only_recent_frames():
    _, poses = synthetic_clip(32, 40, 25.0, np.random.default_rng(1))
    stream = PoseStream(_chunks(poses, 4), len(poses), keep=10)
    np.testing.assert_array_equal(stream[0:6].face, poses[0:6].face)
    np.testing.assert_array_equal(stream[20:30].face, poses[20:30].face)
    assert len(stream.held) <= 10 + 4  # what is kept, plus the rest of the last chunk read
    with pytest.raises(ValueError, match="already dropped"):
        stream[5:8]
    held = stream.hold_to_length(44)
    assert len(held) == 44
    np.testing.assert_array_equal(held[38:44].face, poses[[38, 39, 39, 39, 39, 39]].face)
