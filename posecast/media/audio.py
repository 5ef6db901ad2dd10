"""Audio in: any common format (or a video's audio track) to mono float32 at a chosen rate."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile
import soxr

from posecast.errors import InputError
from posecast.paths import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, require_file

DEFAULT_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class AudioClip:
    """Mono audio: `samples` (N,) float32 in [-1, 1] at `sample_rate` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def save_wav(self, path: str | os.PathLike) -> None:
        soundfile.write(str(path), np.clip(self.samples, -1.0, 1.0), self.sample_rate,
                        subtype="PCM_16")


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE) -> AudioClip:
    """Read `path` as mono float32 resampled to `sample_rate`.

    libsndfile (soundfile) reads WAV, FLAC, OGG and MP3, channels are averaged and soxr
    resamples at its high quality: exactly what `librosa.load` does with these backends, without
    librosa's 2 s import at the start of every render. Other containers (M4A, AAC, a video's
    audio track) are decoded by ffmpeg.
    """
    from posecast.media.ffmpeg import decode_audio

    path = require_file(path, "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the audio file is empty (0 bytes); give a real recording")
    try:
        soundfile.info(str(path))
        readable_by_libsndfile = True
    except (soundfile.LibsndfileError, RuntimeError):
        readable_by_libsndfile = False
    if readable_by_libsndfile:
        try:
            channels, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
            # libsndfile accepted the header but not the data
            raise InputError(f"{path}: the audio could not be decoded ({error})") from None
        samples = channels.mean(axis=1)  # (N,)
        if rate != sample_rate and samples.size:
            samples = soxr.resample(samples, rate, sample_rate, quality="HQ")
    else:
        samples = decode_audio(path, sample_rate)
    if samples.size == 0:
        raise InputError(f"{path}: the audio has no samples (0 s long); give a real recording")
    return AudioClip(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)
