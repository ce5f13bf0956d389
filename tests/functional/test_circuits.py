"""Diode clipper against an ODE solver, the RC low-pass limit, symmetry and aliasing."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.signal import resample_poly

from diffx.effects import DiodeClipper
from diffx.functional.circuits import (
    DIODE_IDEALITY,
    DIODE_SATURATION_CURRENT_A,
    SERIES_RESISTANCE_OHM,
    THERMAL_VOLTAGE_V,
    _clipper_trapezoidal,
    diode_clipper,
)

SR = 44100


def _sine(f0, seconds, level_dbfs=-6.0, sample_rate=SR):
    n = np.arange(int(seconds * sample_rate))
    return 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * f0 * n / sample_rate)


def _reference_solution(f0, level_dbfs, drive_db, cutoff_hz, t):
    """The clipper ODE driven by a continuous sine, solved by scipy's stiff Radau solver."""
    c = 1 / (2 * math.pi * SERIES_RESISTANCE_OHM * cutoff_hz)
    amplitude = 10 ** (drive_db / 20) * 10 ** (level_dbfs / 20)
    nvt = DIODE_IDEALITY * THERMAL_VOLTAGE_V
    k = 2 * DIODE_SATURATION_CURRENT_A / c

    def rhs(time, v):
        u = amplitude * math.sin(2 * math.pi * f0 * time)
        return (u - v) / (SERIES_RESISTANCE_OHM * c) - k * np.sinh(v / nvt)

    return solve_ivp(rhs, (0, t[-1]), [0.0], method="Radau", t_eval=t, rtol=1e-11, atol=1e-13).y[0]


def test_integrator_converges_to_the_ode_solution():
    """At 32x the trapezoidal rule (second order) is within 1e-5 V of the stiff solver, and
    halving the step cuts the error about fourfold."""
    f0, drive_db, cutoff = 200.0, 20.0, 7000.0
    errors = []
    for oversampling in (16, 32):
        rate = SR * oversampling
        t = np.arange(int(0.01 * rate)) / rate
        ref = _reference_solution(f0, -6.0, drive_db, cutoff, t)
        u = 10 ** (drive_db / 20) * 10 ** (-6 / 20) * np.sin(2 * np.pi * f0 * t)
        c = 1 / (2 * math.pi * SERIES_RESISTANCE_OHM * cutoff)
        v = _clipper_trapezoidal(
            u,
            1 / rate,
            SERIES_RESISTANCE_OHM * c,
            2 * DIODE_SATURATION_CURRENT_A / c,
            1 / (DIODE_IDEALITY * THERMAL_VOLTAGE_V),
        )
        errors.append(np.max(np.abs(v - ref)))
    assert errors[1] < 1e-5
    assert 2.5 < errors[0] / errors[1] < 6.0


def test_audio_rate_output_is_the_decimated_ode_solution():
    """Through the resamplers, the output equals the stiff solver's solution band-limited to
    the audio rate (decimated by scipy), away from the ends."""
    f0, drive_db, cutoff, oversampling = 200.0, 20.0, 7000.0, 16
    x = _sine(f0, 0.02)
    y = diode_clipper(torch.tensor(x), SR, drive_db, cutoff, oversampling=oversampling).numpy()
    rate = SR * oversampling
    ref_high = _reference_solution(
        f0, -6.0, drive_db, cutoff, np.arange(len(x) * oversampling) / rate
    )
    ref = resample_poly(ref_high, 1, oversampling, window=("kaiser", 10.0))
    inner = slice(200, len(x) - 200)
    assert np.max(np.abs(y[inner] - ref[inner])) < 1e-4 * np.max(np.abs(ref))


def test_small_signal_is_the_rc_lowpass():
    cutoff = 3000.0
    for f0 in (500.0, 3000.0, 9000.0):
        x = _sine(f0, 0.2, level_dbfs=-100.0)  # microvolts: the diodes stay off
        y = diode_clipper(torch.tensor(x), SR, 0.0, cutoff, oversampling=8).numpy()
        seg = slice(SR // 20, len(x) - SR // 50)
        gain = np.std(y[seg]) / np.std(x[seg])
        expected = 1 / math.sqrt(1 + (f0 / cutoff) ** 2)
        assert gain == pytest.approx(expected, rel=2e-3), f0


def test_large_signal_bounded_odd_symmetric_odd_harmonics():
    x = torch.tensor(_sine(1000.0, 0.5, 0.0))
    y = diode_clipper(x, SR, drive_db=40.0).numpy()
    assert np.max(np.abs(y)) < 1.0
    y_neg = diode_clipper(-x, SR, drive_db=40.0).numpy()
    np.testing.assert_allclose(y_neg, -y, atol=1e-12)
    seg = y[SR // 10 : SR // 10 + 44100 // 4]
    spectrum = np.abs(np.fft.rfft(seg * np.blackman(len(seg))))
    freqs = np.fft.rfftfreq(len(seg), 1 / SR)
    level = {k: spectrum[np.argmin(np.abs(freqs - 1000 * k))] for k in range(1, 8)}
    for k in (2, 4, 6):
        assert level[k] < 1e-6 * level[1]
    assert level[3] > 0.1 * level[1]  # strongly clipped


def _alias_ratio_db(y, f0):
    seg = y[SR // 10 : SR // 10 + 32768]
    spectrum = np.abs(np.fft.rfft(seg * np.blackman(len(seg)))) ** 2
    freqs = np.fft.rfftfreq(len(seg), 1 / SR)
    harmonic = np.zeros_like(spectrum, dtype=bool)
    for k in range(1, int(SR / 2 / f0) + 1):
        harmonic |= np.abs(freqs - k * f0) < 6 * SR / len(seg)
    return 10 * np.log10(spectrum[~harmonic].sum() / spectrum[harmonic].sum())


def test_oversampling_removes_aliasing():
    f0 = 4000.0
    x = torch.tensor(_sine(f0, 1.0, -6.0))
    clean = _alias_ratio_db(diode_clipper(x, SR, 30.0, oversampling=16).numpy(), f0)
    bare = _alias_ratio_db(diode_clipper(x, SR, 30.0, oversampling=1).numpy(), f0)
    assert clean < -60.0
    assert bare > clean + 20.0


def test_module_shapes_dtypes_and_silence():
    clipper = DiodeClipper(SR, drive_db=24.0)
    for dtype in (torch.float32, torch.float64):
        x = torch.zeros(2, 1, 500, dtype=dtype)
        y = clipper(x)
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.equal(y, torch.zeros_like(y))
    x = torch.randn(2, 1, 300) * 0.1
    batched = clipper(x)
    torch.testing.assert_close(batched[1], clipper(x[1:])[0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="x"):
        diode_clipper(torch.tensor([0.0, float("nan")]), SR)
    with pytest.raises(ValueError, match="oversampling"):
        diode_clipper(torch.zeros(4), SR, oversampling=0)
    with pytest.raises(ValueError, match="cutoff_hz"):
        diode_clipper(torch.zeros(4), SR, cutoff_hz=30000.0, oversampling=1)
    with pytest.raises(ValueError, match="ideality"):
        diode_clipper(torch.zeros(4), SR, ideality=0.0)
    with pytest.raises(ValueError, match="cutoff_hz"):
        DiodeClipper(SR, cutoff_hz=-1.0)
