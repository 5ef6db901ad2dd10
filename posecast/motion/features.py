"""Speech features at the video's frame rate, measured with librosa in bounded blocks.

The audio (resampled by soxr to 16 kHz mono) is analysed in frames of 25 ms every 10 ms,
librosa's centred framing (frame j is centred on sample j · HOP, zeros beyond the ends):
  loudness  (T,) in [0, 1]: RMS in dB mapped from [peak − 45 dB, peak − 6 dB]; silence
            (digital zero or below the floor) is 0;
  centroid  (T,) in [0, 1]: spectral centroid of 300–4000 Hz, normalised by the clip's own
            loud-frame percentiles (low = rounded vowels, high = spread vowels and fricatives);
  pitch     (T,) semitones from the clip's median voiced pitch (YIN, 70–400 Hz; 0 where
            unvoiced: quiet, or noise-like by spectral flatness);
  beats     times (s) of stressed onsets (librosa's onset detection on the mel spectral flux
            weighted by loudness, ≥ 0.35 s apart).
Values at video frame i describe the audio around time (i + 0.5) / fps.

Memory: the audio is analysed BLOCK_FRAMES frames (10 s) at a time, each block read with the
context its windows need, so the spectra of a block are the largest arrays whatever the clip's
length, and every block gives exactly what one pass over the whole clip would. What is kept for
the whole clip is a few numbers per 10 ms (about 3 KB per second of audio), because the
normalisations (peak loudness, percentiles, median pitch, onset threshold) are the clip's own.

librosa's import costs 1.5–2 s on a quiet 2-core CPU (scipy.signal, numba's cached functions;
3–5 s on a loaded one): `preload()` starts it in a background thread while a model loads. The
very first import on a machine compiles numba functions (about 30 s here), cached on disk
(NUMBA_CACHE_DIR, by default ~/.cache/posecast/numba) for every later run.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from posecast.media import AudioClip

SAMPLE_RATE = 16_000
HOP, WINDOW = 160, 400  # 10 ms, 25 ms
FFT_SIZE = 512
PITCH_WINDOW = 640  # 40 ms: two periods of the lowest pitch (70 Hz) and YIN's own window
BLOCK_FRAMES = 1000  # 10 s of analysis frames per block
CENTROID_BAND = (300.0, 4000.0)
ONSET_BANDS = 40
BEAT_GAP = 0.35  # seconds between beats at least
NOISY = 0.03  # spectral flatness above which a frame is unvoiced (noise, not a harmonic voice)


def numba_cache() -> Path:
    """Where numba caches what it compiles of librosa: the user's cache folder, because
    librosa's own location (next to its sources) may be read-only."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_home / "posecast" / "numba")))


def librosa():
    """The librosa module (its numba functions compiled, or read from numba_cache())."""
    numba_cache()
    import librosa as module
    import librosa.feature  # noqa: F401  (lazily loaded submodules, imported here once)
    import librosa.onset  # noqa: F401

    return module


def preload(on_note: Callable[[str], None] | None = None) -> None:
    """Import librosa in a background thread (a render's model loads meanwhile). Before the
    first import on a machine, which compiles librosa's numba functions (13-15 s on an idle
    2-core CPU; never again once cached), `on_note` is told why the first run waits."""
    cache = numba_cache()
    if on_note is not None and "librosa" not in sys.modules and \
            not any(cache.glob("*/*.nbi")):
        on_note(f"note: first run here: compiling librosa's audio functions once (about 15 s "
                f"on 2 cores; cached in {cache})")
    threading.Thread(target=librosa, name="posecast-librosa-import", daemon=True).start()


@dataclass(frozen=True)
class SpeechFeatures:
    fps: float
    loudness: np.ndarray  # (T,)
    centroid: np.ndarray  # (T,)
    pitch: np.ndarray  # (T,)
    beats: np.ndarray  # (n,) seconds

    @property
    def frames(self) -> int:
        return len(self.loudness)


def resample_audio(clip: AudioClip) -> np.ndarray:
    """(N,) float32 samples at SAMPLE_RATE (soxr, high quality: anti-aliased)."""
    samples = np.asarray(clip.samples, dtype=np.float32)
    if clip.sample_rate == SAMPLE_RATE or samples.size == 0:
        return samples
    return soxr.resample(samples, clip.sample_rate, SAMPLE_RATE, quality="HQ")


def analysis_frames(samples: np.ndarray) -> int:
    """Frames of a clip under centred framing (librosa's `center=True` count)."""
    return 1 + len(samples) // HOP


def frame_segment(samples: np.ndarray, first: int, last: int, size: int) -> np.ndarray:
    """The samples under frames first … last − 1 of `size` samples each (frame j centred on
    sample j · HOP), zeros beyond the clip: framing it without centring (`center=False`)
    gives exactly those frames."""
    start, stop = first * HOP - size // 2, (last - 1) * HOP + size - size // 2
    segment = samples[max(start, 0):max(min(stop, len(samples)), 0)]
    return np.pad(segment, (max(-start, 0), stop - start - len(segment) - max(-start, 0)))


def frame_blocks(samples: np.ndarray, block: int = BLOCK_FRAMES) -> Iterator[tuple[int, int]]:
    """(first, last) analysis frames of each block, in order."""
    total = analysis_frames(samples)
    for first in range(0, total, block):
        yield first, min(first + block, total)


def power_spectrum(samples: np.ndarray, first: int, last: int) -> np.ndarray:
    """(FFT_SIZE // 2 + 1, last − first) power of Hann-windowed 25 ms frames."""
    stft = librosa().stft(frame_segment(samples, first, last, FFT_SIZE), n_fft=FFT_SIZE,
                          hop_length=HOP, win_length=WINDOW, window="hann", center=False)
    return np.abs(stft) ** 2


@dataclass
class FrameMeasures:
    """Per 10 ms frame, over the whole clip: the raw measures before the clip's
    normalisations."""

    rms: np.ndarray
    centroid: np.ndarray  # Hz
    f0: np.ndarray  # Hz
    flatness: np.ndarray
    flux: np.ndarray  # onset strength


def frame_measures(samples: np.ndarray, block: int = BLOCK_FRAMES) -> FrameMeasures:
    """Every 10 ms frame's raw measures, BLOCK_FRAMES frames at a time."""
    lr = librosa()
    frequencies = lr.fft_frequencies(sr=SAMPLE_RATE, n_fft=FFT_SIZE)
    band = (frequencies >= CENTROID_BAND[0]) & (frequencies <= CENTROID_BAND[1])
    mel_basis = lr.filters.mel(sr=SAMPLE_RATE, n_fft=FFT_SIZE, n_mels=ONSET_BANDS)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in FrameMeasures.__annotations__}
    previous = None  # the last frame's mel dB (ONSET_BANDS, 1): the flux's reference
    for first, last in frame_blocks(samples, block):
        power = power_spectrum(samples, first, last)  # (257, n)
        parts["rms"].append(lr.feature.rms(y=frame_segment(samples, first, last, WINDOW),
                                           frame_length=WINDOW, hop_length=HOP,
                                           center=False)[0])
        parts["centroid"].append(lr.feature.spectral_centroid(
            S=power[band], freq=frequencies[band])[0])
        parts["flatness"].append(lr.feature.spectral_flatness(S=power, power=1.0)[0])
        parts["f0"].append(lr.yin(frame_segment(samples, first, last, PITCH_WINDOW), fmin=70,
                                  fmax=400, sr=SAMPLE_RATE, frame_length=PITCH_WINDOW,
                                  hop_length=HOP, center=False))
        mel_db = lr.power_to_db(mel_basis @ power, top_db=None)  # (40, n); no clip-wide cap
        reference = mel_db[:, :1] if previous is None else previous
        # onset strength of [reference, block]: its first value compares reference with
        # itself (0), the rest are the block's frames against the frame before each
        parts["flux"].append(lr.onset.onset_strength(
            S=np.concatenate([reference, mel_db], axis=1), lag=1, max_size=1,
            center=False)[1:])
        previous = mel_db[:, -1:]
    return FrameMeasures(**{name: np.concatenate(values) for name, values in parts.items()})


def _at_frames(values: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Values every 10 ms → values at video frame centres (linear interpolation)."""
    times = (np.arange(frames) + 0.5) / fps
    return np.interp(times, np.arange(len(values)) * HOP / SAMPLE_RATE, values)


def speech_features(clip: AudioClip, fps: float, frames: int,
                    block: int = BLOCK_FRAMES) -> SpeechFeatures:
    """The clip's features at `frames` video frames; `block`: analysis frames per block
    (any block size gives the same features)."""
    samples = resample_audio(clip)
    measures = frame_measures(samples, block)
    if measures.rms.max() > 1e-5:  # not digital silence (-100 dB)
        decibels = 20 * np.log10(np.maximum(measures.rms, 1e-10))
        loudness = np.clip((decibels - (decibels.max() - 45)) / 39, 0, 1)
    else:
        loudness = np.zeros_like(measures.rms)

    centroid = measures.centroid
    loud = loudness > 0.3
    if loud.sum() >= 5:
        low, high = np.percentile(centroid[loud], [10, 90])
        centroid = np.clip((centroid - low) / max(high - low, 1.0), 0, 1)
    else:
        centroid = np.full_like(centroid, 0.5)

    voiced = (measures.flatness < NOISY) & (loudness > 0.2)
    semitones = np.zeros(len(loudness))
    if voiced.sum() >= 5:
        f0 = measures.f0[voiced]
        semitones[voiced] = 12 * np.log2(f0 / np.median(f0))

    beats = np.zeros(0)
    strength = measures.flux * loudness  # onsets in loud speech
    if strength.max() > 0:
        beats = librosa().onset.onset_detect(
            onset_envelope=strength, sr=SAMPLE_RATE, hop_length=HOP, units="time",
            wait=round(BEAT_GAP * SAMPLE_RATE / HOP), delta=0.2)
    return SpeechFeatures(fps, _at_frames(loudness, fps, frames),
                          _at_frames(centroid, fps, frames), _at_frames(semitones, fps, frames),
                          np.asarray(beats, dtype=np.float64))
