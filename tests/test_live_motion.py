"""The causal motion of `posecast live` (motion/live.py) against the whole-clip model it
follows: the same measures to the last bit for any piece sizes, the same beats, the mouth
following the same loudness; never a look at audio past its look-ahead; flat memory."""

from __future__ import annotations

import numpy as np
import pytest

from posecast.motion import ProceduralMotion, frame_count
from posecast.motion.features import SAMPLE_RATE, beat_times, frame_measures, resample_audio
from posecast.motion.live import BEAT_LOOKAHEAD, LOOKAHEAD, LiveMotion
from posecast.pose.face_mesh import mouth_opening
from posecast.pose.keypoints import Keypoints


@pytest.fixture(scope="module")
def speech(speech_path):
    from posecast.media import load_audio

    clip = load_audio(speech_path)
    return clip, resample_audio(clip)


def _stream(motion: LiveMotion, samples: np.ndarray, seed: int = 0, flush: bool = True):
    """Feed `samples` in random pieces (5 ms to 190 ms), taking poses as soon as they are
    ready; the beats as the motion decided them (at most one per piece: they are ≥ 0.35 s
    apart)."""
    rng = np.random.default_rng(seed)
    poses, beats, position = [], [], 0
    pieces = [samples] if not flush else [samples, np.zeros(SAMPLE_RATE // 2, np.float32)]
    for part in pieces:
        position = 0
        while position < len(part):
            size = int(rng.integers(80, 3000))
            motion.feed(part[position:position + size])
            position += size
            if motion.last_beat >= 0 and (not beats or beats[-1] != motion.last_beat):
                beats.append(motion.last_beat)
            if motion.ready():
                poses.append(motion.take(motion.ready()))
    return Keypoints.concatenate(poses), np.array(beats) / 100


def test_live_measures_equal_the_whole_clip_measures(speech, portrait_keypoints):
    clip, samples = speech
    motion = LiveMotion(portrait_keypoints, 25.0)
    _stream(motion, samples)
    whole = frame_measures(samples)
    for name in ("rms", "centroid", "f0", "flatness", "flux"):
        np.testing.assert_allclose(getattr(motion.history, name)[:len(whole.rms)],
                                   getattr(whole, name), rtol=1e-9, atol=1e-9, err_msg=name)


def test_live_beats_and_mouth_follow_the_whole_clip_model(speech, portrait_keypoints):
    clip, samples = speech
    frames = frame_count(clip.duration, 25.0)
    poses, beats = _stream(LiveMotion(portrait_keypoints, 25.0), samples)
    assert len(poses) >= frames
    whole = ProceduralMotion().generate(clip, portrait_keypoints, 25.0, frames, seed=0)
    measures = frame_measures(samples)
    decibels = 20 * np.log10(np.maximum(measures.rms, 1e-10))
    loudness = np.clip((decibels - (decibels.max() - 45)) / 39, 0, 1)
    offline = beat_times(measures.flux * loudness)
    # the live rule is the offline one on the range of the last 10 s, not the whole clip's
    # (a peak may pass 10 ms sooner); it skips the clip's first 100 ms
    offline = offline[offline > 0.1]
    assert len(beats) == len(offline) >= 8
    np.testing.assert_allclose(beats, offline, atol=0.0101)
    live_mouth = np.array([mouth_opening(face) for face in poses.face[:frames]])
    whole_mouth = np.array([mouth_opening(face) for face in whole.face])
    assert np.corrcoef(live_mouth, whole_mouth)[0, 1] > 0.95


def test_no_pose_depends_on_audio_past_its_lookahead(speech, portrait_keypoints):
    """Two streams that share their first 3 s and differ after: every pose ready at 3 s is
    the same in both, and those poses end LOOKAHEAD (plus a frame) before 3 s."""
    _, samples = speech
    cut = 3 * SAMPLE_RATE
    other = samples.copy()
    other[cut:] = np.random.default_rng(1).standard_normal(len(samples) - cut) * 0.3
    first, second = LiveMotion(portrait_keypoints, 25.0), LiveMotion(portrait_keypoints, 25.0)
    first.feed(samples[:cut])
    second.feed(other[:cut])
    ready = first.ready()
    assert ready == second.ready()
    # a beat is decided only once the 100 ms after it are measured (its mean's window)
    assert first.beats_decided - 1 + BEAT_LOOKAHEAD <= first.measured - 1
    assert (3.0 - LOOKAHEAD) * 25 - 2 <= ready <= (3.0 - LOOKAHEAD) * 25
    early = first.take(ready)
    first.feed(samples[cut:])
    second.feed(other[cut:])
    again = second.take(ready)
    np.testing.assert_array_equal(early.face, again.face)
    np.testing.assert_array_equal(early.body, again.body)


def test_a_student_far_behind_gets_the_same_poses(speech, portrait_keypoints):
    """Poses taken 15 s late (all at once, after more than the 10 s of history) are the poses
    taken as soon as they are ready: the values a frame still needs are kept."""
    _, samples = speech
    audio = np.concatenate([samples, samples])  # 15.8 s
    prompt, late = LiveMotion(portrait_keypoints, 25.0), LiveMotion(portrait_keypoints, 25.0)
    taken = []
    for start in range(0, len(audio), 1600):
        prompt.feed(audio[start:start + 1600])
        taken.append(prompt.take(prompt.ready()))
    late.feed(audio)
    behind = late.take(late.ready())
    np.testing.assert_allclose(behind.face, Keypoints.concatenate(taken).face, atol=1e-4)


def test_silence_idles_with_the_mouth_shut(portrait_keypoints):
    motion = LiveMotion(portrait_keypoints, 25.0)
    motion.feed(np.zeros(3 * SAMPLE_RATE, np.float32))
    poses = motion.take(motion.ready())
    assert len(poses) >= 3 * 25 - 5  # frames keep coming
    closed = mouth_opening(portrait_keypoints.face[0])
    assert max(abs(mouth_opening(face) - closed) for face in poses.face) < 1e-4
    nose = poses.body[:, 0, :2]  # the head's drift moves it; blinks do not
    assert np.ptp(nose, axis=0).max() > 0.05  # the head still drifts: idle, not frozen


def test_memory_stays_flat(portrait_keypoints, speech):
    """Two minutes of speech: the samples kept and the per-frame histories stay bounded."""
    _, samples = speech
    motion = LiveMotion(portrait_keypoints, 25.0)
    for _ in range(16):
        motion.feed(samples)
        motion.take(motion.ready())
    assert len(motion.samples) < 2 * 3000 + 640
    assert len(motion.loudness) <= motion.keep and len(motion.history.rms) <= motion.keep
    assert len(motion.strokes) <= 6 / 0.35 + 1 and len(motion.blinks) <= 2
