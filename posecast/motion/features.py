"""Speech features at the video's frame rate, computed with numpy (fast, no model weights).

From a short-time spectrum (25 ms windows every 10 ms, 16 kHz mono):
  loudness  (T,) in [0, 1]: frame energy in dB mapped from [peak − 45 dB, peak − 6 dB]; silence
            (digital zero or below the floor) is 0;
  centroid  (T,) in [0, 1]: spectral centroid of 300–4000 Hz, normalised by the clip's own
            voiced percentiles (low = rounded vowels, high = spread vowels and fricatives);
  pitch     (T,) semitones from the clip's median voiced pitch (0 where unvoiced);
  beats     times (s) of stressed onsets (spectral flux peaks in loud speech, ≥ 0.35 s apart).
Values at video frame i describe the audio around time (i + 0.5) / fps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posecast.media import AudioClip

SAMPLE_RATE = 16_000
HOP, WINDOW = 160, 400  # 10 ms, 25 ms


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
    if clip.sample_rate == SAMPLE_RATE:
        return clip.samples.astype(np.float64)
    duration = clip.duration
    times = np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE
    source = np.arange(len(clip.samples)) / clip.sample_rate
    return np.interp(times, source, clip.samples.astype(np.float64))


def frame_windows(samples: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(n, size) frames centred every `hop` samples (zero padded at the ends)."""
    padded = np.pad(samples, (size // 2, size // 2 + hop))
    count = max(1, int(np.ceil(len(samples) / hop)))
    index = np.arange(size)[None, :] + hop * np.arange(count)[:, None]
    return padded[index]


def _pitch(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 10 ms: f0 in Hz (autocorrelation over 40 ms, 70–400 Hz) and voicing in [0, 1]."""
    frames = frame_windows(samples, 640, HOP) * np.hanning(640)
    spectrum = np.fft.rfft(frames, n=1280)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2)[:, :640]
    energy = autocorrelation[:, :1] + 1e-12
    low, high = SAMPLE_RATE // 400, SAMPLE_RATE // 70
    lag = low + np.argmax(autocorrelation[:, low:high], axis=1)
    strength = autocorrelation[np.arange(len(lag)), lag] / energy[:, 0]
    return SAMPLE_RATE / lag, np.clip(strength, 0, 1)


def _at_frames(values: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Values every 10 ms → values at video frame centres (linear interpolation)."""
    times = (np.arange(frames) + 0.5) / fps
    return np.interp(times, np.arange(len(values)) * HOP / SAMPLE_RATE, values)


def speech_features(clip: AudioClip, fps: float, frames: int) -> SpeechFeatures:
    samples = resample_audio(clip)
    windowed = frame_windows(samples, WINDOW, HOP) * np.hanning(WINDOW)
    power = np.abs(np.fft.rfft(windowed, n=512)) ** 2  # (n, 257)
    energy = power.sum(1)
    decibels = 10 * np.log10(energy + 1e-12)
    peak = decibels.max() if energy.max() > 1e-8 else 0.0
    loudness = np.clip((decibels - (peak - 45)) / 39, 0, 1) if energy.max() > 1e-8 else \
        np.zeros_like(decibels)

    frequencies = np.fft.rfftfreq(512, 1 / SAMPLE_RATE)
    band = (frequencies >= 300) & (frequencies <= 4000)
    centroid = (power[:, band] * frequencies[band]).sum(1) / (power[:, band].sum(1) + 1e-12)
    voiced_loud = loudness > 0.3
    if voiced_loud.sum() >= 5:
        low, high = np.percentile(centroid[voiced_loud], [10, 90])
        centroid = np.clip((centroid - low) / max(high - low, 1.0), 0, 1)
    else:
        centroid = np.full_like(centroid, 0.5)

    f0, voicing = _pitch(samples)
    f0, voicing = f0[:len(loudness)], voicing[:len(loudness)]
    voiced = (voicing > 0.45) & (loudness > 0.2)
    semitones = np.zeros_like(f0)
    if voiced.sum() >= 5:
        semitones[voiced] = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))

    log_bands = np.log(power[:, 1:129].reshape(len(power), 16, 8).sum(-1) + 1e-9)
    flux = np.maximum(np.diff(log_bands, axis=0, prepend=log_bands[:1]), 0).sum(1) * loudness
    beats = []
    if flux.max() > 0:
        threshold = flux.mean() + 1.5 * flux.std()
        for index in np.argsort(-flux):
            time = index * HOP / SAMPLE_RATE
            if flux[index] < threshold:
                break
            if all(abs(time - other) >= 0.35 for other in beats):
                beats.append(time)
    return SpeechFeatures(fps, _at_frames(loudness, fps, frames),
                          _at_frames(centroid, fps, frames), _at_frames(semitones, fps, frames),
                          np.sort(np.array(beats, dtype=np.float64)))
