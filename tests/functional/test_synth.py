"""Tests for diffx.functional.synth: DDSP harmonic synthesizer and filtered noise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.functional.synth import filtered_noise, harmonic_synth, upsample_frames
from tests.conftest import requires_cuda


def _combos(n: int):
    return [c for c in itertools.product([False, True], repeat=n) if any(c)]


def _leaves(values, flags):
    return [v.detach().clone().requires_grad_(f) for v, f in zip(values, flags, strict=True)]


def _np_harmonic_synth(f0, amp, dist, sr, n, eps=1e-7):
    """float64 numpy reference: Nyquist mask per frame on the largest f0 of the frame and its
    neighbours, normalization per frame, linear upsampling (corners aligned), exclusive phase
    sum."""
    frames, H = dist.shape
    k = np.arange(1, H + 1)
    nearby = np.array([f0[max(i - 1, 0) : i + 2].max() for i in range(frames)])
    dist = dist * (nearby[:, None] * k < sr / 2)
    dist = dist / (dist.sum(-1, keepdims=True) + eps)
    pos = np.linspace(0, frames - 1, n)
    grid = np.arange(frames)
    f0_s = np.interp(pos, grid, f0)
    amp_s = np.interp(pos, grid, amp)
    dist_s = np.stack([np.interp(pos, grid, dist[:, j]) for j in range(H)], -1)
    # The property the mask exists for: no harmonic has weight at or above Nyquist.
    assert not np.any((dist_s > 0) & (f0_s[:, None] * k >= sr / 2))
    phase = np.concatenate([[0.0], np.cumsum(2 * np.pi * f0_s / sr)[:-1]])
    return amp_s * (dist_s * np.sin(phase[:, None] * k)).sum(-1)


# --- harmonic_synth -------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1.0, 10.0])
def test_single_harmonic_is_an_exact_sine(dtype, seconds):
    # Long signals check the phase accumulation: float32 must stay exact over 10 s.
    sr, f0, a = 44100, 441.3, 0.7
    n = int(seconds * sr)
    y = harmonic_synth(
        torch.full((1, 11), f0, dtype=dtype),
        torch.full((1, 11), a, dtype=dtype),
        torch.ones(1, 11, 1, dtype=dtype),
        sr,
        n_samples=n,
    )
    assert y.shape == (1, 1, n) and y.dtype == dtype
    f0 = float(torch.tensor(f0, dtype=dtype))  # the frequency as stored in dtype
    expected = a * np.sin(2 * np.pi * f0 * np.arange(n) / sr)
    atol = 1e-9 if dtype == torch.float64 else 2e-6
    np.testing.assert_allclose(y[0, 0].double().numpy(), expected, atol=atol)


def test_harmonics_at_or_above_nyquist_are_silenced():
    sr, n = 16000, 16000
    # f0 = 3 kHz: harmonics 1 and 2 (3, 6 kHz) stay; 3..10 (9 kHz and up) are removed and the
    # two survivors share the amplitude equally.
    y = harmonic_synth(
        torch.full((1, 4), 3000.0, dtype=torch.float64),
        torch.full((1, 4), 0.8, dtype=torch.float64),
        torch.ones(1, 4, 10, dtype=torch.float64),
        sr,
        n,
    )[0, 0].numpy()
    t = np.arange(n) / sr
    expected = 0.8 / (2 + 1e-7) * (np.sin(2 * np.pi * 3000 * t) + np.sin(2 * np.pi * 6000 * t))
    np.testing.assert_allclose(y, expected, atol=1e-9)
    spectrum = np.abs(np.fft.rfft(y)) ** 2  # 1 Hz bins, every component on a bin
    harmonic = np.zeros_like(spectrum, bool)
    harmonic[[3000, 6000]] = True
    assert spectrum[~harmonic].sum() < 1e-18 * spectrum[harmonic].sum()
    # A harmonic exactly at Nyquist is removed too (sin(pi n) would be zero anyway, but its
    # weight must not take amplitude from the others).
    y = harmonic_synth(
        torch.full((1, 2), 4000.0, dtype=torch.float64),
        torch.ones(1, 2, dtype=torch.float64),
        torch.ones(1, 2, 2, dtype=torch.float64),
        sr,
        1000,
    )[0, 0].numpy()
    np.testing.assert_allclose(
        y, np.sin(2 * np.pi * 4000 * np.arange(1000) / sr) / (1 + 1e-7), atol=1e-9
    )


def test_harmonic_synth_matches_numpy_reference_for_time_varying_controls():
    sr, n, frames, H = 8000, 2000, 9, 6
    rng = np.random.default_rng(0)
    f0 = np.linspace(200, 1500, frames)  # harmonics cross Nyquist as f0 rises
    amp = rng.uniform(0, 1, frames)
    dist = rng.uniform(0, 1, (frames, H))
    y = harmonic_synth(
        torch.tensor(f0)[None], torch.tensor(amp)[None], torch.tensor(dist)[None], sr, n
    )
    np.testing.assert_allclose(y[0, 0].numpy(), _np_harmonic_synth(f0, amp, dist, sr, n), atol=1e-9)


def test_window_upsampling_is_a_raised_cosine_crossfade():
    frames = torch.tensor([[[1.0], [3.0], [-2.0], [0.5]]], dtype=torch.float64)
    hop = 8
    up = upsample_frames(frames, 3 * hop, "window")[0, :, 0].numpy()
    s = np.arange(hop)
    fade_out = 0.5 + 0.5 * np.cos(np.pi * s / hop)
    a = frames[0, :, 0].numpy()
    expected = np.concatenate([a[i] * fade_out + a[i + 1] * (1 - fade_out) for i in range(3)])
    np.testing.assert_allclose(up, expected, atol=1e-12)
    np.testing.assert_allclose(up[::hop], a[:3], atol=1e-12)  # frames land on i * hop


def test_window_upsampled_amplitude_in_the_synth():
    sr, frames, hop = 8000, 5, 100
    amp = torch.tensor([[0.2, 0.9, 0.1, 0.5, 0.3]], dtype=torch.float64)
    y = harmonic_synth(
        torch.full((1, frames), 100.0, dtype=torch.float64),
        amp,
        torch.ones(1, frames, 1, dtype=torch.float64),
        sr,
        (frames - 1) * hop,
        upsample="window",
    )[0, 0].numpy()
    envelope = upsample_frames(amp[..., None], (frames - 1) * hop, "window")[0, :, 0].numpy()
    t = np.arange((frames - 1) * hop)
    np.testing.assert_allclose(y, envelope * np.sin(2 * np.pi * 100 * t / sr), atol=1e-12)


def test_harmonic_synth_batch_consistency():
    rng = torch.Generator().manual_seed(0)
    f0 = torch.rand(3, 5, generator=rng, dtype=torch.float64) * 500 + 50
    amp = torch.rand(3, 5, generator=rng, dtype=torch.float64)
    dist = torch.rand(3, 5, 8, generator=rng, dtype=torch.float64)
    y = harmonic_synth(f0, amp, dist, 8000, 400)
    for b in range(3):
        yb = harmonic_synth(f0[b : b + 1], amp[b : b + 1], dist[b : b + 1], 8000, 400)
        torch.testing.assert_close(y[b : b + 1], yb)


@pytest.mark.parametrize("upsample", ["linear", "window"])
@pytest.mark.parametrize("flags", _combos(3))
def test_harmonic_synth_gradcheck(flags, upsample):
    # f0 stays well away from the Nyquist cut of every harmonic (500 Hz at 1 kHz; 3 harmonics).
    f0 = torch.tensor([[60.0, 90.0, 120.0], [150.0, 110.0, 70.0]], dtype=torch.float64)
    amp = torch.tensor([[0.5, 0.8, 0.3], [1.0, 0.2, 0.6]], dtype=torch.float64)
    dist = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = _leaves([f0, amp, dist + 0.1], flags)

    def fn(f, a, d):
        return harmonic_synth(f, a, d, 1000.0, 16, upsample=upsample)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("f0_value", [0.0, 20.0, 7999.0, 20000.0])
def test_harmonic_synth_extremes_finite(f0_value):
    for amp_value, dist_value in itertools.product((0.0, 1.0), (0.0, 1.0)):
        f0 = torch.full((2, 4), f0_value, requires_grad=True)
        amp = torch.full((2, 4), amp_value, requires_grad=True)
        dist = torch.full((2, 4, 5), dist_value, requires_grad=True)
        y = harmonic_synth(f0, amp, dist, 16000, 64)
        y.sum().backward()
        assert torch.isfinite(y).all()
        for t in (f0, amp, dist):
            assert torch.isfinite(t.grad).all()
        if f0_value >= 8000 or amp_value == 0 or dist_value == 0:
            assert float(y.detach().abs().max()) == 0.0


def test_harmonic_synth_bad_inputs():
    f0 = torch.full((2, 4), 100.0)
    amp = torch.ones(2, 4)
    dist = torch.ones(2, 4, 3)
    with pytest.raises(ValueError, match="f0_hz"):
        harmonic_synth(torch.full((2, 4), math.nan), amp, dist, 8000, 40)
    with pytest.raises(ValueError, match="f0_hz"):
        harmonic_synth(-f0, amp, dist, 8000, 40)
    with pytest.raises(ValueError, match="amplitudes"):
        harmonic_synth(f0, torch.full((2, 4), math.inf), dist, 8000, 40)
    with pytest.raises(ValueError, match="harmonic_distribution"):
        harmonic_synth(f0, amp, -dist, 8000, 40)
    with pytest.raises(ValueError, match="harmonic_distribution"):
        harmonic_synth(f0, amp, torch.ones(2, 4), 8000, 40)
    with pytest.raises(ValueError, match="amplitudes"):
        harmonic_synth(f0, torch.ones(2, 5), dist, 8000, 40)
    with pytest.raises(ValueError, match="upsample"):
        harmonic_synth(f0, amp, dist, 8000, 40, upsample="cubic")
    with pytest.raises(ValueError, match="divisible"):
        harmonic_synth(f0, amp, dist, 8000, 40, upsample="window")
    with pytest.raises(ValueError, match="sample_rate"):
        harmonic_synth(f0, amp, dist, 0, 40)


# --- filtered_noise -------------------------------------------------------------------------


def _np_filtered_noise(magnitudes, noise, window_size):
    """Direct-form numpy reference: per frame, the windowed linear-phase FIR convolved with
    its noise block by np.convolve, the blocks overlap-added."""
    frames, bands = magnitudes.shape
    n_fft = 2 * (bands - 1)
    hop = noise.shape[-1] // frames
    half = (window_size - 1) // 2
    window = np.hanning(window_size + 2)[1:-1]
    out = np.zeros(noise.shape[-1] + hop + window_size)
    for i in range(frames):
        zero_phase = np.fft.irfft(magnitudes[i], n_fft)
        fir = np.roll(zero_phase, half)[:window_size] * window  # taps -half..half
        seg = np.convolve(noise[i * hop : (i + 1) * hop], fir)
        out[i * hop : i * hop + seg.size] += seg
    return out[: noise.shape[-1]]


@pytest.mark.parametrize("window_size", [None, 31, 1])
def test_filtered_noise_matches_direct_convolution(window_size):
    rng = np.random.default_rng(2)
    frames, bands, hop = 6, 33, 50
    mags = rng.uniform(0, 1, (2, frames, bands))
    noise = rng.uniform(-1, 1, (2, 1, frames * hop))
    y = filtered_noise(
        torch.tensor(mags), frames * hop, window_size, noise=torch.tensor(noise)
    ).numpy()
    w = 2 * (bands - 1) - 1 if window_size is None else window_size
    for b in range(2):
        np.testing.assert_allclose(y[b, 0], _np_filtered_noise(mags[b], noise[b, 0], w), atol=1e-12)


def test_filtered_noise_flat_magnitude_is_white_at_the_expected_level():
    m = 0.5
    y = filtered_noise(
        torch.full((1, 200, 65), m, dtype=torch.float64),
        200 * 256,
        generator=torch.Generator().manual_seed(0),
    )[0, 0].numpy()
    # Uniform noise in [-1, 1] has variance 1/3; a flat magnitude m is the FIR m * delta.
    assert np.var(y[128:]) == pytest.approx(m**2 / 3, rel=0.03)
    f, psd = scipy.signal.welch(y, fs=1.0, nperseg=256)
    # One-sided density of white noise of variance s2 at fs = 1 is 2 s2.
    assert np.mean(psd[1:-1]) == pytest.approx(2 * m**2 / 3, rel=0.05)
    assert np.std(psd[1:-1]) / np.mean(psd[1:-1]) < 0.15


def test_filtered_noise_band_limited_magnitude_puts_energy_only_in_the_band():
    bands = 65  # bins at k / 128 cycles per sample
    mags = torch.zeros(1, 100, bands, dtype=torch.float64)
    mags[..., 16:33] = 1.0  # 0.125 .. 0.25 cycles per sample
    y = filtered_noise(mags, 100 * 512, generator=torch.Generator().manual_seed(1))[0, 0].numpy()
    f, psd = scipy.signal.welch(y, fs=1.0, nperseg=512)
    passband = (f > 0.125 + 0.02) & (f < 0.25 - 0.02)
    stopband = (f < 0.125 - 0.04) | (f > 0.25 + 0.04)
    assert psd[stopband].max() < 1e-3 * psd[passband].mean()  # > 30 dB down
    # The passband level is that of the unfiltered noise (unit magnitude).
    assert np.mean(psd[passband]) == pytest.approx(2 / 3, rel=0.1)


def test_filtered_noise_is_time_varying():
    # Frames with zero magnitude produce exact silence (no tail reaches back in time).
    mags = torch.ones(1, 8, 17, dtype=torch.float64)
    mags[:, 4:] = 0.0
    y = filtered_noise(mags, 8 * 64, generator=torch.Generator().manual_seed(0))[0, 0]
    tail = 2 * (17 - 1) - 1
    assert float(y[: 4 * 64].abs().min()) >= 0.0 and float(y[: 4 * 64].abs().max()) > 0.1
    assert float(y[4 * 64 + tail :].abs().max()) == 0.0


def test_filtered_noise_generator_and_batch_consistency():
    mags = torch.rand(3, 4, 9, dtype=torch.float64)
    a = filtered_noise(mags, 64, generator=torch.Generator().manual_seed(7))
    b = filtered_noise(mags, 64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    noise = torch.rand(3, 1, 64, dtype=torch.float64) * 2 - 1
    y = filtered_noise(mags, 64, noise=noise)
    for i in range(3):
        torch.testing.assert_close(
            y[i : i + 1], filtered_noise(mags[i : i + 1], 64, noise=noise[i : i + 1])
        )


@pytest.mark.parametrize("flags", _combos(2))
def test_filtered_noise_gradcheck(flags):
    mags = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    noise = (
        torch.rand(2, 1, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 2
        - 1
    )
    inputs = _leaves([mags + 0.1, noise], flags)

    def fn(m, n):
        return filtered_noise(m, 12, noise=n)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_filtered_noise_extremes_finite():
    for value in (0.0, 1.0, 1e3):
        mags = torch.full((2, 4, 9), value, requires_grad=True)
        y = filtered_noise(mags, 64, generator=torch.Generator().manual_seed(0))
        y.sum().backward()
        assert torch.isfinite(y).all() and torch.isfinite(mags.grad).all()


def test_filtered_noise_bad_inputs():
    mags = torch.ones(2, 4, 9)
    with pytest.raises(ValueError, match="magnitudes"):
        filtered_noise(torch.full((2, 4, 9), math.nan), 64)
    with pytest.raises(ValueError, match="magnitudes"):
        filtered_noise(-mags, 64)
    with pytest.raises(ValueError, match="magnitudes"):
        filtered_noise(torch.ones(2, 4), 64)
    with pytest.raises(ValueError, match="n_samples"):
        filtered_noise(mags, 63)
    with pytest.raises(ValueError, match="window_size"):
        filtered_noise(mags, 64, window_size=8)
    with pytest.raises(ValueError, match="window_size"):
        filtered_noise(mags, 64, window_size=17)
    with pytest.raises(ValueError, match="noise"):
        filtered_noise(mags, 64, noise=torch.zeros(2, 1, 32))
    with pytest.raises(ValueError, match="noise"):
        filtered_noise(mags, 64, noise=torch.full((2, 1, 64), math.nan))


@requires_cuda
@pytest.mark.parametrize("upsample", ["linear", "window"])
def test_synth_cuda_matches_cpu(upsample):
    gen = torch.Generator().manual_seed(0)
    f0 = torch.rand(2, 5, generator=gen, dtype=torch.float64) * 900 + 50
    amp = torch.rand(2, 5, generator=gen, dtype=torch.float64)
    dist = torch.rand(2, 5, 20, generator=gen, dtype=torch.float64)
    cpu = harmonic_synth(f0, amp, dist, 8000, 400, upsample)
    gpu = harmonic_synth(f0.cuda(), amp.cuda(), dist.cuda(), 8000, 400, upsample)
    torch.testing.assert_close(gpu.cpu(), cpu)
    mags = torch.rand(2, 5, 17, generator=gen, dtype=torch.float64)
    noise = torch.rand(2, 1, 400, generator=gen, dtype=torch.float64) * 2 - 1
    cpu = filtered_noise(mags, 400, noise=noise)
    gpu = filtered_noise(mags.cuda(), 400, noise=noise.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu)
    # Drawing the noise on the device works too.
    assert filtered_noise(mags.cuda(), 400).device.type == "cuda"
