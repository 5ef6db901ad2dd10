"""Motion from speech: the mouth follows loudness, silence keeps it shut, seeds repeat."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import syllables

from posecast.media import AudioClip
from posecast.motion import frame_count, motion_from_speech, speech_features
from posecast.pose import face_mesh as fm
from posecast.pose.face_mesh import mouth_opening

LIPS = list(fm.UPPER_LIP + fm.LOWER_LIP + fm.MOUTH_CORNERS)


def test_silence_keeps_the_mouth_closed_and_still(portrait_keypoints):
    clip = AudioClip(np.zeros(32_000, np.float32), 16_000)
    poses = motion_from_speech(clip, portrait_keypoints, 25.0, seed=0)
    assert len(poses) == 50
    closed = mouth_opening(portrait_keypoints.face[0])
    openings = np.array([mouth_opening(face) for face in poses.face])
    np.testing.assert_allclose(openings, closed, atol=1e-4)
    # the lips keep their shape (the head may drift, so compare them relative to the mouth)
    lips = poses.face[:, LIPS, :2] - poses.face[:, [fm.UPPER_LIP_INNER_CENTRE], :2]
    assert np.abs(lips - lips[:1]).max() < 0.02 * (lips[0, :, 0].max() - lips[0, :, 0].min())


def test_the_mouth_opens_with_the_syllables(portrait_keypoints):
    clip = AudioClip(syllables(3.0), 16_000)
    poses = motion_from_speech(clip, portrait_keypoints, 25.0, seed=0)
    openings = np.array([mouth_opening(face) for face in poses.face])
    loudness = speech_features(clip, 25.0, len(poses)).loudness
    assert openings.max() > 0.2 + mouth_opening(portrait_keypoints.face[0])
    assert np.corrcoef(openings, loudness)[0, 1] > 0.7


def test_the_bundled_speech_moves_the_mouth_in_time(portrait_keypoints, speech_path):
    from posecast.media import load_audio

    clip = load_audio(speech_path)
    poses = motion_from_speech(clip, portrait_keypoints, 25.0, seed=0)
    assert len(poses) == frame_count(clip.duration, 25.0)
    openings = np.array([mouth_opening(face) for face in poses.face])
    loudness = speech_features(clip, 25.0, len(poses)).loudness
    lags = range(-4, 5)
    correlation = [np.corrcoef(np.roll(openings, lag), loudness)[0, 1] for lag in lags]
    assert max(correlation) > 0.6
    assert abs(list(lags)[int(np.argmax(correlation))]) <= 2


def test_motion_repeats_for_a_seed_and_varies_across_seeds(portrait_keypoints):
    clip = AudioClip(syllables(4.0), 16_000)
    first, again = (motion_from_speech(clip, portrait_keypoints, 25.0, seed=7) for _ in "ab")
    other = motion_from_speech(clip, portrait_keypoints, 25.0, seed=8)
    np.testing.assert_array_equal(first.face, again.face)
    assert not np.array_equal(first.face, other.face)


@pytest.mark.parametrize("seconds,fps", [(0.5, 25.0), (7.0, 25.0), (2.3, 30.0)])
def test_one_pose_per_video_frame(portrait_keypoints, seconds, fps):
    clip = AudioClip(syllables(seconds), 16_000)
    poses = motion_from_speech(clip, portrait_keypoints, fps)
    assert len(poses) == frame_count(seconds, fps) and poses.fps == fps


def test_blinks_close_the_eyes_now_and_then(portrait_keypoints):
    clip = AudioClip(np.zeros(16_000 * 12, np.float32), 16_000)
    poses = motion_from_speech(clip, portrait_keypoints, 25.0, seed=1)
    upper, lower = fm.RIGHT_EYE_LIDS[3]
    gap = np.abs(poses.face[:, lower, 1] - poses.face[:, upper, 1])
    closed = gap < 0.3 * gap.max()
    blinks = np.count_nonzero(np.diff(closed.astype(int)) == 1)
    assert 2 <= blinks <= 6  # every 2–6 s over 12 s


def test_the_learned_model_trains_loads_and_moves_the_portrait(run_cli, tmp_path,
                                                               cospeech_dataset,
                                                               portrait_path):
    import json

    out = tmp_path / "motion"
    result = run_cli("train-motion", cospeech_dataset / "train", "--out", out, "--max-steps",
                     "60", "--batch-size", "4", "--window-seconds", "2", "--device", "cpu")
    assert result.code == 0, result.stderr
    log = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text()
           .splitlines()]
    assert len(log) == 60 and np.mean(log[-10:]) < 0.7 * np.mean(log[:10])
    clip_path = tmp_path / "speech.wav"
    AudioClip(syllables(1.2), 16_000).save_wav(clip_path)
    poses = tmp_path / "poses.npz"
    result = run_cli("motion", clip_path, portrait_path, "-o", poses, "--motion", out)
    assert result.code == 0, result.stderr
    from posecast.pose.keypoints import Keypoints

    moved = Keypoints.load(poses)
    assert len(moved) == 30
    assert np.abs(moved.face[:, :, :2] - moved.face[:1, :, :2]).max() > 0  # it moves
    result = run_cli("motion", clip_path, portrait_path, "-o", tmp_path / "p2.npz", "--motion",
                     tmp_path)
    assert result.code == 1 and "not a posecast motion model" in result.stderr
