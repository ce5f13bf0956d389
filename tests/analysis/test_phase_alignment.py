"""Alignment measurements and delay baselines against analytic results and scipy."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.analysis.phase_alignment import (
    apply_delay,
    comb_loss_db,
    estimate_response,
    fractional_delay_estimate,
    integer_delay,
    measure_effect_response,
    normalized_cross_correlation,
    parallel_mix,
    unwrap_coherent,
)

SR = 44100


def _noise(n=SR * 4, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def test_comb_loss_of_identical_signals_is_zero_and_of_inverted_ones_is_total():
    x = _noise()
    assert comb_loss_db(x, x) == pytest.approx(0.0, abs=1e-9)
    assert comb_loss_db(x, 0.3 * x) == pytest.approx(0.0, abs=1e-9)  # magnitude does not count
    assert comb_loss_db(x, -x) < -100


def test_comb_loss_of_independent_noises_matches_the_rayleigh_expectation():
    # |X|, |Y| Rayleigh with E|X|^2 = s^2 and E|X| = sqrt(pi)/2 s: the in-phase energy is
    # 2 s^2 + 2 (pi / 4) s^2 and the sum's is 2 s^2, so the loss is -10 log10(1 + pi / 4).
    loss = comb_loss_db(_noise(SR * 20, 1), _noise(SR * 20, 2))
    assert loss == pytest.approx(-10 * math.log10(1 + math.pi / 4), abs=0.03)


def test_comb_loss_of_white_noise_and_its_long_delay_is_three_db():
    # |X + X e^{-jwD}|^2 = 2 |X|^2 (1 + cos wD), which averages to 2 |X|^2 over w, against
    # the in-phase 4 |X|^2: -10 log10(2). "Long" against a period of the bins (many turns of
    # cos wD across the spectrum) but short against the STFT frame (2048), within which the
    # delayed copy is the same content.
    x = _noise(SR * 20, 3)
    y = apply_delay(x, 20.0)
    assert comb_loss_db(x, y) == pytest.approx(-10 * math.log10(2), abs=0.05)


def test_ncc_against_numpy():
    x, y = _noise(1000, 4), _noise(1000, 5)
    expected = np.corrcoef(x - x.mean(), y - y.mean())[0, 1]
    x, y = x - x.mean(), y - y.mean()
    assert normalized_cross_correlation(x, y) == pytest.approx(expected, rel=1e-9)
    assert parallel_mix(x, x).ncc == pytest.approx(1.0)


@pytest.mark.parametrize("delay", [0, 7, -12, 250])
def test_integer_delay_and_polarity(delay):
    x = _noise(SR, 6)
    for polarity in (1, -1):
        y = polarity * apply_delay(x, float(delay))
        d = integer_delay(x, y, max_delay_samples=1000)
        assert (d.delay_samples, d.polarity) == (delay, polarity)
        assert d.peak > 0.95


@pytest.mark.parametrize("delay", [3.4, -5.75, 12.5])
def test_fractional_delay_estimate_of_band_limited_noise(delay):
    # Low-passed noise: the correlation peak is smooth, so the parabola is accurate.
    sos = scipy.signal.butter(8, 5000, fs=SR, output="sos")
    x = scipy.signal.sosfilt(sos, _noise(SR * 2, 7))
    y = apply_delay(x, delay)
    d = fractional_delay_estimate(x, y, max_delay_samples=100)
    assert d.delay_samples == pytest.approx(delay, abs=0.05)
    # Aligning by the estimate leaves almost nothing to comb filtering.
    assert comb_loss_db(apply_delay(x, d.delay_samples), y) > -0.05


def test_apply_delay_is_exact_for_integers_and_matches_a_sinc_interpolator():
    x = _noise(512, 8)
    np.testing.assert_array_equal(apply_delay(x, 3.0)[3:], x[:-3])
    np.testing.assert_array_equal(apply_delay(x, -3.0)[:-3], x[3:])
    np.testing.assert_array_equal(apply_delay(x, 3.0, polarity=-1)[3:], -x[:-3])
    # A windowed tone delayed by 0.3 samples equals the analytic tone 0.3 samples later.
    n = np.arange(4096)
    window = np.hanning(4096)
    tone = lambda t: np.sin(2 * np.pi * 1000 / SR * t) * np.interp(t, n, window)  # noqa: E731
    np.testing.assert_allclose(apply_delay(tone(n), 0.3), tone(n - 0.3), atol=2e-3)


def test_estimate_response_of_a_butterworth_matches_scipy():
    sos = scipy.signal.butter(2, 1000, fs=SR, output="sos")
    x = _noise(SR * 4, 9)
    y = scipy.signal.sosfilt(sos, x)
    r = estimate_response(x, y, SR, n_fft=4096)
    band = (r.freqs_hz > 50) & (r.freqs_hz < 5000)
    _, h = scipy.signal.sosfreqz(sos, worN=r.freqs_hz[band], fs=SR)
    err = np.angle(r.response[band] / h)
    assert np.degrees(np.abs(err)).max() < 2.0
    assert r.coherence[band].min() > 0.99


def test_measure_effect_response_with_noise_and_sweep():
    sos = scipy.signal.butter(2, [200, 3000], btype="bandpass", fs=SR, output="sos")

    def effect(x: torch.Tensor) -> torch.Tensor:
        y = scipy.signal.sosfilt(sos, x.reshape(-1).numpy())
        return torch.from_numpy(y).float().reshape(1, 1, -1)

    for method in ("noise", "sweep"):
        r = measure_effect_response(effect, SR, method=method, seconds=4.0)
        band = (r.freqs_hz > 100) & (r.freqs_hz < 8000)
        _, h = scipy.signal.sosfreqz(sos, worN=r.freqs_hz[band], fs=SR)
        err = np.degrees(np.abs(np.angle(r.response[band] / h)))
        assert err.max() < 3.0, method


def test_unwrap_coherent_ignores_noisy_bins():
    f = np.linspace(0, 1, 400)
    true = -40 * f**2  # many turns
    coherence = np.ones_like(f)
    noisy = np.angle(np.exp(1j * true))
    rng = np.random.default_rng(0)
    noisy[150:170] = rng.uniform(-np.pi, np.pi, 20)  # a burst of noise
    coherence[150:170] = 0.0
    unwrapped = unwrap_coherent(noisy, coherence)
    good = coherence > 0
    np.testing.assert_allclose(unwrapped[good], true[good], atol=0.02)
    # numpy.unwrap adds random turns after the burst.
    assert np.abs(np.unwrap(noisy)[good] - true[good]).max() > 1.0


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros(100), np.ones(100), "silent"),
        (np.ones(100), np.ones(90), "differ in length"),
        (np.full(100, np.nan), np.ones(100), "NaN"),
        (np.ones((2, 100)), np.ones((2, 100)), "one channel"),
    ],
)
def test_bad_input_is_named(x, y, message):
    with pytest.raises(ValueError, match=message):
        estimate_response(x, y, SR, n_fft=64)
