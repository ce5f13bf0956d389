"""Tests for diffx.functional.utility: gain, fractional delay and linear FFT convolution."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.functional.utility import MAX_ABS_GAIN_DB, fft_convolve, fractional_delay, gain
from tests.conftest import requires_cuda

SR = 16000.0


def _combos(n: int):
    """Every way of choosing which of ``n`` inputs require grad (at least one)."""
    return [c for c in itertools.product([False, True], repeat=n) if any(c)]


def _leaves(values, flags):
    return [v.detach().clone().requires_grad_(f) for v, f in zip(values, flags, strict=True)]


def _tol(dtype):
    return 1e-12 if dtype == torch.float64 else 2e-6


# --- gain -----------------------------------------------------------------------------------


def test_gain_matches_numpy(dtype):
    x = torch.randn(3, 2, 50, dtype=dtype)
    g = torch.tensor([-12.0, 0.0, 6.5], dtype=dtype)
    y = gain(x, g)
    expected = x.double().numpy() * 10.0 ** (g.double().numpy() / 20.0)[:, None, None]
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=_tol(dtype) * 10, atol=0)
    assert y.dtype == dtype


@pytest.mark.parametrize("flags", _combos(2))
def test_gain_gradcheck(flags):
    x = torch.randn(2, 2, 8, dtype=torch.float64)
    g = torch.tensor([-3.0, 4.0], dtype=torch.float64)
    inputs = _leaves([x, g], flags)
    assert torch.autograd.gradcheck(gain, inputs)
    assert torch.autograd.gradgradcheck(gain, inputs)


def test_gain_extremes_finite():
    for x in (torch.zeros(2, 1, 16), torch.ones(2, 1, 16)):
        for g_db in (-MAX_ABS_GAIN_DB, MAX_ABS_GAIN_DB):
            xx = x.clone().requires_grad_()
            g = torch.full((2,), g_db, requires_grad=True)
            y = gain(xx, g)
            y.sum().backward()
            assert torch.isfinite(y).all()
            assert torch.isfinite(xx.grad).all() and torch.isfinite(g.grad).all()


def test_gain_bad_inputs():
    x = torch.randn(2, 1, 8)
    with pytest.raises(ValueError, match="x"):
        gain(x.clone().fill_(float("nan")), 0.0)
    with pytest.raises(ValueError, match="gain_db"):
        gain(x, torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match="gain_db"):
        gain(x, torch.zeros(3))
    with pytest.raises(ValueError, match="gain_db"):
        gain(x, MAX_ABS_GAIN_DB + 1)
    with pytest.raises(ValueError, match="x"):
        gain(torch.randn(8), 0.0)


# --- fft_convolve ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "T,K", [(7, 3), (8, 4), (8, 3), (7, 4), (1, 1), (16, 16), (15, 1), (9, 30)]
)
def test_fft_convolve_matches_scipy(T, K, dtype):
    # Odd and even signal, filter and full lengths: irfft without n would fail the even ones.
    rng = np.random.default_rng(T * 100 + K)
    x = rng.standard_normal((2, 3, T))
    h = rng.standard_normal((2, 3, K))
    full = scipy.signal.fftconvolve(x, h, mode="full", axes=-1)
    y_full = fft_convolve(torch.tensor(x, dtype=dtype), torch.tensor(h, dtype=dtype), "full")
    y_causal = fft_convolve(torch.tensor(x, dtype=dtype), torch.tensor(h, dtype=dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert y_full.shape[-1] == T + K - 1 and y_causal.shape[-1] == T
    np.testing.assert_allclose(y_full.double().numpy(), full, atol=tol * 10)
    np.testing.assert_allclose(y_causal.double().numpy(), full[..., :T], atol=tol * 10)


def test_fft_convolve_broadcasts():
    x = torch.randn(3, 2, 20, dtype=torch.float64)
    h = torch.randn(1, 2, 5, dtype=torch.float64)
    y = fft_convolve(x, h)
    for b in range(3):
        for c in range(2):
            ref = np.convolve(x[b, c].numpy(), h[0, c].numpy())[:20]
            np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)
    # Any leading shape works, as does a 1-D filter.
    assert fft_convolve(torch.randn(20), torch.randn(5)).shape == (20,)


@pytest.mark.parametrize("flags", _combos(2))
@pytest.mark.parametrize("mode", ["causal", "full"])
def test_fft_convolve_gradcheck(flags, mode):
    x = torch.randn(2, 1, 7, dtype=torch.float64)
    h = torch.randn(2, 1, 4, dtype=torch.float64)
    inputs = _leaves([x, h], flags)

    def fn(a, b):
        return fft_convolve(a, b, mode)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_fft_convolve_bad_inputs():
    with pytest.raises(ValueError, match="x"):
        fft_convolve(torch.tensor([1.0, float("nan")]), torch.ones(2))
    with pytest.raises(ValueError, match="h"):
        fft_convolve(torch.ones(4), torch.tensor([float("inf")]))
    with pytest.raises(ValueError, match="mode"):
        fft_convolve(torch.ones(4), torch.ones(2), mode="same")
    with pytest.raises(ValueError, match="broadcast"):
        fft_convolve(torch.ones(2, 4), torch.ones(3, 2))


# --- fractional_delay -----------------------------------------------------------------------


def _windowed_tone(t: np.ndarray, centre: float, width: float, freq: float) -> np.ndarray:
    """A Gaussian-windowed tone: effectively band-limited and zero at both ends."""
    return np.exp(-0.5 * ((t - centre) / width) ** 2) * np.sin(2 * np.pi * freq * (t - centre))


@pytest.mark.parametrize("n", [256, 255])
def test_fractional_delay_matches_analytic_band_limited_signal(n):
    sr = 1000.0
    delays_samples = np.array([0.0, 0.37, 3.5, 10.91])
    t = np.arange(n, dtype=np.float64)
    x = _windowed_tone(t, n / 2 - 20, 12.0, 0.11)  # frequency in cycles per sample
    expected = np.stack([_windowed_tone(t - d, n / 2 - 20, 12.0, 0.11) for d in delays_samples])
    x_t = torch.tensor(x).expand(len(delays_samples), 2, n).contiguous()
    delay_ms = torch.tensor(delays_samples * 1000.0 / sr)
    y = fractional_delay(x_t, delay_ms, sr)
    np.testing.assert_allclose(y[:, 0].numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(y[:, 1].numpy(), expected, atol=1e-10)
    y32 = fractional_delay(x_t.float(), delay_ms.float(), sr)
    np.testing.assert_allclose(y32[:, 0].double().numpy(), expected, atol=2e-6)


@pytest.mark.parametrize("n", [100, 101])
def test_fractional_delay_integer_delays_are_exact_shifts(n, dtype):
    # Not band-limited on purpose (white noise with hard edges): an integer delay must still be
    # an exact shift with nothing wrapped around.
    x = torch.randn(4, 2, n, dtype=dtype)
    delays = [0, 1, 17, n + 5]
    y = fractional_delay(x, torch.tensor(delays, dtype=dtype) * (1000.0 / SR), SR)
    atol = 1e-12 if dtype == torch.float64 else 2e-6
    for i, d in enumerate(delays):
        expected = torch.zeros_like(x[i])
        if d < n:
            expected[:, d:] = x[i, :, : n - d]
        torch.testing.assert_close(y[i], expected, atol=atol, rtol=0)


def test_fractional_delay_gradient_is_minus_time_derivative():
    # d/dd x(t - d) = -x'(t - d), checked on the analytic band-limited tone.
    sr, n, d = 1000.0, 200, 2.3
    t = np.arange(n, dtype=np.float64)
    x = torch.tensor(_windowed_tone(t, 90.0, 10.0, 0.07))[None, None]
    delay_ms = torch.tensor(d * 1000.0 / sr, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, dtype=torch.float64)
    (fractional_delay(x, delay_ms, sr)[0, 0] * w).sum().backward()
    eps = 1e-5
    deriv = (
        _windowed_tone(t - d + eps, 90.0, 10.0, 0.07)
        - _windowed_tone(t - d - eps, 90.0, 10.0, 0.07)
    ) / (2 * eps)
    expected = -(deriv * w.numpy()).sum() * sr / 1000.0  # chain rule: samples per ms
    assert float(delay_ms.grad) == pytest.approx(expected, rel=1e-6)


def test_fractional_delay_batch_consistency():
    x = torch.randn(3, 2, 64, dtype=torch.float64)
    delay = torch.tensor([0.1, 1.3, 2.9], dtype=torch.float64)
    y = fractional_delay(x, delay, SR)
    for b in range(3):
        torch.testing.assert_close(y[b : b + 1], fractional_delay(x[b : b + 1], delay[b], SR))


@pytest.mark.parametrize("flags", _combos(2))
def test_fractional_delay_gradcheck(flags):
    x = torch.randn(2, 1, 9, dtype=torch.float64)
    delay_ms = torch.tensor([0.07, 0.21], dtype=torch.float64)
    inputs = _leaves([x, delay_ms], flags)

    def fn(a, d):
        return fractional_delay(a, d, SR)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_fractional_delay_extremes_finite():
    for x in (torch.zeros(2, 1, 32), torch.ones(2, 1, 32)):
        for d in (0.0, 5.0):
            xx = x.clone().requires_grad_()
            delay = torch.full((2,), d, requires_grad=True)
            y = fractional_delay(xx, delay, SR)
            y.sum().backward()
            assert torch.isfinite(y).all()
            assert torch.isfinite(xx.grad).all() and torch.isfinite(delay.grad).all()


def test_fractional_delay_bad_inputs():
    x = torch.randn(2, 1, 8)
    with pytest.raises(ValueError, match="x"):
        fractional_delay(torch.full((2, 1, 8), math.nan), 1.0, SR)
    with pytest.raises(ValueError, match="delay_ms"):
        fractional_delay(x, -1.0, SR)
    with pytest.raises(ValueError, match="delay_ms"):
        fractional_delay(x, torch.tensor([1.0, math.nan]), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        fractional_delay(x, 1.0, 0.0)


def test_fractional_delay_is_continuous_across_integers():
    x = torch.randn(1, 1, 50, dtype=torch.float64)
    below = fractional_delay(x, torch.tensor(3.0 - 1e-9) * 1000.0 / SR, SR)
    at = fractional_delay(x, torch.tensor(3.0) * 1000.0 / SR, SR)
    torch.testing.assert_close(below, at, atol=1e-7, rtol=0)


@requires_cuda
def test_utility_cuda_matches_cpu():
    x = torch.randn(3, 2, 301, dtype=torch.float64)
    h = torch.randn(3, 1, 40, dtype=torch.float64)
    delay = torch.tensor([0.0, 1.37, 20.2], dtype=torch.float64)
    torch.testing.assert_close(fft_convolve(x.cuda(), h.cuda()).cpu(), fft_convolve(x, h))
    torch.testing.assert_close(
        fractional_delay(x.cuda(), delay.cuda(), SR).cpu(), fractional_delay(x, delay, SR)
    )
    torch.testing.assert_close(gain(x.cuda(), delay.cuda()).cpu(), gain(x, delay))


# ------------------------------------------------------------------ issue 20 regressions
@pytest.mark.parametrize("delay_ms", [1e30, 3_600_001.0, math.inf, math.nan, -1e-9])
def test_fractional_delay_refuses_absurd_delays(delay_ms):
    """1e30 ms returned NaN (the int64 sample index overflowed)."""
    with pytest.raises(ValueError, match="^delay_ms"):
        fractional_delay(torch.ones(1, 1, 64), delay_ms, 48000)


def test_fractional_delay_longer_than_the_signal_is_silence():
    x = torch.randn(2, 1, 100, dtype=torch.float64)
    y = fractional_delay(x, torch.tensor([3_600_000.0, 2.5 + 100 / 48.0]), 48000)
    assert bool((y == 0).all())
