"""Speech features at the video's frame rate, measured in bounded blocks (spectral.py's numpy
versions of librosa's measures, checked against librosa in the tests).

The audio (resampled by soxr to 16 kHz mono) is analysed in frames of 25 ms every 10 ms,
centred framing (frame j is centred on sample j · HOP, zeros beyond the ends):
  loudness  (T,) in [0, 1]: RMS in dB mapped from [peak − 45 dB, peak − 6 dB]; silence
            (digital zero or below the floor) is 0;
  centroid  (T,) in [0, 1]: spectral centroid of 300–4000 Hz, normalised by the clip's own
            loud-frame percentiles (low = rounded vowels, high = spread vowels and fricatives);
  pitch     (T,) semitones from the clip's median voiced pitch (YIN, 70–400 Hz; 0 where
            unvoiced: quiet, or noise-like by spectral flatness);
  beats     times (s) of stressed onsets (peaks of the mel spectral flux weighted by
            loudness, ≥ 0.35 s apart).
Values at video frame i describe the audio around time (i + 0.5) / fps.

Memory: the audio is analysed BLOCK_FRAMES frames (2.5 s) at a time, each block read with the
context its windows need, so the spectra of a block are the largest arrays whatever the clip's
length, and every block gives exactly what one pass over the whole clip would. What is kept for
the whole clip is a few numbers per 10 ms (about 3 KB per second of audio), because the
normalisations (peak loudness, percentiles, median pitch, onset threshold) are the clip's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from posecast.media import AudioClip
from posecast.motion.spectral import frames_of, mel_filters, pick_peaks, power_spectra, yin

SAMPLE_RATE = 16_000
HOP, WINDOW = 160, 400  # 10 ms, 25 ms
FFT_SIZE = 512
PITCH_WINDOW = 640  # 40 ms: two periods of the lowest pitch (70 Hz) and YIN's own window
BLOCK_FRAMES = 250  # 2.5 s of analysis frames per block (YIN's FFTs: about 10 MB)
CENTROID_BAND = (300.0, 4000.0)
ONSET_BANDS = 40
BEAT_GAP = 0.35  # seconds between beats at least
NOISY = 0.03  # spectral flatness above which a frame is unvoiced (noise, not a harmonic voice)


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
    """Frames of a clip under centred framing: one per hop, plus the one centred on sample 0."""
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
    return power_spectra(frames_of(frame_segment(samples, first, last, FFT_SIZE), FFT_SIZE, HOP),
                         WINDOW)


@dataclass
class FrameMeasures:
    """Per 10 ms frame, over the whole clip: the raw measures before the clip's
    normalisations."""

    rms: np.ndarray
    centroid: np.ndarray  # Hz
    f0: np.ndarray  # Hz
    flatness: np.ndarray
    flux: np.ndarray  # onset strength


class MeasureBlocks:
    """Raw measures of consecutive blocks of analysis frames, the flux of each block's first
    frame taken against the last frame of the block before (so blocks of any size, in order,
    give what one pass over the whole clip gives). A live stream measures its audio this way
    as it arrives."""

    def __init__(self) -> None:
        self.frequencies = np.fft.rfftfreq(FFT_SIZE, 1.0 / SAMPLE_RATE)
        self.band = (self.frequencies >= CENTROID_BAND[0]) & \
            (self.frequencies <= CENTROID_BAND[1])
        self.mel_basis = mel_filters(SAMPLE_RATE, FFT_SIZE, ONSET_BANDS)  # Slaney's, 0-8 kHz
        self.previous = None  # the last frame's mel dB (ONSET_BANDS, 1): the flux's reference

    def __call__(self, samples: np.ndarray, first: int, last: int) -> FrameMeasures:
        """Frames first … last − 1 of `samples` (frame j centred on sample j · HOP)."""
        power = power_spectrum(samples, first, last)  # (257, n)
        windows = frames_of(frame_segment(samples, first, last, WINDOW), WINDOW, HOP)
        in_band = power[self.band]
        floored = np.maximum(power, 1e-10)  # flatness: geometric over arithmetic mean
        mel_db = 10 * np.log10(np.maximum(self.mel_basis @ power, 1e-10))  # (40, n)
        reference = mel_db[:, :1] if self.previous is None else self.previous
        self.previous = mel_db[:, -1:]
        return FrameMeasures(
            rms=np.sqrt(np.mean(windows.astype(np.float64) ** 2, axis=0)),
            centroid=self.frequencies[self.band] @ in_band / np.maximum(in_band.sum(0), 1e-30),
            f0=yin(frames_of(frame_segment(samples, first, last, PITCH_WINDOW), PITCH_WINDOW,
                             HOP), SAMPLE_RATE, low=70, high=400),
            flatness=np.exp(np.log(floored).mean(0)) / floored.mean(0),
            # onset strength: the mean rise over bands from each frame to the next (the
            # clip's first frame against itself)
            flux=np.maximum(np.diff(np.concatenate([reference, mel_db], axis=1), axis=1),
                            0).mean(0))


def frame_measures(samples: np.ndarray, block: int = BLOCK_FRAMES) -> FrameMeasures:
    """Every 10 ms frame's raw measures, BLOCK_FRAMES frames at a time."""
    measure = MeasureBlocks()
    parts = [measure(samples, first, last) for first, last in frame_blocks(samples, block)]
    return FrameMeasures(**{name: np.concatenate([getattr(part, name) for part in parts])
                            for name in FrameMeasures.__annotations__})


def _at_frames(values: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Values every 10 ms → values at video frame centres (linear interpolation)."""
    times = (np.arange(frames) + 0.5) / fps
    return np.interp(times, np.arange(len(values)) * HOP / SAMPLE_RATE, values)


def beat_times(strength: np.ndarray) -> np.ndarray:
    """(n,) times (s) of the onsets in a (T,) onset strength every 10 ms: the peaks of the
    strength scaled to [0, 1] that are 30 ms local maxima, 0.2 above their ±100 ms mean and
    BEAT_GAP apart (librosa's onset_detect's settings, with its `wait` and `delta` set so)."""
    if not strength.max() > 0:
        return np.zeros(0)
    scaled = (strength - strength.min()) / (np.ptp(strength) + np.finfo(np.float64).tiny)
    frames_per_second = SAMPLE_RATE / HOP
    return pick_peaks(scaled, before_max=3, after_max=1, before_mean=10, after_mean=11,
                      delta=0.2, wait=round(BEAT_GAP * frames_per_second)) / frames_per_second


def normalise(measures: FrameMeasures, reference: FrameMeasures, quietest_peak: float = -100.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(loudness, centroid, semitones) of `measures`, each normalised by the statistics of
    `reference` (the whole clip; a live stream's last seconds): its peak level (at least
    `quietest_peak` dBFS, so a live stream's room noise stays quiet), its loud frames'
    centroid percentiles and its voiced frames' median pitch."""

    def loudness_of(rms: np.ndarray) -> np.ndarray:
        decibels = 20 * np.log10(np.maximum(rms, 1e-10))
        peak = max(20 * np.log10(max(float(reference.rms.max(initial=0.0)), 1e-10)),
                   quietest_peak)
        if peak <= -100:  # digital silence
            return np.zeros_like(rms)
        return np.clip((decibels - (peak - 45)) / 39, 0, 1)

    loudness, reference_loudness = loudness_of(measures.rms), loudness_of(reference.rms)
    loud = reference_loudness > 0.3
    if loud.sum() >= 5:
        low, high = np.percentile(reference.centroid[loud], [10, 90])
        centroid = np.clip((measures.centroid - low) / max(high - low, 1.0), 0, 1)
    else:
        centroid = np.full_like(measures.centroid, 0.5)
    semitones = np.zeros(len(loudness))
    reference_voiced = (reference.flatness < NOISY) & (reference_loudness > 0.2)
    if reference_voiced.sum() >= 5:
        voiced = (measures.flatness < NOISY) & (loudness > 0.2)
        semitones[voiced] = 12 * np.log2(measures.f0[voiced]
                                         / np.median(reference.f0[reference_voiced]))
    return loudness, centroid, semitones


def speech_features(clip: AudioClip, fps: float, frames: int,
                    block: int = BLOCK_FRAMES) -> SpeechFeatures:
    """The clip's features at `frames` video frames, normalised by the clip's own statistics;
    `block`: analysis frames per block (any block size gives the same features)."""
    measures = frame_measures(resample_audio(clip), block)
    loudness, centroid, semitones = normalise(measures, measures)
    return SpeechFeatures(fps, _at_frames(loudness, fps, frames),
                          _at_frames(centroid, fps, frames), _at_frames(semitones, fps, frames),
                          beat_times(measures.flux * loudness))  # onsets in loud speech
