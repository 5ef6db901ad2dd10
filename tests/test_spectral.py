"""posecast's own speech measures (motion/spectral.py, features.py) against librosa, the
library they replace on the render's path, and against hand-made cases: tones of known pitch,
filters that peak at their centres, an envelope whose peaks are known."""

from __future__ import annotations

import numpy as np
import pytest

from posecast.motion import features as ft
from posecast.motion.spectral import frames_of, mel_filters, pick_peaks, power_spectra, yin

librosa = pytest.importorskip("librosa", reason="librosa is the oracle; `pip install -e "
                              "'.[dev]'` installs it")


@pytest.fixture(scope="module")
def speech_16k(speech_path):
    from posecast.media import load_audio

    return ft.resample_audio(load_audio(speech_path))


@pytest.mark.parametrize("htk, low, high, equal_area", [(False, 0.0, None, True),
                                                       (True, 60.0, 7600.0, False)])
def test_mel_filters_match_librosa(htk, low, high, equal_area):
    ours = mel_filters(16_000, 512, 40, low=low, high=high, htk=htk, equal_area=equal_area)
    theirs = librosa.filters.mel(sr=16_000, n_fft=512, n_mels=40, fmin=low, fmax=high,
                                 htk=htk, norm="slaney" if equal_area else None)
    assert ours.shape == theirs.shape == (40, 257)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_unscaled_mel_triangles_rise_to_one_at_their_centres():
    """With a bin every 1 Hz, each HTK triangle peaks (at 1) within a bin of the centre the
    mel formula gives, and is zero outside its two neighbours' centres."""
    rate, size = 16_000, 16_000
    filters = mel_filters(rate, size, 10, low=100, high=4000, htk=True, equal_area=False)
    mels = np.linspace(2595 * np.log10(1 + 100 / 700), 2595 * np.log10(1 + 4000 / 700), 12)
    corners = 700 * (10 ** (mels / 2595) - 1)
    frequencies = np.arange(size // 2 + 1)
    for band, weights in enumerate(filters):
        assert abs(frequencies[weights.argmax()] - corners[band + 1]) <= 1
        # the nearest bin is at most 1 Hz off the apex: 1 Hz down the steeper side
        steeper = min(corners[band + 1] - corners[band], corners[band + 2] - corners[band + 1])
        assert 1 - 1 / steeper <= weights.max() <= 1
        outside = (frequencies <= corners[band]) | (frequencies >= corners[band + 2])
        assert not weights[outside].any()


def test_power_spectra_match_librosa_stft():
    segment = np.random.default_rng(0).standard_normal(16_000).astype(np.float32)
    ours = power_spectra(frames_of(segment, 512, 160), 400)
    theirs = np.abs(librosa.stft(segment, n_fft=512, hop_length=160, win_length=400,
                                 window="hann", center=False)) ** 2
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("pitch", [82.5, 110.0, 147.3, 220.0, 311.1])
def test_yin_finds_the_pitch_of_a_harmonic_tone(pitch):
    """A tone with three harmonics: its fundamental within 0.3 % (1/20 semitone)."""
    rate = 16_000
    t = np.arange(rate // 2) / rate
    tone = sum(np.sin(2 * np.pi * pitch * k * t + k) / k for k in (1, 2, 3))
    found = yin(frames_of(tone, 640, 160), rate, low=70, high=400)
    np.testing.assert_allclose(found, pitch, rtol=3e-3)


def test_yin_agrees_with_librosa_on_speech(speech_16k):
    """librosa's YIN drops the end of the frame from its difference function, posecast's
    keeps only the overlap (the paper's own): on the bundled speech's loud frames the two
    agree within 1/2 semitone nine times in ten."""
    frames = frames_of(speech_16k, 640, 160)
    ours = yin(frames, 16_000, low=70, high=400)
    theirs = librosa.yin(speech_16k, fmin=70, fmax=400, sr=16_000, frame_length=640,
                         hop_length=160, center=False)
    loud = np.sqrt((frames.astype(np.float64) ** 2).mean(0))
    loud = loud > 0.1 * loud.max()
    semitones = np.abs(12 * np.log2(ours[loud] / theirs[loud]))
    assert loud.sum() > 300
    assert np.mean(semitones < 0.5) > 0.9, np.percentile(semitones, [50, 90])


@pytest.mark.parametrize("seed", range(4))
def test_pick_peaks_matches_librosa(seed):
    rng = np.random.default_rng(seed)
    envelope = np.convolve(rng.random(600) ** 4, np.ones(3) / 3, mode="same")
    settings = dict(before_max=int(rng.integers(1, 6)), after_max=int(rng.integers(1, 4)),
                    before_mean=int(rng.integers(1, 12)), after_mean=int(rng.integers(1, 12)),
                    delta=float(rng.uniform(0, 0.2)), wait=int(rng.integers(0, 30)))
    theirs = librosa.util.peak_pick(envelope, pre_max=settings["before_max"],
                                    post_max=settings["after_max"],
                                    pre_avg=settings["before_mean"],
                                    post_avg=settings["after_mean"],
                                    delta=settings["delta"], wait=settings["wait"])
    np.testing.assert_array_equal(pick_peaks(envelope, **settings), theirs)


def test_pick_peaks_on_a_hand_made_envelope():
    """Peaks at 2, 6 and 14; 7 is 6's equal but comes too soon (wait 2); 10 is a local
    maximum only 0.1 above its neighbours' mean."""
    x = np.zeros(18)
    x[[2, 6, 7, 14]] = 1.0
    x[10] = 0.15
    assert pick_peaks(x, before_max=1, after_max=2, before_mean=1, after_mean=2, delta=0.2,
                      wait=2).tolist() == [2, 6, 14]
    # a flat envelope with no margin asked for: every sample ties its maximum and its mean,
    # so the peaks are as dense as `wait` allows
    assert pick_peaks(np.ones(10), before_max=2, after_max=1, before_mean=3, after_mean=3,
                      delta=0.0, wait=3).tolist() == [0, 4, 8]


def _librosa_measures(samples: np.ndarray) -> ft.FrameMeasures:
    """The measures as posecast took them from librosa before issue 35, whole clip at once."""
    frequencies = librosa.fft_frequencies(sr=ft.SAMPLE_RATE, n_fft=ft.FFT_SIZE)
    band = (frequencies >= ft.CENTROID_BAND[0]) & (frequencies <= ft.CENTROID_BAND[1])
    last = ft.analysis_frames(samples)
    power = np.abs(librosa.stft(ft.frame_segment(samples, 0, last, ft.FFT_SIZE),
                                n_fft=ft.FFT_SIZE, hop_length=ft.HOP, win_length=ft.WINDOW,
                                center=False)) ** 2
    mel_db = librosa.power_to_db(librosa.filters.mel(sr=ft.SAMPLE_RATE, n_fft=ft.FFT_SIZE,
                                                     n_mels=ft.ONSET_BANDS) @ power,
                                 top_db=None)
    return ft.FrameMeasures(
        rms=librosa.feature.rms(y=ft.frame_segment(samples, 0, last, ft.WINDOW),
                                frame_length=ft.WINDOW, hop_length=ft.HOP, center=False)[0],
        centroid=librosa.feature.spectral_centroid(S=power[band], freq=frequencies[band])[0],
        f0=librosa.yin(ft.frame_segment(samples, 0, last, ft.PITCH_WINDOW), fmin=70, fmax=400,
                       sr=ft.SAMPLE_RATE, frame_length=ft.PITCH_WINDOW, hop_length=ft.HOP,
                       center=False),
        flatness=librosa.feature.spectral_flatness(S=power, power=1.0)[0],
        flux=librosa.onset.onset_strength(S=np.concatenate([mel_db[:, :1], mel_db], axis=1),
                                          lag=1, max_size=1, center=False)[1:])


def test_frame_measures_match_librosa(speech_16k):
    ours, theirs = ft.frame_measures(speech_16k), _librosa_measures(speech_16k)
    for name in ("rms", "centroid", "flatness", "flux"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=2e-3,
                                   atol=1e-4, err_msg=name)


def test_beats_match_librosa_onset_detection(speech_16k):
    """The bundled speech's loudness-weighted flux, and random envelopes (peakier ones catch a
    window one sample off)."""
    measures = ft.frame_measures(speech_16k)
    decibels = 20 * np.log10(np.maximum(measures.rms, 1e-10))
    loudness = np.clip((decibels - (decibels.max() - 45)) / 39, 0, 1)
    rng = np.random.default_rng(0)
    envelopes = [measures.flux * loudness] + [rng.random(3000) ** power for power in (1, 4, 8)]
    for envelope in envelopes:
        theirs = librosa.onset.onset_detect(onset_envelope=envelope, sr=ft.SAMPLE_RATE,
                                            hop_length=ft.HOP, units="time",
                                            wait=round(ft.BEAT_GAP * ft.SAMPLE_RATE / ft.HOP),
                                            delta=0.2)
        assert len(theirs) >= 8
        np.testing.assert_allclose(ft.beat_times(envelope), theirs)
    assert len(ft.beat_times(np.zeros(100))) == 0  # silence: no beats
