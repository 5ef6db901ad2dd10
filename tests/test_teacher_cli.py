from __future__ import annotations

import numpy as np
import pytest

from posecast.media import iter_video_frames, probe_video
from posecast.media.ffmpeg import decode_audio


@pytest.fixture(scope="module")
def driving_poses(tmp_path_factory, talking_video):
    from posecast.pose.extract import extract_video

    path = tmp_path_factory.mktemp("poses") / "poses.npz"
    extract_video(talking_video).save(path)  # 12 frames at 25 fps
    return path


def test_teacher_renders_the_portrait_from_a_pose_file(run_cli, tmp_path, trained_tiny,
                                                       portrait_path, driving_poses):
    out = tmp_path / "teacher.mp4"
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, "-o", out, "--model",
                     trained_tiny[0], "--steps", "3", "--device", "cpu")
    assert result.code == 0, result.stderr
    info = probe_video(out)
    frames = list(iter_video_frames(out, info))
    assert (info.width, info.height, len(frames), info.has_audio) == (32, 32, 12, False)
    assert np.std([f.mean() for f in frames]) < 40  # one coherent clip, not noise bursts


def test_teacher_with_audio_lasts_as_long_as_the_audio(run_cli, tmp_path, trained_tiny,
                                                       portrait_path, driving_poses, speech_path):
    out = tmp_path / "teacher.mp4"
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, "-o", out, "--model",
                     trained_tiny[0], "--steps", "1", "--cfg", "1", "--audio", speech_path,
                     "--size", "48x32", "--device", "cpu")
    assert result.code == 0, result.stderr
    info = probe_video(out)
    audio_seconds = len(decode_audio(speech_path, 16000)) / 16000
    frames = sum(1 for _ in iter_video_frames(out, info))
    assert (info.width, info.height) == (48, 32)
    assert abs(frames / 25 - audio_seconds) <= 1 / 25


def test_teacher_bad_input(run_cli, tmp_path, trained_tiny, portrait_path, driving_poses):
    common = ["-o", tmp_path / "x.mp4", "--model", trained_tiny[0]]
    result = run_cli("teacher", portrait_path, *common)
    assert result.code == 2 and "exactly one of --poses" in result.stderr
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, "-o", tmp_path / "x.mp4",
                     "--model", tmp_path / "no-model")
    assert result.code == 2 and "no such model folder" in result.stderr
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, *common, "--size",
                     "30x30")
    assert result.code == 2 and "multiples of 4" in result.stderr
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, *common, "--device",
                     "cuda")
    assert result.code == 2 and "CUDA is not available" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_bench_teacher_prints_a_table(run_cli):
    result = run_cli("bench", "teacher", "--preset", "tiny", "--steps", "4", "--repeats", "1",
                     "--device", "cpu")
    assert result.code == 0, result.stderr
    assert "ms / step" in result.stdout and "FPS" in result.stdout


def test_teacher_bad_audio_gives_one_line(run_cli, tmp_path, trained_tiny, portrait_path,
                                          driving_poses):
    from posecast.media import AudioClip

    silent = tmp_path / "zero.wav"
    AudioClip(np.zeros(0, np.float32), 16000).save_wav(silent)
    text = tmp_path / "notes.wav"
    text.write_text("not audio\n" * 10)
    for audio, words in ((silent, "no samples"), (text, "no readable audio")):
        result = run_cli("teacher", portrait_path, "--poses", driving_poses, "-o",
                         tmp_path / "x.mp4", "--model", trained_tiny[0], "--audio", audio)
        lines = result.stderr.strip().splitlines()
        assert result.code == 1 and len(lines) == 1 and words in lines[0], result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_teacher_uses_the_bundled_teacher_by_default(run_cli, tmp_path, portrait_path,
                                                     driving_poses):
    out = tmp_path / "bundled.mp4"
    result = run_cli("teacher", portrait_path, "--poses", driving_poses, "-o", out,
                     "--steps", "1", "--device", "cpu")
    assert result.code == 0, result.stderr
    info = probe_video(out)
    assert (info.width, info.height) == (64, 64)  # the starter teacher's native size
