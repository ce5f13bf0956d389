"""Tests of diffx.analysis.harmonic against analytic harmonic signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.signal.windows import chebwin

from diffx.analysis.harmonic import (
    bandlimit,
    chebyshev_spectrum,
    chebyshev_window,
    harmonic_analysis,
    main_lobe_half_width_bins,
    synthesise_harmonics,
)

FS = 44100
N = 8820  # 0.2 s: resolves f0 down to ~28 Hz with the 120 dB window


def harmonic_signal(f0, amps, phases, dc, n=N, fs=FS):
    """dc + sum_m A_m cos(2 pi m f0 t + phi_m), computed in numpy float64 (the oracle)."""
    t = np.arange(n) / fs
    x = np.full(n, dc, dtype=np.float64)
    for m, (a, p) in enumerate(zip(amps, phases), start=1):
        x += a * np.cos(2 * np.pi * m * f0 * t + p)
    return x


def random_harmonics(f0, rng, fs=FS):
    count = int(fs / 2 // f0)
    return rng.uniform(0.05, 1.0, count), rng.uniform(-np.pi, np.pi, count), rng.uniform(-0.5, 0.5)


def test_round_trip_is_exact_for_harmonic_signals():
    rng = np.random.default_rng(1)
    # Off-bin f0s; one with many harmonics, one with its top harmonic 0.7 bins below Nyquist
    # (main lobe overlapping its own image), one with a harmonic exactly at Nyquist.
    near_nyquist = (FS / 2 - 0.7 * FS / N) / 7
    f0s = [1234.567, 97.3, near_nyquist, FS / 4]
    xs, params = [], []
    for f0 in f0s:
        amps, phases, dc = random_harmonics(f0, rng)
        xs.append(harmonic_signal(f0, amps, phases, dc))
        params.append((amps, phases, dc))
    x = torch.tensor(np.stack(xs))
    # float64 f0: a float32 one is off by up to 6e-8 relative, a phase drift of ~1e-4 rad over
    # 0.2 s at 1 kHz, which is what the analysis would then (correctly) report.
    f0_hz = torch.tensor(f0s, dtype=torch.float64)
    analysis = harmonic_analysis(x, f0_hz, FS)
    for i, (f0, (amps, phases, dc)) in enumerate(zip(f0s, params)):
        count = len(amps)
        assert int(analysis.num_harmonics[i]) == count
        expected = amps / 2 * np.exp(1j * phases)
        if f0 == FS / 4:
            # At Nyquist only A cos(phi) is observable: the partial is A cos(phi) (-1)^n.
            expected[-1] = amps[-1] * np.cos(phases[-1]) / 2
        got = analysis.amplitudes[i, :count].numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert abs(float(analysis.dc[i]) - dc) < 1e-9
    bandlimited, aliases = bandlimit(x, f0_hz, FS)
    np.testing.assert_allclose(bandlimited.numpy(), x.numpy(), rtol=0, atol=1e-9)
    assert float(aliases.abs().max()) < 1e-9


def test_analysis_grid_is_padded_and_masked():
    f0 = torch.tensor([5000.0, 3000.0, 1234.5], dtype=torch.float64)
    x = torch.zeros(3, 1, N, dtype=torch.float64)
    analysis = harmonic_analysis(x, f0, FS)
    counts = [4, 7, 17]  # floor(22050 / f0)
    assert analysis.amplitudes.shape == (3, 17)
    assert analysis.amplitudes.is_complex()
    assert analysis.mask.sum(dim=-1).tolist() == counts
    m = torch.arange(1, 18, dtype=torch.float64)
    expected_hz = torch.where(analysis.mask, m * f0[:, None], torch.zeros(()))
    torch.testing.assert_close(analysis.harmonic_hz, expected_hz, rtol=0, atol=0)
    assert analysis.dc.shape == (3,)


def test_one_shot_estimate_is_the_scalloping_corrected_bin():
    # refine_iterations=0 is the paper's estimate: exact but for the window's side-lobe
    # leakage (about -116 dB per other harmonic), even at the worst offset of half a bin.
    f0 = 94.5 * FS / N  # harmonic m at bin 94.5 m: half a bin off for odd m
    amps, phases = np.array([1.0, 0.3, 0.5]), np.array([0.3, -2.0, 1.0])
    x = torch.tensor(harmonic_signal(f0, amps, phases, 0.0))[None]
    a = harmonic_analysis(x, f0, FS, refine_iterations=0).amplitudes[0, :3].numpy()
    # Without the correction a half-bin offset would read about 0.9 dB (10 %) low.
    np.testing.assert_allclose(a, amps / 2 * np.exp(1j * phases), rtol=0, atol=5e-6)


def test_non_harmonic_component_is_removed():
    f0 = 1234.567
    amps, phases = np.array([0.8, 0.4, 0.2, 0.1]), np.array([0.1, 1.2, -0.7, 2.5])
    harmonic = harmonic_signal(f0, amps, phases, 0.05)
    t = np.arange(N) / FS
    # An alias-like tone between harmonics 3 and 4, far outside their main lobes.
    component = 1e-2 * np.cos(2 * np.pi * 4000.1 * t + 0.4)
    x = torch.tensor(harmonic + component)[None, None]
    bandlimited, aliases = bandlimit(x, f0, FS)
    assert bandlimited.shape == aliases.shape == x.shape
    error = aliases[0, 0].numpy() - component
    error_db = 10 * np.log10(np.sum(error**2) / np.sum(component**2))
    assert error_db < -100
    torch.testing.assert_close(bandlimited + aliases, x, rtol=0, atol=1e-15)


def test_bandlimit_is_idempotent():
    # The bandlimited signal is purely harmonic, so analysing it again changes nothing.
    torch.manual_seed(0)
    x = torch.randn(3, 1, N, dtype=torch.float64)
    f0 = torch.tensor([220.0, 1001.3, 7000.7], dtype=torch.float64)
    once, _ = bandlimit(x, f0, FS)
    twice, aliases = bandlimit(once, f0, FS)
    assert float((twice - once).abs().max()) < 1e-9 * float(once.abs().max())
    assert float(aliases.abs().max()) < 1e-9 * float(once.abs().max())


def test_float32_round_trip_and_dtype():
    rng = np.random.default_rng(2)
    f0 = 440.0
    amps, phases, dc = random_harmonics(f0, rng)
    x64 = torch.tensor(harmonic_signal(f0, amps, phases, dc))[None]
    bandlimited, aliases = bandlimit(x64.float(), f0, FS)
    assert bandlimited.dtype == aliases.dtype == torch.float32
    analysis = harmonic_analysis(x64.float(), f0, FS)
    assert analysis.amplitudes.dtype == torch.complex64
    assert analysis.harmonic_hz.dtype == torch.float64
    # float32 rounding of a signal summing ~50 harmonics of amplitude <= 1.
    assert float((bandlimited.double() - x64).abs().max()) < 2e-5


def test_synthesise_harmonics_matches_the_analysed_partials():
    f0, amps, phases = 700.0, np.array([0.5, 0.25]), np.array([0.0, 1.0])
    x = torch.tensor(harmonic_signal(f0, amps, phases, 0.1))[None]
    analysis = harmonic_analysis(x, f0, FS)
    longer = synthesise_harmonics(analysis, num_samples=N + 100)
    expected = harmonic_signal(f0, amps, phases, 0.1, n=N + 100)
    np.testing.assert_allclose(longer[0].numpy(), expected, rtol=0, atol=1e-9)


def test_gradients():
    torch.manual_seed(0)
    fs, f0 = 8000, torch.tensor([1500.0, 1900.0])  # 32 samples resolve f0 >= 1405 Hz
    x = torch.randn(2, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: bandlimit(x, f0, fs), (x,))
    assert torch.autograd.gradcheck(
        lambda x: torch.view_as_real(harmonic_analysis(x, f0, fs).amplitudes), (x,)
    )
    assert torch.autograd.gradgradcheck(lambda x: bandlimit(x, f0, fs)[0], (x,), fast_mode=True)


def test_silence_gives_zero_and_finite_gradients():
    x = torch.zeros(2, 1, N, requires_grad=True)
    bandlimited, aliases = bandlimit(x, torch.tensor([100.0, 5000.0]), FS)
    assert float(bandlimited.detach().abs().max()) == 0.0
    (bandlimited.square().sum() + aliases.sum()).backward()
    assert bool(torch.isfinite(x.grad).all())


def test_window_and_spectrum_follow_scipy():
    w = chebwin(N, at=120, sym=False)
    np.testing.assert_allclose(chebyshev_window(N).numpy(), w, rtol=0, atol=0)
    x = torch.randn(2, N, dtype=torch.float64)
    np.testing.assert_allclose(
        chebyshev_spectrum(x).numpy(), np.fft.rfft(x.numpy() * w), rtol=1e-12, atol=1e-9
    )


def test_main_lobe_half_width_matches_the_window_transform():
    n = 1024
    oversample = 256
    mag = np.abs(np.fft.rfft(chebwin(n, at=120, sym=False), n * oversample))
    first_min = np.argmax(np.diff(mag) > 0) / oversample  # first null of the main lobe, bins
    assert abs(main_lobe_half_width_bins(n, 120) - first_min) < 0.05


@pytest.mark.parametrize("f0", [0.0, -10.0, FS / 2, 30000.0, math.nan])
def test_f0_out_of_range_raises(f0):
    x = torch.zeros(1, N)
    with pytest.raises(ValueError, match="f0_hz"):
        harmonic_analysis(x, f0, FS)
    with pytest.raises(ValueError, match="f0_hz"):
        bandlimit(x, torch.tensor([f0]), FS)


def test_f0_too_low_for_the_segment_raises():
    with pytest.raises(ValueError, match="too low.*f0_hz >= "):
        bandlimit(torch.zeros(1, 1000), 100.0, FS)


def test_bad_signals_raise():
    with pytest.raises(ValueError, match="even"):
        bandlimit(torch.zeros(1, N + 1), 440.0, FS)
    x = torch.zeros(2, N)
    x[1, 5] = math.nan
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        bandlimit(x, 440.0, FS)
    with pytest.raises(ValueError, match=r"\(batch, 1, samples\)"):
        bandlimit(torch.zeros(2, 2, N), 440.0, FS)
    with pytest.raises(ValueError, match="floating-point"):
        bandlimit(torch.zeros(2, N, dtype=torch.int32), 440.0, FS)
    with pytest.raises(ValueError, match="f0_hz must be a scalar or shaped"):
        bandlimit(torch.zeros(2, N), torch.tensor([440.0, 550.0, 660.0]), FS)
    with pytest.raises(ValueError, match="refine_iterations"):
        bandlimit(torch.zeros(2, N), 440.0, FS, refine_iterations=-1)
    with pytest.raises(ValueError, match="sample_rate"):
        bandlimit(torch.zeros(2, N), 440.0, -FS)
