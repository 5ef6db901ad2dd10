from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from posecast.errors import InputError, MediaError, UsageError
from posecast.media import (
    AudioClip,
    iter_video_frames,
    load_audio,
    load_image,
    probe_video,
    write_mp4,
)
from posecast.media.ffmpeg import decode_audio


def _tone(seconds: float, rate: int = 16000) -> AudioClip:
    t = np.arange(int(round(seconds * rate))) / rate
    return AudioClip((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def _read_back(path, rate=16000):
    info = probe_video(path)
    frames = sum(1 for _ in iter_video_frames(path, info))
    audio_seconds = len(decode_audio(path, rate)) / rate if info.has_audio else 0.0
    return info, frames, audio_seconds


@pytest.mark.parametrize("seconds", [0.3, 7.0, 61.0])
def test_mp4_lasts_as_long_as_the_audio(tmp_path, seconds):
    fps = 25
    audio = _tone(seconds)
    path = tmp_path / "out.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (5, 24, 32, 3), dtype=np.uint8)
    with write_mp4(path, fps=fps, audio=audio) as mp4:
        for t in range(int(seconds * fps)):  # stream: frames are made as they are written
            mp4.write(frames[t % 5])
    info, frame_count, audio_seconds = _read_back(path)
    assert info.has_audio
    assert (info.width, info.height) == (32, 24)
    assert abs(frame_count / fps - seconds) <= 1 / fps
    assert abs(audio_seconds - seconds) <= 1 / fps
    assert abs(info.duration - seconds) <= 1 / fps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_short_video_is_padded_and_long_video_trimmed_to_the_audio(tmp_path):
    audio = _tone(1.0)
    for frames_written in (3, 60):
        path = tmp_path / f"{frames_written}.mp4"
        with write_mp4(path, fps=25, audio=audio) as mp4:
            for _ in range(frames_written):
                mp4.write(np.zeros((16, 16, 3), np.uint8))
        assert _read_back(path)[1] == 25


def test_odd_sizes_are_padded_to_even(tmp_path):
    path = tmp_path / "odd.mp4"
    with write_mp4(path, fps=10) as mp4:
        for _ in range(4):
            mp4.write(np.full((33, 47, 3), 128, np.uint8))
    info, frame_count, _ = _read_back(path)
    assert (info.width, info.height, frame_count, info.has_audio) == (48, 34, 4, False)


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError), write_mp4(path, fps=25, audio=_tone(1.0)) as mp4:
        mp4.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("generation failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MediaError, match="no frames"), write_mp4(path, fps=25):
        pass
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_override_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("POSECAST_FFMPEG", str(tmp_path / "no-ffmpeg-here"))
    with pytest.raises(MediaError, match="POSECAST_FFMPEG"), \
            write_mp4(tmp_path / "x.mp4", fps=25) as mp4:
        mp4.write(np.zeros((8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_load_audio_resamples_to_mono(speech_path):
    clip = load_audio(speech_path, 16000)
    assert clip.sample_rate == 16000 and clip.samples.ndim == 1
    assert clip.samples.dtype == np.float32
    assert 7.5 < clip.duration < 8.5  # the example sentence lasts about 7.9 s
    assert np.abs(clip.samples).max() > 0.1


def test_load_audio_averages_channels_and_keeps_a_tone(tmp_path):
    """A stereo 44.1 kHz file: the channels are averaged and a 440 Hz tone survives the
    resampling to 16 kHz with its amplitude and frequency."""
    import soundfile

    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    soundfile.write(tmp_path / "stereo.wav", np.stack([tone, np.zeros_like(tone)], 1), 44100)
    clip = load_audio(tmp_path / "stereo.wav", 16000)
    assert clip.sample_rate == 16000 and len(clip.samples) == 16000
    middle = clip.samples[2000:14000]  # away from the resampler's edges
    assert abs(np.abs(middle).max() - 0.25) < 0.01  # (0.5 + 0) / 2
    spectrum = np.abs(np.fft.rfft(middle))
    assert abs(np.argmax(spectrum) * 16000 / len(middle) - 440) < 2


def test_load_audio_from_a_video_track(talking_video):
    clip = load_audio(talking_video, 16000)
    assert abs(clip.duration - 0.48) < 0.05
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.samples) - 440) < 10


def test_bad_audio_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(empty)
    silent = tmp_path / "zero.wav"
    AudioClip(np.zeros(0, np.float32), 16000).save_wav(silent)
    with pytest.raises(InputError, match="no samples"):
        load_audio(silent)
    text = tmp_path / "text.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError, match="text.wav"):
        load_audio(text)
    with pytest.raises(UsageError, match="no such audio"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(UsageError, match="unsupported audio"):
        load_audio(tmp_path / "speech.txt")


def test_image_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.shape == (40, 20, 3)
    assert loaded[:15].mean() > 200 and loaded[25:].mean() < 50  # white half now on top


def test_image_alpha_is_flattened_on_white_and_webp_reads(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    Image.fromarray(rgba).save(tmp_path / "cut.webp", lossless=True)
    for name in ("cut.png", "cut.webp"):
        loaded = load_image(tmp_path / name)
        assert loaded.shape == (10, 10, 3)
        assert tuple(loaded[2, 2]) == (255, 0, 0)
        assert tuple(loaded[8, 8]) == (255, 255, 255)


def test_bad_images(tmp_path, portrait_path):
    cases = {}
    cases["missing"] = (tmp_path / "missing.png", UsageError, "no such")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    cases["folder"] = (folder, UsageError, "is a folder")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases["empty"] = (empty, InputError, "empty")
    text = tmp_path / "text.png"
    text.write_text("hello")
    cases["text"] = (text, InputError, "not a readable image")
    truncated = tmp_path / "cut.jpg"
    Image.open(portrait_path).convert("RGB").save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:3000])
    cases["truncated"] = (truncated, InputError, "damaged or truncated")
    cases["extension"] = (tmp_path / "portrait.gif", UsageError, "unsupported image type")
    for name, (path, error, message) in cases.items():
        with pytest.raises(error, match=message) as caught:
            load_image(path)
        assert str(path) in str(caught.value), name
        assert "\n" not in str(caught.value), name


def test_video_without_frames_is_refused(tmp_path):
    from posecast.pose.extract import extract_video

    path = tmp_path / "audio_only.mp4"
    with pytest.raises(MediaError), write_mp4(path, fps=25, audio=_tone(0.5)):
        pass  # the writer itself refuses a video without frames…
    # …so make an audio-only .mp4 with ffmpeg directly, as a phone voice memo would be.
    import subprocess

    from posecast.media.ffmpeg import ffmpeg_executable

    wav = tmp_path / "a.wav"
    _tone(0.5).save_wav(wav)
    subprocess.run([ffmpeg_executable(), "-loglevel", "error", "-i", str(wav), "-c:a", "aac",
                    str(path)], check=True)
    with pytest.raises(InputError, match="no video stream"):
        extract_video(path)


def test_an_mp4_with_audio_has_the_literal_frame_count(tmp_path):
    """0.3 s at 25 fps is ceil(7.5) = 8 frames, whatever was written (the writer pads or
    trims); 0.28 s is exactly 7."""
    from posecast.media import AudioClip, iter_video_frames, probe_video, write_mp4

    for seconds, expected in ((0.3, 8), (0.28, 7)):
        path = tmp_path / f"{seconds}.mp4"
        with write_mp4(path, fps=25, audio=AudioClip(np.zeros(round(seconds * 16_000),
                                                               np.float32), 16_000)) as mp4:
            for _ in range(3):
                mp4.write(np.zeros((16, 16, 3), np.uint8))
        assert sum(1 for _ in iter_video_frames(path, probe_video(path))) == expected
