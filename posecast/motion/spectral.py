"""Short-time measures of speech in plain numpy: power spectra, mel filters, YIN pitch and an
onset peak picker, the few signal-processing pieces the speech features need.

They were librosa's until issue 35: librosa's import costs 1.3 s on an idle 2-core CPU with
its numba functions cached and about 14 s the first time on a machine (numba compiles them),
more than the whole 1.5 s a render may take to its first frame. tests/test_spectral.py checks
every function here against librosa (kept as a test dependency for that), and against
hand-made cases: tones of known pitch, triangles that peak at their centres.

Frames are columns: a (size, n) array holds n frames of `size` samples each.
"""

from __future__ import annotations

import numpy as np


def frames_of(segment: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(size, n) read-only view of the frames of `size` samples every `hop` samples that fit
    in `segment` (no padding: the caller gives each frame its context)."""
    return np.lib.stride_tricks.sliding_window_view(segment, size)[::hop].T


def hann(width: int, size: int) -> np.ndarray:
    """(size,) periodic Hann window of `width` samples, zero-padded to `size` around its
    centre (a short window inside a longer FFT frame)."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(width) / width)
    left = (size - width) // 2
    return np.pad(window, (left, size - width - left))


def power_spectra(frames: np.ndarray, width: int) -> np.ndarray:
    """(size // 2 + 1, n) power |FFT|² of (size, n) frames under a Hann window `width` wide."""
    size = frames.shape[0]
    return np.abs(np.fft.rfft(frames * hann(width, size)[:, None], axis=0)) ** 2


def _hz_to_mel(hz: np.ndarray, htk: bool) -> np.ndarray:
    """HTK's scale 2595·log10(1 + f/700), or Slaney's (Auditory Toolbox): linear at 3 mel per
    200 Hz up to 1 kHz (15 mel), logarithmic above, 27 mel per factor 6.4."""
    hz = np.asarray(hz, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    linear = 3.0 * hz / 200.0
    return np.where(hz >= 1000.0, 15.0 + 27.0 * np.log(np.maximum(hz, 1e-9) / 1000.0)
                    / np.log(6.4), linear)


def _mel_to_hz(mel: np.ndarray, htk: bool) -> np.ndarray:
    if htk:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0),
                    200.0 * mel / 3.0)


def mel_filters(sample_rate: int, fft_size: int, bands: int, low: float = 0.0,
                high: float | None = None, htk: bool = False,
                equal_area: bool = True) -> np.ndarray:
    """(bands, fft_size // 2 + 1) float32 triangular filters, their corners equally spaced on
    the mel scale from `low` to `high` Hz (default: half the sample rate); each triangle
    rises from its left corner to 1 at its centre and falls to its right corner.
    `equal_area` scales each to the same area (2 / its width in Hz), as Slaney's filters."""
    high = sample_rate / 2 if high is None else high
    corners = _mel_to_hz(np.linspace(_hz_to_mel(low, htk), _hz_to_mel(high, htk), bands + 2),
                         htk)  # (bands + 2,) Hz
    frequencies = np.fft.rfftfreq(fft_size, 1.0 / sample_rate)
    left, centre, right = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (frequencies - left) / (centre - left)
    falling = (right - frequencies) / (right - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if equal_area:
        weights *= 2.0 / (right - left)
    return weights.astype(np.float32)


def yin(frames: np.ndarray, sample_rate: int, low: float, high: float,
        threshold: float = 0.1) -> np.ndarray:
    """(n,) fundamental frequency (Hz) of each of (size, n) frames by YIN (de Cheveigné and
    Kawahara 2002), searching periods from sample_rate / high to sample_rate / low samples:
    the squared difference of the frame and itself shifted by τ, over their overlap,
    divided by its running mean over shifts 1 … τ; the first dip below `threshold` (the
    deepest dip where none is), refined by a parabola through it and its neighbours."""
    size = frames.shape[0]
    shortest = int(np.floor(sample_rate / high))
    longest = min(int(np.ceil(sample_rate / low)), size - 1)
    frames = frames.astype(np.float64)
    spectrum = np.fft.rfft(frames, n=2 * size, axis=0)
    product = np.fft.irfft(np.abs(spectrum) ** 2, n=2 * size, axis=0)[:longest + 1]  # (τ, n)
    energy = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(frames ** 2, 0)])
    shifts = np.arange(longest + 1)
    # Σ_{j < size-τ} x_j² + Σ_{j ≥ τ} x_j² − 2 Σ x_j x_{j+τ}: the overlap's squared difference
    difference = energy[size - shifts] + energy[size] - energy[shifts] - 2 * product
    difference[0] = 0.0
    running_mean = np.cumsum(difference[1:], 0) / shifts[1:, None]  # (longest, n), τ ≥ 1
    normalised = difference[shortest:] / (running_mean[shortest - 1:]
                                          + np.finfo(np.float64).tiny)  # (periods, n)
    # dips: below the shift before (the first shift counts as a dip if below the next) and
    # not above the shift after (the last counts if below the one before)
    before = np.concatenate([np.full((1, normalised.shape[1]), np.inf), normalised[:-1]])
    after = np.concatenate([normalised[1:], np.full((1, normalised.shape[1]), np.inf)])
    dips = (normalised < before) & (normalised <= after) & (normalised < threshold)
    columns = np.arange(normalised.shape[1])
    best = np.where(dips.any(0), dips.argmax(0), normalised.argmin(0))
    inner = (best > 0) & (best < normalised.shape[0] - 1)
    centre = normalised[best, columns]
    left = normalised[np.maximum(best - 1, 0), columns]
    right = normalised[np.minimum(best + 1, normalised.shape[0] - 1), columns]
    curvature, slope = left + right - 2 * centre, (right - left) / 2
    usable = inner & (np.abs(slope) < np.abs(curvature))  # the vertex lies within one shift
    offset = np.where(usable, -slope / np.where(usable, curvature, 1.0), 0.0)
    return sample_rate / (shortest + best + offset)


def pick_peaks(envelope: np.ndarray, before_max: int, after_max: int, before_mean: int,
               after_mean: int, delta: float, wait: int) -> np.ndarray:
    """Indices of the peaks of a 1-D envelope (Böck, Krebs and Schedl 2012): a sample is a
    peak if it is the largest of samples n − before_max … n + after_max − 1, at least `delta`
    above the mean of samples n − before_mean … n + after_mean − 1 (windows cut at the ends),
    and more than `wait` samples after the previous peak."""
    x = np.asarray(envelope, dtype=np.float64)
    count = len(x)
    starts = np.arange(count)
    padded = np.concatenate([np.full(before_max, -np.inf), x, np.full(after_max, -np.inf)])
    local_max = np.lib.stride_tricks.sliding_window_view(padded, before_max + after_max)[:count]
    sums = np.concatenate([[0.0], np.cumsum(x)])
    low = np.maximum(starts - before_mean, 0)
    high = np.minimum(starts + after_mean, count)
    local_mean = (sums[high] - sums[low]) / (high - low)
    candidates = np.flatnonzero((x == local_max.max(1)) & (x >= local_mean + delta))
    peaks: list[int] = []
    for index in candidates:
        if not peaks or index > peaks[-1] + wait:
            peaks.append(int(index))
    return np.asarray(peaks, dtype=int)
