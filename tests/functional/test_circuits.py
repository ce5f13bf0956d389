"""The diode clipper against a stiff ODE solver, the linearized circuit, symmetry and aliasing.

Oracles: scipy's Radau solver of the same ODE; the exact transfer function of the circuit
linearized at 0 V (and its bilinear map, which the trapezoidal rule realizes exactly for a
linear ODE); the odd symmetry of the circuit; coherent DFTs of periodic signals.
"""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.signal import freqz

from diffx.functional.circuits import (
    DEFAULT_CUTOFF_HZ,
    DIODE_IDEALITY,
    DIODE_SATURATION_CURRENT_A,
    SERIES_RESISTANCE_OHM,
    THERMAL_VOLTAGE_V,
    _clipper_trapezoidal,
    diode_clipper,
    resampling_filter,
)

SR = 44100
NVT = DIODE_IDEALITY * THERMAL_VOLTAGE_V
RC = 1 / (2 * math.pi * DEFAULT_CUTOFF_HZ)
K = 2 * DIODE_SATURATION_CURRENT_A * SERIES_RESISTANCE_OHM / RC  # 2 I_s / C, V/s

# The ODE test signal: a 200 Hz sine at -6 dBFS with 20 dB drive, a 5 V source that the diodes
# clip hard. Its period, 5 ms, is 220.5 samples at 44.1 kHz, so 441 samples hold 2 periods.
F0, LEVEL_DBFS, DRIVE_DB = 200.0, -6.0, 20.0
AMPLITUDE_V = 10 ** ((LEVEL_DBFS + DRIVE_DB) / 20)
KERNEL_SPAN_S = 0.01  # the integrator is compared from rest over two periods
PERIOD_START_S = 0.02  # the steady-state period sampled for its Fourier series
PERIOD_POINTS = 4096  # 819 kHz over one period: harmonics above 400 kHz are far below 1e-10


def _sine(f0, n, level_dbfs, sample_rate=SR):
    return 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * f0 * np.arange(n) / sample_rate)


@pytest.fixture(scope="module")
def radau():
    """The ODE driven by the continuous sine, from rest, by scipy's stiff Radau solver
    (rtol 1e-10, analytic Jacobian); sampled on the 16x and 32x grids over the first
    ``KERNEL_SPAN_S`` and on ``PERIOD_POINTS`` over one steady-state period."""

    def rhs(t, v):
        return (AMPLITUDE_V * np.sin(2 * np.pi * F0 * t) - v) / RC - K * np.sinh(v / NVT)

    def jac(t, v):
        return np.array([[-1 / RC - K / NVT * np.cosh(v[0] / NVT)]])

    fine = np.arange(round(KERNEL_SPAN_S * SR * 32)) / (SR * 32)  # holds the 16x grid too
    period = PERIOD_START_S + np.arange(PERIOD_POINTS) / (PERIOD_POINTS * F0)
    t_eval = np.concatenate([fine, period])
    sol = solve_ivp(
        rhs, (0, t_eval[-1]), [0.0], "Radau", t_eval=t_eval, rtol=1e-10, atol=1e-12, jac=jac
    )
    assert sol.success
    return {"fine": sol.y[0, : len(fine)], "period": sol.y[0, len(fine) :], "t": fine}


def test_integrator_is_second_order_and_converges_to_the_ode_solution(radau):
    """Trapezoidal rule from rest on the sampled source: the global error is O(h^2), so from
    16x to 32x it falls fourfold, and at 16x (h = 1.4 us, a 50th of the fastest swing through
    the knee) it is within 3e-5 V of the 0.6 V output."""
    errors = {}
    for oversampling in (16, 32):
        t = radau["t"][:: 32 // oversampling]
        u = AMPLITUDE_V * np.sin(2 * np.pi * F0 * t)
        v = _clipper_trapezoidal(u[None], 1 / (SR * oversampling), RC, K, NVT)[0]
        errors[oversampling] = np.max(np.abs(v - radau["fine"][:: 32 // oversampling]))
    assert errors[16] < 3e-5
    assert 3.6 < errors[16] / errors[32] < 4.4


def test_audio_band_output_is_the_fourier_series_of_the_ode_solution(radau):
    """In steady state the output at 44.1 kHz holds the harmonics of the exact periodic
    solution up to the resampler's passband edge (0.45 fs), each within 1e-5 V: the
    resampling filters' passband ripple (1e-5 each, on a 0.76 V fundamental) plus the
    integrator's O(h^2) error. Between the harmonics only aliases can lie: the exact series
    beyond the audio band is below 1e-4 of the fundamental and the resampler takes 100 dB off
    it, so they stay below 1e-8 of the fundamental."""
    x = _sine(F0, SR // 10, LEVEL_DBFS)
    y = diode_clipper(torch.tensor(x), SR, DRIVE_DB, DEFAULT_CUTOFF_HZ, oversampling=8).numpy()
    # 8 whole periods starting at 40 ms, in phase with the reference period at 20 ms
    start, n = 1764, 1764
    spectrum = np.fft.rfft(y[start : start + n]) * 2 / n
    exact = np.fft.rfft(radau["period"]) * 2 / PERIOD_POINTS
    n_harmonics = int(0.45 * SR / F0)
    bins = round(n * F0 / SR) * np.arange(1, n_harmonics + 1)
    np.testing.assert_allclose(spectrum[bins], exact[1 : n_harmonics + 1], rtol=0, atol=1e-5)
    assert np.max(np.abs(exact[round(0.5 * SR / F0) :])) < 1e-4 * abs(exact[1])
    between = np.ones(len(spectrum), bool)
    between[:: bins[0]] = False
    assert np.max(np.abs(spectrum[between])) < 1e-8 * abs(exact[1])


def _exact_small_signal_response(f, oversampling):
    """The circuit linearized at 0 V: C dv/dt = (u - v) / R - G_d v, with the diode pair's
    small-signal conductance G_d = 2 I_s / (n V_t) (it lowers the DC gain by 2.4e-4). The
    trapezoidal rule maps s to 2 fs (z - 1) / (z + 1): at frequency f it responds as the
    analog circuit at 2 fs tan(pi f / fs) / (2 pi)."""
    fs = SR * oversampling
    omega = 2 * fs * np.tan(np.pi * f / fs)
    g_d = 2 * DIODE_SATURATION_CURRENT_A / NVT
    return (1 / RC) / (1j * omega + 1 / RC + g_d * SERIES_RESISTANCE_OHM / RC)


def _complex_gain(y, x, f, start, n):
    # f completes whole periods in n samples, so the projection has no leakage
    phasor = np.exp(-2j * np.pi * f * np.arange(start, start + n) / SR)
    return (y[start : start + n] @ phasor) / (x[start : start + n] @ phasor)


@pytest.mark.parametrize("oversampling", [1, 8])
def test_small_signal_is_the_rc_lowpass(oversampling):
    """At 10 uV the diodes barely conduct and the clipper is the RC low-pass: magnitude and
    phase equal the linearized circuit's bilinear response, exactly (1e-9) without resampling
    and within the resampling filters' 1e-5 ripple at 8x; and the textbook
    1 / sqrt(1 + (f / fc)^2) within the diode conductance and the frequency warping (which at
    8x is below 3e-3 up to 18 kHz)."""
    tolerance = 1e-9 if oversampling == 1 else 3e-5
    for f in (100.0, 1000.0, 5000.0, DEFAULT_CUTOFF_HZ, 12000.0, 18000.0):
        f = round(f, -1)  # whole periods in the 0.1 s window
        x = _sine(f, SR // 5, -100.0)
        y = diode_clipper(torch.tensor(x), SR, 0.0, oversampling=oversampling).numpy()
        gain = _complex_gain(y, x, f, SR // 20, SR // 10)
        assert abs(gain - _exact_small_signal_response(f, oversampling)) < tolerance, f
        if oversampling == 8:
            textbook = 1 / math.sqrt(1 + (f / DEFAULT_CUTOFF_HZ) ** 2)
            assert abs(abs(gain) - textbook) < 3e-3, f


def test_small_signal_warping_shows_at_the_audio_rate():
    """Without oversampling the trapezoidal rule's frequency warping is large near the top of
    the band (it is the bilinear transform): at 12 kHz the gain is 0.1 below the analog one."""
    f = 12000.0
    x = _sine(f, SR // 5, -100.0)
    y = diode_clipper(torch.tensor(x), SR, 0.0, oversampling=1).numpy()
    analog = 1 / math.sqrt(1 + (f / DEFAULT_CUTOFF_HZ) ** 2)
    assert analog - abs(_complex_gain(y, x, f, SR // 20, SR // 10)) > 0.1


def test_large_signal_is_bounded_odd_and_has_only_odd_harmonics():
    """At +40 dB drive (a 100 V source) the capacitor stays below 1 V (about
    n V_t asinh(V / (2 R I_s)) = 0.76 V); f(-x) = -f(x) exactly, as the circuit is symmetric;
    and a 1 kHz sine gives odd harmonics only (even ones 100 dB below the fundamental, the
    floor set by aliasing and the resampler)."""
    x = torch.tensor(_sine(1000.0, SR // 5, 0.0))
    y = diode_clipper(x, SR, drive_db=40.0)
    assert float(y.abs().max()) < 1.0
    assert torch.equal(diode_clipper(-x, SR, drive_db=40.0), -y)
    # full-band noise too, at the audio rate: with oversampling the band-limited output of
    # hard-clipped white noise overshoots (Gibbs) though the capacitor does not
    noise = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, SR // 10))
    assert float(diode_clipper(noise, SR, drive_db=40.0, oversampling=1).abs().max()) < 1.0

    # 1 kHz completes 10 periods in 441 samples; take 40 periods from 50 ms on
    start, n = 2205, 1764
    spectrum = np.abs(np.fft.rfft(y.numpy()[start : start + n]))
    step = round(n * 1000.0 / SR)
    fundamental = spectrum[step]
    assert np.max(spectrum[2 * step :: 2 * step]) < 1e-5 * fundamental
    assert spectrum[3 * step] > 0.2 * fundamental  # and it is strongly clipped


def _alias_to_harmonic_db(y, f0, start, n):
    """Energy between the harmonics of f0 over that of the harmonics, dB. The tone completes
    whole periods in the n samples and the output is periodic in steady state, so with a
    rectangular window every harmonic lies in one bin and every other bin holds only aliases
    (aliases of 4 kHz at 44.1 kHz fall on multiples of 100 Hz, between the harmonics)."""
    power = np.abs(np.fft.rfft(y[start : start + n])) ** 2
    step = round(n * f0 / SR)
    assert step == pytest.approx(n * f0 / SR, abs=1e-9)
    harmonic = np.zeros(len(power), bool)
    harmonic[step::step] = True
    return 10 * np.log10(power[~harmonic].sum() / power[harmonic].sum())


def test_oversampling_removes_aliasing():
    """A 4 kHz tone at -6 dBFS with 30 dB drive. At the audio rate the harmonics above
    22 kHz fold back into the band at -15 dB; each doubling of the rate pushes the fold-over
    up, and at 16x the aliases left (those of harmonics past 353 kHz and the resampler's
    100 dB stop-band leakage) lie more than 80 dB below the harmonics."""
    f0 = 4000.0
    x = torch.tensor(_sine(f0, SR // 4, -6.0))
    ratios = {
        oversampling: _alias_to_harmonic_db(
            diode_clipper(x, SR, 30.0, oversampling=oversampling).numpy(), f0, 4410, 441 * 10
        )
        for oversampling in (1, 4, 16)
    }
    assert ratios[16] < -80.0
    assert ratios[1] > -30.0
    assert ratios[1] > ratios[4] + 20.0 > ratios[16] + 40.0


@pytest.mark.parametrize("oversampling", [8, 16])
def test_resampling_filter_meets_its_specification(oversampling):
    """Checked with scipy.signal.freqz: passband (to 0.45 fs) flat within 2e-5, stop band
    (from the audio Nyquist to the internal one) 99 dB down or more (Kaiser's design formula
    aims at 100 dB)."""
    taps = resampling_filter(oversampling)
    assert len(taps) % 2 == 1 and np.allclose(taps, taps[::-1])
    freqs, response = freqz(taps, worN=1 << 15, fs=SR * oversampling)
    magnitude = np.abs(response)
    assert np.max(np.abs(magnitude[freqs <= 0.45 * SR] - 1)) < 2e-5
    assert 20 * np.log10(np.max(magnitude[freqs >= 0.5 * SR])) < -99.0


def test_silence_dtypes_and_shapes():
    for dtype in (torch.float32, torch.float64):
        zeros = torch.zeros(2, 3, 300, dtype=dtype)
        y = diode_clipper(zeros, SR)
        assert y.dtype == dtype and y.shape == zeros.shape
        assert torch.equal(y, zeros)  # silence in, silence out, exactly

    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.5, 0.5, (2, 3, 400)))
    y = diode_clipper(x, SR)
    for index in np.ndindex(2, 3):  # every signal independent of the others
        torch.testing.assert_close(y[index], diode_clipper(x[index], SR), rtol=0, atol=0)
    y32 = diode_clipper(x.float(), SR)
    assert y32.dtype == torch.float32
    # float32 only rounds the input and the output; the work is in float64
    torch.testing.assert_close(
        y32.double(), diode_clipper(x.float().double(), SR), atol=1e-6, rtol=0
    )
    assert not diode_clipper(x.requires_grad_(), SR).requires_grad  # a reference, no gradient


@pytest.mark.parametrize(
    ("x", "kwargs", "name"),
    [
        (torch.tensor([0.0, float("nan")]), {}, "x"),
        (torch.tensor([0.0, float("inf")]), {}, "x"),
        (torch.zeros(4, dtype=torch.int32), {}, "x"),
        (torch.zeros(2, 0), {}, "x"),
        (np.zeros(4), {}, "x"),
        (torch.zeros(4), {"sample_rate": 0.0}, "sample_rate"),
        (torch.zeros(4), {"oversampling": 0}, "oversampling"),
        (torch.zeros(4), {"oversampling": 2.5}, "oversampling"),
        (torch.zeros(4), {"cutoff_hz": 30000.0, "oversampling": 1}, "cutoff_hz"),
        (torch.zeros(4), {"cutoff_hz": -1.0}, "cutoff_hz"),
        (torch.zeros(4), {"cutoff_hz": float("nan")}, "cutoff_hz"),
        (torch.zeros(4), {"drive_db": 200.0}, "drive_db"),
        (torch.zeros(4), {"drive_db": float("inf")}, "drive_db"),
        (torch.zeros(4), {"output_gain_db": float("nan")}, "output_gain_db"),
        (torch.zeros(4), {"resistance_ohm": 0.0}, "resistance_ohm"),
        (torch.zeros(4), {"saturation_current_a": -1e-9}, "saturation_current_a"),
        (torch.zeros(4), {"ideality": 0.0}, "ideality"),
    ],
)
def test_bad_input_is_named(x, kwargs, name):
    kwargs = {"sample_rate": SR, **kwargs}
    with pytest.raises(ValueError, match=name):
        diode_clipper(x, **kwargs)
