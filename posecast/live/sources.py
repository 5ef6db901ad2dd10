"""Live audio in: pieces of 16 kHz mono float32 samples, each with the time it arrived.

Three sources fill one queue from a thread of their own:
  FileSource   a recording played at real-time pace (the honest stand-in for a live voice)
  PcmSource    raw PCM from a binary stream (stdin): any TTS engine or `ffmpeg -f pulse …`
  PushSource   pieces pushed by the server (a browser's microphone)
Each converts to mono and resamples to 16 kHz with soxr's streaming resampler (its filter's
delay, under 10 ms, is part of the measured latency). The end of the audio is a None piece.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import BinaryIO

import numpy as np
import soxr

from posecast.errors import UsageError
from posecast.media import load_audio
from posecast.motion.features import SAMPLE_RATE, resample_audio

PIECE_SECONDS = 0.02  # a file is played 20 ms at a time, as a sound card delivers
PCM_FORMATS = {"s16le": ("<i2", 32768.0), "f32le": ("<f4", 1.0)}


class AudioSource:
    """A queue of (arrival time (perf_counter), (N,) float32 samples at 16 kHz) pieces."""

    live = True  # no end known in advance: a pause in the pieces is silence

    def __init__(self) -> None:
        self.pieces: queue.Queue[tuple[float, np.ndarray] | None] = queue.Queue()
        self._resampler: soxr.ResampleStream | None = None
        self._rate: int | None = None
        self.seconds = 0.0  # of audio delivered, counted at the source's own rate
        self.error: str | None = None  # why the audio ended early, if it did

    def _put(self, samples: np.ndarray, rate: int, last: bool = False) -> None:
        """Queue (N,) or (N, channels) samples at `rate`: mono, resampled to 16 kHz."""
        samples = np.clip(np.nan_to_num(np.asarray(samples, np.float32), nan=0.0, posinf=0.0,
                                        neginf=0.0), -1.0, 1.0)  # what a sound card could play
        if samples.ndim == 2:
            samples = samples.mean(1)
        self.seconds += len(samples) / rate
        if rate != SAMPLE_RATE:
            if self._resampler is None or rate != self._rate:
                self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                      quality="HQ")
                self._rate = rate
            samples = self._resampler.resample_chunk(samples, last=last)
        if len(samples):
            self.pieces.put((time.perf_counter(), samples))

    def end(self) -> None:
        self.pieces.put(None)

    def start(self) -> None:
        """Start delivering (sources with a thread of their own start it here)."""

    def stop(self) -> None:
        """Stop delivering (the session ends)."""


class FileSource(AudioSource):
    """A recording, delivered PIECE_SECONDS at a time at real-time pace from `start()`."""

    live = False

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.samples = resample_audio(load_audio(path))
        self.duration = len(self.samples) / SAMPLE_RATE
        self._stopped = threading.Event()
        self.wait_for: threading.Event | None = None  # e.g. a viewer: then play

    def start(self) -> None:
        threading.Thread(target=self._play, name="posecast-live-file", daemon=True).start()

    def _play(self) -> None:
        piece = int(PIECE_SECONDS * SAMPLE_RATE)
        while self.wait_for is not None and not self.wait_for.wait(0.1):
            if self._stopped.is_set():
                return
        started = time.perf_counter()
        for first in range(0, len(self.samples), piece):
            due = started + (first + piece) / SAMPLE_RATE  # when its last sample is spoken
            if self._stopped.wait(max(0.0, due - time.perf_counter())):
                return
            self._put(self.samples[first:first + piece], SAMPLE_RATE)
        self.end()

    def stop(self) -> None:
        self._stopped.set()


class PcmSource(AudioSource):
    """Raw little-endian PCM (`s16le` or `f32le`, interleaved channels) read from `stream`
    as it comes; its end is the audio's end."""

    def __init__(self, stream: BinaryIO, rate: int, channels: int = 1,
                 sample_format: str = "s16le") -> None:
        super().__init__()
        if sample_format not in PCM_FORMATS:
            raise UsageError(f"--format {sample_format}: use {' or '.join(PCM_FORMATS)}")
        self.stream, self.rate, self.channels = stream, rate, channels
        self.dtype, self.scale = PCM_FORMATS[sample_format]

    def start(self) -> None:
        threading.Thread(target=self._read, name="posecast-live-pcm", daemon=True).start()

    def _read(self) -> None:
        frame_bytes = np.dtype(self.dtype).itemsize * self.channels
        leftover = b""
        read = getattr(self.stream, "read1", self.stream.read)
        try:
            while True:
                data = read(int(self.rate * PIECE_SECONDS) * frame_bytes)
                if not data:
                    break
                data = leftover + data
                whole = len(data) // frame_bytes * frame_bytes
                data, leftover = data[:whole], data[whole:]
                samples = np.frombuffer(data, self.dtype).astype(np.float32) / self.scale
                self._put(samples.reshape(-1, self.channels), self.rate)
            self._put(np.zeros(0, np.float32), self.rate, last=True)
        except (OSError, ValueError) as error:  # the stream broke: its audio ends here
            self.error = f"reading PCM from stdin failed ({error})"
        finally:
            self.end()


class PushSource(AudioSource):
    """Pieces pushed by another thread (the server's microphone connection)."""

    def push(self, samples: np.ndarray, rate: int) -> None:
        self._put(samples, rate)
