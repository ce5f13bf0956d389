"""Circuit simulations used as reference devices (not differentiable).

The diode clipper: a series resistor ``R`` into a capacitor ``C`` to ground, with an
antiparallel pair of diodes across ``C`` (Yeh, Abel & Smith, "Simplified, physically-informed
models of distortion and overdrive guitar effects pedals", DAFx 2007; a standard benchmark of
virtual-analog modeling since). With the Shockley diode law, i = I_s (exp(v / (n V_t)) - 1) per
diode, the capacitor voltage ``v`` driven by the source ``v_in`` obeys::

    dv/dt = (v_in - v) / (R C) - (2 I_s / C) sinh(v / (n V_t))

Below the diodes' knee it is a first-order RC low-pass (cut-off ``1 / (2 pi R C)``); above it,
a soft clipper with memory that settles near +-0.7 V: the core of the overdrive/distortion
pedal. Here it is integrated with the trapezoidal rule, solved per sample by safeguarded
Newton-Raphson, at ``oversampling`` times the audio rate between a long Kaiser-window
polyphase interpolator and decimator, so that the output is practically free of aliasing: the
alias-free reference that neural models of the device (which alias) are compared against.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
from scipy.signal import firwin, kaiserord, resample_poly

from diffx._validation import check_audio, check_integer, check_sample_rate

# Circuit values. R and C are those of Yeh, Abel & Smith (DAFx 2007): R = 2.2 kOhm,
# C = 0.01 uF. I_s and n are the 1N914/1N4148 silicon switching diode's standard SPICE model
# (IS=2.52n, N=1.752, as in LTspice's standard.dio), the diode of that pedal family; with
# V_t = kT/q at 300 K this gives n V_t = 45.3 mV.
SERIES_RESISTANCE_OHM = 2.2e3
"""Series resistor R, ohms (Yeh et al., DAFx 2007)."""
CAPACITANCE_F = 10e-9
"""Capacitor C, farads (Yeh et al., DAFx 2007); only sets :data:`DEFAULT_CUTOFF_HZ`."""
DIODE_SATURATION_CURRENT_A = 2.52e-9
"""Shockley saturation current I_s of each diode, amperes (1N914/1N4148 SPICE model)."""
DIODE_IDEALITY = 1.752
"""Ideality (emission) factor n of each diode (1N914/1N4148 SPICE model)."""
THERMAL_VOLTAGE_V = 25.85e-3
"""Thermal voltage V_t = kT/q at 300 K, volts."""
DEFAULT_CUTOFF_HZ = 1.0 / (2 * math.pi * SERIES_RESISTANCE_OHM * CAPACITANCE_F)
"""Small-signal cut-off of Yeh et al.'s circuit, 1 / (2 pi R C): about 7234 Hz."""
DEFAULT_DRIVE_DB = 24.0
"""Default drive: guitar peaking at -6..0 dBFS reaches 8..16 V, 20-30 times the ~0.5 V where
the diodes start to conduct, and a 1 kHz tone at -12 dBFS (4 V) comes out with a total
harmonic distortion of about 30 %: a high-gain pedal."""
MAX_DRIVE_DB = 80.0
"""Largest drive accepted: full scale is then a 10 kV source, far past square-wave clipping;
beyond it the float64 arithmetic of the diode current would eventually overflow."""
MAX_ABS_OUTPUT_GAIN_DB = 120.0
"""Output gains beyond +-120 dB are taken as a mistake rather than a setting."""

# Resampling filter: linear phase, designed at the internal rate. It passes 0..0.45 fs and
# stops from 0.5 fs (the audio Nyquist) on by 100 dB, so that nothing the clipper makes above
# the audio band folds back on decimation, and no image of the input enters the circuit on
# interpolation. Kaiser's formulas (scipy.signal.kaiserord) size it: 1027 taps at 8x.
RESAMPLER_PASSBAND_EDGE = 0.45
"""Passband edge of the resampling filter, as a fraction of the audio sample rate."""
RESAMPLER_STOPBAND_EDGE = 0.5
"""Stopband edge of the resampling filter, as a fraction of the audio sample rate."""
RESAMPLER_ATTENUATION_DB = 100.0
"""Stopband attenuation (and passband ripple 10^(-100/20)) of the resampling filter."""

NEWTON_TOLERANCE_V = 1e-10
"""Newton stops when its last step is below this. The error left after a Newton step of
size s is about s^2 / (n V_t), so a 1e-10 V step leaves ~1e-19 V; a bisection step (taken when
Newton would leave the bracket) leaves at most its own size."""
NEWTON_MAX_ITERATIONS = 50
"""The bracket around the root starts below 2 V wide; 50 halvings take it below 1e-14 V, so the
iteration has converged by then even if every step were a bisection."""


@functools.lru_cache(maxsize=16)
def resampling_filter(oversampling: int) -> np.ndarray:
    """Taps of the Kaiser-window low-pass used to resample by ``oversampling``.

    Args:
        oversampling: integer factor > 1 between the internal and the audio rate.

    Returns:
        ``(taps,)`` float64, odd length, unit DC gain, designed at the internal rate
        (read-only; :func:`scipy.signal.resample_poly` scales it by the up factor itself).
    """
    # Widths and edges relative to the internal Nyquist frequency, as scipy expects.
    width = 2 * (RESAMPLER_STOPBAND_EDGE - RESAMPLER_PASSBAND_EDGE) / oversampling
    cutoff = (RESAMPLER_STOPBAND_EDGE + RESAMPLER_PASSBAND_EDGE) / oversampling
    numtaps, beta = kaiserord(RESAMPLER_ATTENUATION_DB, width)
    numtaps += 1 - numtaps % 2  # odd: a whole-sample group delay that resample_poly removes
    taps = firwin(numtaps, cutoff, window=("kaiser", beta))
    taps.setflags(write=False)
    return taps


@numba.njit(cache=True)
def _sinh_cosh(y):  # pragma: no cover - compiled
    # one exp for both; y >= 0 here, and the relative cancellation error of e - 1/e near 0 is
    # harmless (the term it feeds is ~1e-7 of the linear terms there)
    e = math.exp(y)
    inv = 1.0 / e
    return 0.5 * (e - inv), 0.5 * (e + inv)


@numba.njit(cache=True)
def _solve_step(c, a, b, nvt, guess):  # pragma: no cover - compiled
    """Root of g(x) = (1 + a) x + b sinh(x / nvt) - c for c >= 0, by safeguarded Newton.

    g is strictly increasing and convex for x >= 0, so the root lies in
    [0, min(c / (1 + a), nvt asinh(c / b))] (each term alone must not exceed c). Every
    evaluation shrinks that bracket; a Newton step that would leave it is replaced by
    bisection, so the iteration converges from any guess and never overflows.
    """
    if c == 0.0:
        return 0.0
    lo = 0.0
    hi = min(c / (1.0 + a), nvt * math.asinh(c / b))
    x = min(max(guess, lo), hi)
    for _ in range(NEWTON_MAX_ITERATIONS):
        s, ch = _sinh_cosh(x / nvt)
        g = (1.0 + a) * x + b * s - c
        if g > 0.0:
            hi = x
        elif g < 0.0:
            lo = x
        else:
            return x
        x_new = x - g / (1.0 + a + b * ch / nvt)
        if not lo < x_new < hi:
            x_new = 0.5 * (lo + hi)
        if abs(x_new - x) <= NEWTON_TOLERANCE_V:
            return x_new
        x = x_new
    return x


@numba.njit(cache=True)
def _clipper_trapezoidal(u, h, rc, k, nvt):  # pragma: no cover - compiled
    """Trapezoidal-rule solution of the clipper ODE for each row of ``u`` (volts), at rest at
    the start (v = 0 and a silent input before the first sample).

    With f(v, u) = (u - v) / rc - k sinh(v / nvt), the rule
    v[n] = v[n-1] + h/2 (f(v[n-1], u[n-1]) + f(v[n], u[n])) is, in v[n],
    (1 + a) v[n] + b sinh(v[n] / nvt) = v[n-1] + h/2 f[n-1] + a u[n], a = h / (2 rc),
    b = h k / 2. The state carried between samples is (v, f).
    """
    rows, n = u.shape
    out = np.empty_like(u)
    a = 0.5 * h / rc
    b = 0.5 * h * k
    for r in range(rows):
        v = 0.0
        f = 0.0
        for i in range(n):
            un = u[r, i]
            c = v + 0.5 * h * f + a * un
            # g is odd in (x, c): solve for |c| and restore the sign, so that the simulated
            # device is exactly antisymmetric, as the circuit is
            if c >= 0.0:
                x = _solve_step(c, a, b, nvt, v)
            else:
                x = -_solve_step(-c, a, b, nvt, -v)
            s, _ = _sinh_cosh(abs(x) / nvt)
            f = (un - x) / rc - k * math.copysign(s, x)
            v = x
            out[r, i] = x
    return out


def diode_clipper(
    x: torch.Tensor,
    sample_rate: float,
    drive_db: float = DEFAULT_DRIVE_DB,
    cutoff_hz: float = DEFAULT_CUTOFF_HZ,
    oversampling: int = 8,
    output_gain_db: float = 0.0,
    *,
    resistance_ohm: float = SERIES_RESISTANCE_OHM,
    saturation_current_a: float = DIODE_SATURATION_CURRENT_A,
    ideality: float = DIODE_IDEALITY,
) -> torch.Tensor:
    """Simulate the diode clipper on audio, practically without aliasing (reference device).

    This is a simulation to compare models against, not a differentiable op: the output carries
    no gradient (the input is detached) and the work runs in float64 numpy/numba on the CPU.

    Levels: ``x`` (1.0 = 0 dBFS) times the drive gain is the source voltage ``v_in`` in volts,
    so full scale at 0 dB drive is a 1 V peak. The output is the capacitor voltage in volts
    times the output gain, read as full scale again (1 V = 1.0). The capacitor stays within
    about +-0.8 V however hard it is driven, so at ``output_gain_db=0`` a driven guitar peaks
    near -3 dBFS; band-limiting the output back to the audio rate can add Gibbs overshoot to
    that where the clipped signal has much energy near the audio Nyquist frequency (hard-driven
    white noise peaks near 1.25).

    The circuit runs at ``sample_rate * oversampling``: the driven input is interpolated with
    a linear-phase Kaiser low-pass (passband to 0.45 ``sample_rate``, 100 dB down from the
    audio Nyquist on, :func:`resampling_filter`), the ODE is integrated with the trapezoidal
    rule (second order), each implicit step solved by safeguarded Newton-Raphson to 1e-10 V,
    and the result is decimated with the same filter. The circuit starts at rest and the
    audio is taken as silent before its first sample, so silence in gives silence out. The
    output is aligned with the input (the filters' delay is removed).

    Args:
        x: ``(..., samples)`` audio, full scale 1.0, finite; any leading shape, each signal
            processed independently.
        sample_rate: Hz.
        drive_db: gain before the circuit, dB, in [-120, :data:`MAX_DRIVE_DB`].
        cutoff_hz: small-signal cut-off ``1 / (2 pi R C)``, Hz; sets ``C`` from ``R``. Must lie
            below the internal Nyquist frequency ``sample_rate * oversampling / 2``.
        oversampling: integer factor >= 1 of the internal rate. 8 (default) or more keeps the
            aliases of a hard-driven guitar signal ~100 dB down; 1 runs the circuit at the
            audio rate, with no resampling filter, and aliases.
        output_gain_db: gain after the circuit, dB, within +-120 dB.
        resistance_ohm: series resistor R, ohms.
        saturation_current_a: diode saturation current I_s, amperes.
        ideality: diode ideality factor n (the thermal voltage is 25.85 mV).

    Returns:
        ``(..., samples)`` output, the dtype and device of ``x``.

    Raises:
        ValueError: ``x`` not a floating-point tensor, empty or non-finite; a parameter out of
            range (the message names it).
    """
    check_audio(x, "x", min_dim=1)
    sample_rate = check_sample_rate(sample_rate)
    oversampling = check_integer(oversampling, "oversampling", 1)
    drive_db = _check_range(drive_db, "drive_db", -MAX_ABS_OUTPUT_GAIN_DB, MAX_DRIVE_DB)
    output_gain_db = _check_range(
        output_gain_db, "output_gain_db", -MAX_ABS_OUTPUT_GAIN_DB, MAX_ABS_OUTPUT_GAIN_DB
    )
    internal_rate = sample_rate * oversampling
    cutoff_hz = _check_range(cutoff_hz, "cutoff_hz", 0.0, internal_rate / 2, open_=True)
    resistance_ohm = _check_range(resistance_ohm, "resistance_ohm", 0.0, math.inf, open_=True)
    saturation_current_a = _check_range(
        saturation_current_a, "saturation_current_a", 0.0, math.inf, open_=True
    )
    ideality = _check_range(ideality, "ideality", 0.0, math.inf, open_=True)

    capacitance_f = 1.0 / (2 * math.pi * resistance_ohm * cutoff_hz)
    rc = resistance_ohm * capacitance_f
    k = 2 * saturation_current_a / capacitance_f
    nvt = ideality * THERMAL_VOLTAGE_V

    length = x.shape[-1]
    volts = x.detach().to("cpu", torch.float64).numpy().reshape(-1, length)
    volts = volts * 10.0 ** (drive_db / 20.0)
    if oversampling > 1:
        taps = resampling_filter(oversampling)
        volts = resample_poly(volts, oversampling, 1, axis=-1, window=taps)
    v = _clipper_trapezoidal(np.ascontiguousarray(volts), 1.0 / internal_rate, rc, k, nvt)
    if oversampling > 1:
        v = resample_poly(v, 1, oversampling, axis=-1, window=taps)
    v = v[:, :length] * 10.0 ** (output_gain_db / 20.0)
    return torch.from_numpy(np.ascontiguousarray(v).reshape(x.shape)).to(
        device=x.device, dtype=x.dtype
    )


def _check_range(value: float, name: str, low: float, high: float, open_: bool = False) -> float:
    """``value`` as a float within [low, high] (or (low, high) with ``open_``), else raise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    inside = low < value < high if open_ else low <= value <= high
    if not (math.isfinite(value) and inside):
        interval = f"({low:g}, {high:g})" if open_ else f"[{low:g}, {high:g}]"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value
