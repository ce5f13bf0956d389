"""Tests for diffx.functional.reverb: convolution reverb and the noise-shaped multiband IR."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.functional.reverb import (
    MAX_ABS_BAND_GAIN_DB,
    MAX_RT60_S,
    MIN_RT60_S,
    band_masks,
    convolution_reverb,
    crossover_frequencies,
    noise_reverb,
    noise_reverb_ir,
)
from tests.conftest import requires_cuda


def _combos(n: int):
    return [c for c in itertools.product([False, True], repeat=n) if any(c)]


def _leaves(values, flags):
    return [v.detach().clone().requires_grad_(f) for v, f in zip(values, flags, strict=True)]


# --- convolution_reverb ---------------------------------------------------------------------


@pytest.mark.parametrize("T,K", [(64, 17), (65, 16), (30, 40)])
def test_convolution_reverb_matches_scipy(T, K, dtype):
    rng = np.random.default_rng(T + K)
    x = rng.standard_normal((2, 2, T))
    ir = rng.standard_normal((2, 2, K))
    mix = np.array([0.3, 1.0])
    wet = scipy.signal.fftconvolve(x, ir, axes=-1)[..., :T]
    expected = (1 - mix)[:, None, None] * x + mix[:, None, None] * wet
    y = convolution_reverb(
        torch.tensor(x, dtype=dtype), torch.tensor(ir, dtype=dtype), torch.tensor(mix, dtype=dtype)
    )
    atol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(y.double().numpy(), expected, atol=atol)


def test_convolution_reverb_mix_zero_is_exactly_dry():
    x = torch.randn(3, 2, 100)
    ir = torch.randn(1, 1, 50) * 10
    assert torch.equal(convolution_reverb(x, ir, 0.0), x)


def test_convolution_reverb_broadcasts_mono_ir():
    x = torch.randn(2, 2, 40, dtype=torch.float64)
    ir = torch.randn(1, 1, 7, dtype=torch.float64)
    y = convolution_reverb(x, ir, 1.0)
    for b, c in itertools.product(range(2), range(2)):
        ref = np.convolve(x[b, c].numpy(), ir[0, 0].numpy())[:40]
        np.testing.assert_allclose(y[b, c].numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("flags", _combos(3))
def test_convolution_reverb_gradcheck(flags):
    x = torch.randn(2, 1, 8, dtype=torch.float64)
    ir = torch.randn(2, 1, 5, dtype=torch.float64)
    mix = torch.tensor([0.2, 0.7], dtype=torch.float64)
    inputs = _leaves([x, ir, mix], flags)
    assert torch.autograd.gradcheck(convolution_reverb, inputs)
    assert torch.autograd.gradgradcheck(convolution_reverb, inputs)


def test_convolution_reverb_bad_inputs():
    x = torch.randn(2, 2, 16)
    ir = torch.randn(1, 1, 4)
    with pytest.raises(ValueError, match="x"):
        convolution_reverb(torch.full_like(x, math.nan), ir, 0.5)
    with pytest.raises(ValueError, match="ir"):
        convolution_reverb(x, torch.full_like(ir, math.inf), 0.5)
    with pytest.raises(ValueError, match="ir"):
        convolution_reverb(x, torch.randn(3, 1, 4), 0.5)
    with pytest.raises(ValueError, match="ir"):
        convolution_reverb(x, torch.randn(1, 3, 4), 0.5)
    with pytest.raises(ValueError, match="mix"):
        convolution_reverb(x, ir, 1.5)


# --- filterbank -----------------------------------------------------------------------------


@pytest.mark.parametrize("n_bands", [1, 2, 6, 12])
def test_band_masks_are_a_partition_of_unity(n_bands):
    sr = 48000.0
    crossovers = crossover_frequencies(n_bands, sr)
    assert len(crossovers) == n_bands - 1
    assert all(a < b for a, b in itertools.pairwise(crossovers))
    masks = band_masks(4097, sr, crossovers)
    assert masks.shape == (n_bands, 4097)
    assert bool((masks >= 0).all())
    torch.testing.assert_close(masks.sum(0), torch.ones(4097, dtype=torch.float64))
    # Each band is exactly one at the geometric centre of its neighbouring crossovers.
    freqs = np.linspace(0, sr / 2, 4097)
    for k in range(1, n_bands - 1):
        centre = math.sqrt(crossovers[k - 1] * crossovers[k])
        assert float(masks[k, np.argmin(np.abs(freqs - centre))]) == pytest.approx(1.0)


# --- noise_reverb_ir ------------------------------------------------------------------------


def _schroeder_rt60(energy: np.ndarray, sr: float, hi_db=-5.0, lo_db=-35.0) -> float:
    """RT60 from a straight-line fit to the Schroeder energy decay curve between two levels."""
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    idx = np.nonzero((edc_db <= hi_db) & (edc_db >= lo_db))[0]
    slope_db_per_s = np.polyfit(idx / sr, edc_db[idx], 1)[0]
    return -60.0 / slope_db_per_s


def _core_band(ir: np.ndarray, sr: float, lo: float, hi: float) -> np.ndarray:
    """Band-pass with a sin^2 (in log frequency) response between lo and hi: smooth, so short."""
    n = 2 * ir.shape[-1]
    f = np.fft.rfftfreq(n, 1 / sr)
    pos = np.clip((np.log2(np.maximum(f, 1e-3)) - np.log2(lo)) / np.log2(hi / lo), 0, 1)
    return np.fft.irfft(np.fft.rfft(ir, n) * np.sin(np.pi * pos) ** 2, n)[..., : ir.shape[-1]]


def test_noise_reverb_ir_band_decays_match_rt60():
    # The Schroeder decay of each band (measured in the band's core, away from the
    # crossovers, so neighbours do not leak in) must match the requested RT60 within 10 %.
    # A band of noise has a random envelope, so the energy is averaged over 16 independent
    # noise channels (the ensemble the RT60 describes).
    sr, n_bands, n_ch = 32000.0, 8, 16
    rt60 = np.array([1.4, 0.9, 1.1, 0.5, 0.7, 0.3, 0.6, 0.4])
    gains = np.array([0.0, -6.0, -3.0, -10.0, 0.0, -2.0, -8.0, -4.0])
    ir = noise_reverb_ir(
        torch.tensor(rt60)[None],
        torch.tensor(gains)[None],
        sr,
        int(2.5 * sr),
        n_channels=n_ch,
        generator=torch.Generator().manual_seed(1234),
    )[0].numpy()
    crossovers = crossover_frequencies(n_bands, sr)
    half_width = np.log2(crossovers[1] / crossovers[0]) / 4  # each crossover's half width
    for k in range(n_bands):
        lo = 20.0 if k == 0 else crossovers[k - 1] * 2**half_width
        hi = 0.45 * sr if k == n_bands - 1 else crossovers[k] * 2**-half_width
        energy = (_core_band(ir, sr, lo, hi) ** 2).sum(0)
        measured = _schroeder_rt60(energy, sr)
        assert measured == pytest.approx(rt60[k], rel=0.10), f"band {k}"


def test_noise_reverb_ir_flat_settings_give_unit_energy_white_noise():
    # With one RT60 and 0 dB everywhere the bands add back to the noise: the IR is white noise
    # under one envelope of unit energy.
    sr = 16000.0
    ir = noise_reverb_ir(
        0.5, 0.0, sr, 16000, n_channels=8, generator=torch.Generator().manual_seed(3)
    )
    energy = (ir**2).sum(-1)
    assert float(energy.mean()) == pytest.approx(1.0, rel=0.05)
    rate = math.log(1000.0) / (0.5 * sr)
    envelope = math.sqrt(-math.expm1(-2 * rate)) * np.exp(-rate * np.arange(16000))
    noise = ir[0].numpy() / envelope
    assert np.std(noise) == pytest.approx(1.0, rel=0.02)
    f, psd = scipy.signal.welch(noise, fs=sr, nperseg=512, axis=-1)
    psd = psd.mean(0)[2:-2]
    assert np.std(psd) / np.mean(psd) < 0.1


def test_noise_reverb_ir_band_gain_scales_only_its_band():
    # With one RT60 in every band, IR / envelope is the noise split by the masks and summed
    # with the band gains, so raising band 2 by 6 dB adds exactly (10^(6/20) - 1) * mask_2 * N
    # to the spectrum (the bands are filtered circularly over the IR length).
    sr, n = 32000.0, 8000
    g = torch.zeros(1, 6, dtype=torch.float64)
    base = noise_reverb_ir(0.5, g, sr, n)
    g[0, 2] = 6.0
    louder = noise_reverb_ir(0.5, g, sr, n)
    rate = math.log(1000.0) / (0.5 * sr)
    envelope = math.sqrt(-math.expm1(-2 * rate)) * torch.exp(
        -rate * torch.arange(n, dtype=torch.float64)
    )
    masks = band_masks(n // 2 + 1, sr, crossover_frequencies(6, sr))
    noise_spectrum = torch.fft.rfft(base[0, 0] / envelope)
    diff_spectrum = torch.fft.rfft((louder - base)[0, 0] / envelope)
    expected = noise_spectrum * masks[2] * (10 ** (6 / 20) - 1)
    torch.testing.assert_close(diff_spectrum, expected, atol=1e-9, rtol=1e-9)


def test_noise_reverb_ir_is_deterministic_without_generator():
    a = noise_reverb_ir(0.3, 0.0, 8000.0, 800)
    b = noise_reverb_ir(0.3, 0.0, 8000.0, 800)
    assert torch.equal(a, b)
    c = noise_reverb_ir(0.3, 0.0, 8000.0, 800, generator=torch.Generator().manual_seed(99))
    assert not torch.allclose(a, c)


def test_noise_reverb_ir_shapes_and_dtype():
    ir = noise_reverb_ir(
        torch.full((3, 10), 0.2, dtype=torch.float64), 0.0, 8000.0, 100, n_channels=2
    )
    assert ir.shape == (3, 2, 100) and ir.dtype == torch.float64
    ir = noise_reverb_ir(0.2, 0.0, 8000.0, 100, batch_size=4)
    assert ir.shape == (4, 1, 100) and ir.dtype == torch.float32


@pytest.mark.parametrize("flags", _combos(2))
def test_noise_reverb_ir_gradcheck(flags):
    rt60 = torch.tensor([[0.01, 0.02, 0.015], [0.03, 0.005, 0.02]], dtype=torch.float64)
    gains = torch.tensor([[0.0, -3.0, 2.0], [1.0, -1.0, -6.0]], dtype=torch.float64)
    inputs = _leaves([rt60, gains], flags)

    def fn(r, g):
        return noise_reverb_ir(r, g, 2000.0, 24, generator=torch.Generator().manual_seed(0))

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_noise_reverb_ir_bad_inputs():
    with pytest.raises(ValueError, match="rt60_s"):
        noise_reverb_ir(torch.tensor([0.5, math.nan]), 0.0, 8000.0, 100)
    with pytest.raises(ValueError, match="rt60_s"):
        noise_reverb_ir(MIN_RT60_S / 2, 0.0, 8000.0, 100)
    with pytest.raises(ValueError, match="band_gains_db"):
        noise_reverb_ir(0.5, torch.zeros(2, 3), 8000.0, 100, n_bands=3, batch_size=3)
    with pytest.raises(ValueError, match="bands"):
        noise_reverb_ir(torch.ones(1, 4), torch.zeros(1, 3), 8000.0, 100)
    with pytest.raises(ValueError, match="n_bands"):
        noise_reverb_ir(torch.ones(1, 4), 0.0, 8000.0, 100, n_bands=3)
    with pytest.raises(ValueError, match="length"):
        noise_reverb_ir(0.5, 0.0, 8000.0, 0)
    with pytest.raises(ValueError, match="crossover"):
        noise_reverb_ir(0.5, 0.0, 8000.0, 100, high_crossover_hz=5000.0)


# --- noise_reverb ---------------------------------------------------------------------------


def test_noise_reverb_mix_zero_is_exactly_dry():
    x = torch.randn(2, 2, 400)
    assert torch.equal(noise_reverb(x, 8000.0, 0.3, 0.0, mix=0.0, length_s=0.05), x)


def test_noise_reverb_equals_convolution_with_its_ir():
    sr = 8000.0
    x = torch.randn(2, 2, 300, dtype=torch.float64)
    rt60 = torch.tensor([[0.1, 0.2, 0.05], [0.3, 0.1, 0.2]], dtype=torch.float64)
    gains = torch.tensor([0.0, -3.0], dtype=torch.float64)
    y = noise_reverb(x, sr, rt60, gains, mix=0.4, length_s=0.02)
    ir = noise_reverb_ir(rt60, gains, sr, 160, n_channels=2).numpy()
    wet = scipy.signal.fftconvolve(x.numpy(), ir, axes=-1)[..., :300]
    np.testing.assert_allclose(y.numpy(), 0.6 * x.numpy() + 0.4 * wet, atol=1e-12)
    # Channels get independent noise (a decorrelated stereo reverb).
    assert not np.allclose(ir[:, 0], ir[:, 1])


def test_noise_reverb_batch_consistency():
    sr = 8000.0
    x = torch.randn(3, 2, 200, dtype=torch.float64)
    rt60 = torch.rand(3, 4, dtype=torch.float64) * 0.2 + 0.05
    gains = torch.randn(3, dtype=torch.float64)
    mix = torch.rand(3, dtype=torch.float64)
    y = noise_reverb(x, sr, rt60, gains, mix, length_s=0.02)
    for b in range(3):
        yb = noise_reverb(
            x[b : b + 1], sr, rt60[b : b + 1], gains[b : b + 1], mix[b], length_s=0.02
        )
        torch.testing.assert_close(y[b : b + 1], yb)


@pytest.mark.parametrize("flags", _combos(4))
def test_noise_reverb_gradcheck(flags):
    x = torch.randn(2, 1, 12, dtype=torch.float64)
    rt60 = torch.tensor([[0.01, 0.004], [0.006, 0.02]], dtype=torch.float64)
    gains = torch.tensor([[0.0, -2.0], [3.0, 1.0]], dtype=torch.float64)
    mix = torch.tensor([0.3, 0.8], dtype=torch.float64)
    inputs = _leaves([x, rt60, gains, mix], flags)

    def fn(a, r, g, m):
        return noise_reverb(a, 2000.0, r, g, m, length_s=0.004)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_noise_reverb_extremes_finite(level):
    sr = 8000.0
    for rt60, g_db, mix in itertools.product(
        (MIN_RT60_S, MAX_RT60_S), (-MAX_ABS_BAND_GAIN_DB, MAX_ABS_BAND_GAIN_DB), (0.0, 1.0)
    ):
        x = torch.full((2, 1, 64), level).requires_grad_()
        r = torch.full((2, 3), rt60, requires_grad=True)
        g = torch.full((2, 3), g_db, requires_grad=True)
        m = torch.full((2,), mix, requires_grad=True)
        y = noise_reverb(x, sr, r, g, m, length_s=0.005)
        y.sum().backward()
        assert torch.isfinite(y).all()
        for t in (x, r, g, m):
            assert torch.isfinite(t.grad).all()


def test_noise_reverb_bad_inputs():
    x = torch.randn(2, 1, 100)
    with pytest.raises(ValueError, match="x"):
        noise_reverb(torch.full_like(x, math.nan), 8000.0, 0.3)
    with pytest.raises(ValueError, match="mix"):
        noise_reverb(x, 8000.0, 0.3, mix=-0.1)
    with pytest.raises(ValueError, match="length_s"):
        noise_reverb(x, 8000.0, 0.3, length_s=0.0)
    with pytest.raises(ValueError, match="rt60_s"):
        noise_reverb(x, 8000.0, torch.full((3, 8), 0.3))
    with pytest.raises(ValueError, match="sample_rate"):
        noise_reverb(x, -1.0, 0.3)


@requires_cuda
def test_reverb_cuda_matches_cpu():
    x = torch.randn(2, 2, 500, dtype=torch.float64)
    rt60 = torch.tensor([[0.1, 0.2, 0.05], [0.3, 0.1, 0.2]], dtype=torch.float64)
    args = (8000.0, rt60)
    cpu = noise_reverb(x, *args, 0.0, 0.5, length_s=0.02)
    gpu = noise_reverb(x.cuda(), 8000.0, rt60.cuda(), 0.0, 0.5, length_s=0.02)
    torch.testing.assert_close(gpu.cpu(), cpu)
