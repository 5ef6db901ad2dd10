"""Audio in: any common format (or a video's audio track) to mono float32 at a chosen rate."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from posecast.errors import InputError
from posecast.native_stderr import quiet_stderr
from posecast.paths import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, require_file

DEFAULT_SAMPLE_RATE = 16_000
# Bounds checked on the header, before any decoding: a tiny file can declare 55 hours at 1 Hz.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 384_000
MAX_MINUTES = 180.0
# A mono mix this much quieter than the loudest channel means the channels cancel (a stereo
# file with one channel inverted): the loudest channel is analysed instead.
CANCELLING_MIX = 0.25


@dataclass(frozen=True)
class Soundtrack:
    """The user's own recording, which an MP4 carries at its own rate and channels (the
    analysis copy is 16 kHz mono)."""

    path: Path
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class AudioClip:
    """Mono audio: `samples` (N,) float32 in [-1, 1] at `sample_rate` Hz, and the recording it
    was read from (`source`, None for audio made in code)."""

    samples: np.ndarray
    sample_rate: int
    source: Soundtrack | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def save_wav(self, path: str | os.PathLike) -> None:
        soundfile.write(str(path), np.clip(self.samples, -1.0, 1.0), self.sample_rate,
                        subtype="PCM_16")


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE,
               max_minutes: float = MAX_MINUTES,
               on_warning: Callable[[str], None] | None = None) -> AudioClip:
    """Read `path` as mono float32 resampled to `sample_rate`, for analysis; the clip's
    `source` names the recording itself, for the MP4's soundtrack.

    The header is checked first (rate 8–384 kHz, declared length at most `max_minutes`), so a
    small file cannot make posecast decode or resample hours of audio. libsndfile (soundfile)
    reads WAV, FLAC, OGG and MP3, soxr resamples at its high quality (what `librosa.load` does
    with these backends, without librosa's 2 s import); other containers (M4A, AAC, a video's
    audio track) are decoded by ffmpeg. Channels are averaged, unless they cancel: then the
    loudest is used and `on_warning` is told.
    """
    from posecast.media.ffmpeg import decode_audio, probe_audio

    path = require_file(path, "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the audio file is empty (0 bytes); give a real recording")
    _refuse_cut_short_wav(path)
    try:
        with quiet_stderr():
            info = soundfile.info(str(path))
        rate, channels, seconds = info.samplerate, info.channels, info.duration
    except (soundfile.LibsndfileError, RuntimeError):
        info = None
        header = probe_audio(path)
        rate, channels, seconds = (header.sample_rate, header.channels, header.seconds) \
            if header is not None else (sample_rate, 1, 0.0)
    _check_header(path, rate, seconds, max_minutes)
    soundtrack = Soundtrack(path, rate, max(channels, 1))
    if info is not None:
        try:
            with quiet_stderr():
                decoded, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
            # libsndfile accepted the header but not the data
            raise InputError(f"{path}: the audio could not be decoded ({error})") from None
    else:  # ffmpeg resamples while decoding; an unknown layout is mixed by ffmpeg
        decoded = decode_audio(path, sample_rate, max(channels, 1)).reshape(-1, max(channels, 1))
        rate = sample_rate
    samples = _analysis_mix(decoded, path, on_warning)
    if rate != sample_rate and samples.size:
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ")
    if samples.size == 0:
        raise InputError(f"{path}: the audio has no samples (0 s long); give a real recording")
    if not np.isfinite(samples).all():  # a float WAV can hold NaN or inf; no measure takes them
        raise InputError(f"{path}: the audio holds NaN or infinite samples; give a real "
                         "recording")
    return AudioClip(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, soundtrack)


def _check_header(path: Path, rate: int, seconds: float, max_minutes: float) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InputError(f"{path}: the header declares a sample rate of {rate} Hz; posecast "
                         f"reads {MIN_SAMPLE_RATE // 1000}–{MAX_SAMPLE_RATE // 1000} kHz audio "
                         "(the file is damaged, or re-export it at 16–48 kHz)")
    if seconds > max_minutes * 60:
        raise InputError(f"{path}: the header declares {seconds / 60:.0f} min of audio, over "
                         f"the limit of {max_minutes:g} min; cut it, or raise --max-minutes")


def _analysis_mix(channels: np.ndarray, path: Path,
                  on_warning: Callable[[str], None] | None) -> np.ndarray:
    """(N, C) → (N,): the mean of the channels, or the loudest channel when the mean is far
    quieter than it (channels in opposite phase cancel in the mean)."""
    mix = channels.mean(axis=1)
    if channels.shape[1] < 2 or not channels.size:
        return mix
    levels = np.sqrt(np.mean(np.square(channels, dtype=np.float64), axis=0))
    loudest = int(np.argmax(levels))
    if np.sqrt(np.mean(np.square(mix, dtype=np.float64))) >= CANCELLING_MIX * levels[loudest]:
        return mix
    if on_warning is not None:
        on_warning(f"warning: {path}: its channels cancel each other when mixed to mono (one "
                   f"is inverted?); the mouth follows channel {loudest + 1} alone")
    return np.ascontiguousarray(channels[:, loudest])


# A WAV header's data size when the writer did not know the length (a stream to a pipe).
_UNKNOWN_WAV_SIZES = range(0x7FFFF000, 0x1_0000_0000)


def _refuse_cut_short_wav(path: Path) -> None:
    """One line for a WAV file whose header declares more audio than the file holds (a copy or
    download cut short); libsndfile would silently read the part that is there."""
    with path.open("rb") as handle:
        riff = handle.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:] != b"WAVE":
            return
        byte_rate = 0
        while len(header := handle.read(8)) == 8:  # chunks: id (4 bytes), size (4, little)
            kind, size = header[:4], int.from_bytes(header[4:], "little")
            if kind == b"fmt ":
                byte_rate = int.from_bytes(handle.read(size)[8:12], "little")
                handle.seek(size & 1, os.SEEK_CUR)
            elif kind == b"data":
                held = path.stat().st_size - handle.tell()
                if size <= held or size in _UNKNOWN_WAV_SIZES or byte_rate == 0:
                    return
                raise InputError(
                    f"{path}: the WAV file is cut short: its header promises "
                    f"{size / byte_rate:.2f} s of audio, the file holds {held / byte_rate:.2f} "
                    "s; copy or download it again (or re-export it)")
            else:
                handle.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
