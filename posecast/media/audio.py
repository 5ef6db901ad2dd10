"""Audio in: any common format (or a video's audio track) to mono float32 at a chosen rate."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    _refuse_cut_short_wav(path)
    try:
        with _quiet_stderr():
            soundfile.info(str(path))
        readable_by_libsndfile = True
    except (soundfile.LibsndfileError, RuntimeError):
        readable_by_libsndfile = False
    if readable_by_libsndfile:
        try:
            with _quiet_stderr():
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
    if not np.isfinite(samples).all():  # a float WAV can hold NaN or inf; no measure takes them
        raise InputError(f"{path}: the audio holds NaN or infinite samples; give a real "
                         "recording")
    return AudioClip(np.ascontiguousarray(samples, dtype=np.float32), sample_rate)


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


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what C code prints on the process's stderr (libsndfile's MP3 decoder prints
    "Note: Illegal Audio-MPEG-Header …" for damaged files; the error raised says it better)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
