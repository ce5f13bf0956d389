"""WORLD features and the post-filter measures, against analytic results, numpy and pysptk."""

import math

import numpy as np
import pytest
from scipy import signal

from diffx.analysis.acoustic import (
    MCD_FACTOR_DB,
    WorldSettings,
    gv_ratio_db,
    import_world,
    interpolate_log_f0,
    mel_cepstral_distortion_db,
    modulation_spectrum_db,
    modulation_spectrum_distance_db,
    read_streams_json,
    world_analysis,
    world_synthesis,
)
from diffx.functional.postfilter import StreamLayout, global_variance


def test_mcd_equals_rms_log_spectral_distance_without_warping():
    # Parseval: with alpha = 0, SPTK's ln|H(w)| = c0 + sum_m c_m cos(w m), so the RMS over
    # frequency of the difference of two power spectra in dB is MCD (without c0).
    _, pysptk = import_world()
    rng = np.random.default_rng(0)
    a = rng.normal(scale=0.3, size=(5, 25)) / np.arange(1, 26)
    b = a + rng.normal(scale=0.05, size=a.shape)
    fft_size = 4096
    sp_a = pysptk.mc2sp(a, 0.0, fft_size)
    sp_b = pysptk.mc2sp(b, 0.0, fft_size)
    diff_db = 10 * np.log10(sp_a) - 10 * np.log10(sp_b)
    # mean over the full circle = the half spectrum with the end bins counted once
    weights = np.full(fft_size // 2 + 1, 2.0)
    weights[[0, -1]] = 1.0
    weights /= weights.sum()
    diff_db -= (diff_db * weights).sum(axis=1, keepdims=True)  # remove the c0 (level) part
    rms = np.sqrt((diff_db**2 * weights).sum(axis=1)).mean()
    assert mel_cepstral_distortion_db(a, b) == pytest.approx(rms, rel=1e-6)


def test_mcd_of_a_constant_offset_and_mask():
    a = np.zeros((10, 8))
    b = a.copy()
    b[:, 3] = 0.5
    b[5:, 0] = 9.0  # c0 is left out
    assert mel_cepstral_distortion_db(a, b) == pytest.approx(MCD_FACTOR_DB * 0.5)
    assert MCD_FACTOR_DB == pytest.approx(6.1418, abs=1e-4)  # 10 sqrt(2) / ln 10
    mask = np.arange(10) < 4
    b[4:, 5] = 1.0
    assert mel_cepstral_distortion_db(a, b, mask) == pytest.approx(MCD_FACTOR_DB * 0.5)


def test_gv_ratio_of_a_scaled_trajectory():
    rng = np.random.default_rng(1)
    natural = [rng.normal(size=(200, 4)) + 3 for _ in range(3)]
    predicted = [0.5 * (u - u.mean(0)) + u.mean(0) for u in natural]
    ratio = gv_ratio_db(predicted, natural)
    np.testing.assert_allclose(ratio, 20 * math.log10(0.5), atol=1e-9)
    gv = global_variance(natural)
    np.testing.assert_allclose(gv, np.mean([u.var(0) for u in natural], axis=0))
    with pytest.raises(ValueError, match="at least 2"):
        global_variance([np.zeros((1, 3))])


def test_modulation_spectrum_peaks_at_the_modulation_frequency_and_scales():
    frames = np.arange(1024)
    bin_ = 16  # cycles per 128-frame segment
    x = np.stack([np.sin(2 * np.pi * bin_ * frames / 128), np.cos(2 * np.pi * 5 * frames / 128)], 1)
    ms = modulation_spectrum_db(x, 128)
    assert ms.shape == (65, 2)
    assert ms[:, 0].argmax() == bin_ and ms[:, 1].argmax() == 5
    noise = np.random.default_rng(2).normal(size=(500, 3))  # power in every bin
    distance = modulation_spectrum_distance_db([3 * noise], [noise])
    assert distance == pytest.approx(20 * math.log10(3), rel=1e-6)


def test_interpolate_log_f0_against_numpy():
    f0 = np.array([0, 0, 100, 0, 0, 400, 0])
    got = interpolate_log_f0(f0, 71)
    np.testing.assert_allclose(got[[0, 1, 2, 5, 6]], np.log([100, 100, 100, 400, 400]))
    np.testing.assert_allclose(got[3:5], np.interp([3, 4], [2, 5], np.log([100, 400])))
    assert np.all(interpolate_log_f0(np.zeros(4), 71) == math.log(71))


def test_stream_layout_split_join_and_errors(tmp_path):
    layout = StreamLayout(("mgc", "lf0", "vuv", "bap"), (4, 1, 1, 2))
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    parts = layout.split(x)
    assert parts["bap"].shape == (3, 2) and parts["lf0"][0, 0] == 4
    np.testing.assert_array_equal(layout.join(parts), x)
    with pytest.raises(ValueError, match="8"):
        layout.split(np.zeros((3, 7)))
    with pytest.raises(KeyError, match="unknown stream"):
        layout.span("f0")
    with pytest.raises(ValueError, match="unique"):
        StreamLayout(("a", "a"), (1, 1))
    settings = WorldSettings(16000)
    settings.save(tmp_path / "streams.json", layout)
    assert read_streams_json(tmp_path / "streams.json") == (layout, settings)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        read_streams_json(tmp_path / "bad.json")


def _pulse_train(f0_hz, sample_rate, seconds, b, a):
    n = int(sample_rate * seconds)
    x = np.zeros(n)
    x[:: int(round(sample_rate / f0_hz))] = 1.0
    return signal.lfilter(b, a, x) * 0.1


def test_world_analysis_finds_f0_and_the_filter_envelope():
    sample_rate, f0 = 16000, 200.0
    b, a = signal.iirpeak(1500, 3, fs=sample_rate)  # a resonance at 1.5 kHz
    b, a = np.polymul(b, [1.0]), np.polymul(a, [1.0, -0.7])  # plus a low-pass tilt
    audio = _pulse_train(f0, sample_rate, 1.0, b, a)
    settings = WorldSettings(sample_rate, alpha=0.0, mgc_order=39)
    feats = world_analysis(audio, settings)
    frames = feats["mgc"].shape[0]
    assert frames == int(1000 / 5) + 1
    middle = slice(20, frames - 20)
    assert feats["vuv"][middle].mean() == 1.0
    np.testing.assert_allclose(np.exp(feats["lf0"][middle]), f0, rtol=0.01)
    # The envelope follows |H|^2 (up to a constant level) between harmonics 1 and 35.
    _, pysptk = import_world()
    envelope_db = 10 * np.log10(
        pysptk.mc2sp(feats["mgc"][middle].astype(np.float64), 0.0, settings.fft_size)
    )
    freqs = np.arange(settings.fft_size // 2 + 1) * sample_rate / settings.fft_size
    _, h = signal.freqz(b, a, worN=freqs, fs=sample_rate)
    truth_db = 20 * np.log10(np.maximum(np.abs(h), 1e-12))  # a zero at DC
    band = (freqs > 200) & (freqs < 7000)
    error = envelope_db.mean(0)[band] - truth_db[band]
    error -= error.mean()
    assert np.sqrt(np.mean(error**2)) < 2.0


def test_world_round_trip_on_a_real_phrase():
    from diffx.data.timbre_transfer import instrument_files
    from diffx.io.audio import load_audio

    audio, _ = load_audio(instrument_files("violin", "test")[0], 16000, mono=True)
    audio = audio[0, : 16000 * 2].numpy()
    settings = WorldSettings(16000, f0_floor_hz=100, f0_ceil_hz=2000)
    feats = world_analysis(audio, settings)
    resynthesized = world_synthesis(feats, settings)
    # WORLD writes whole frames: 401 frames of 80 samples for 32000 samples.
    assert 0 <= len(resynthesized) - len(audio) <= 80
    again = world_analysis(resynthesized[: len(audio)], settings)
    n = min(len(feats["mgc"]), len(again["mgc"]))
    voiced = feats["vuv"][:n, 0] > 0
    assert voiced.mean() > 0.8
    # WORLD resynthesis is not transparent, but its envelope survives to a few dB.
    assert mel_cepstral_distortion_db(again["mgc"][:n], feats["mgc"][:n], voiced) < 3.0
    assert np.median(np.abs(again["lf0"][:n][voiced] - feats["lf0"][:n][voiced])) < 0.01


def test_world_bad_input_and_silence():
    settings = WorldSettings(16000)
    with pytest.raises(ValueError, match="NaN"):
        world_analysis(np.array([0.0, np.nan] * 800), settings)
    with pytest.raises(ValueError, match="1-D"):
        world_analysis(np.zeros((2, 100)), settings)
    silent = world_analysis(np.zeros(8000), settings)
    assert silent["vuv"].sum() == 0
    assert all(np.all(np.isfinite(v)) for v in silent.values())
    np.testing.assert_allclose(silent["lf0"], math.log(71.0))
    with pytest.raises(ValueError, match="missing"):
        world_synthesis({"mgc": silent["mgc"]}, settings)
    with pytest.raises(ValueError, match="f0_floor_hz"):
        WorldSettings(16000, f0_floor_hz=900, f0_ceil_hz=800)
