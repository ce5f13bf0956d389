"""Circuit simulations used as reference devices (not differentiable).

The diode clipper: a series resistor ``R`` into a capacitor ``C`` to ground with an
antiparallel pair of diodes across ``C`` (Yeh, Abel & Smith, "Simplified, physically-informed
models of distortion and overdrive guitar effects pedals", DAFx 2007). With the Shockley diode
law the capacitor voltage obeys::

    dv/dt = (v_in - v) / (R C) - (2 I_s / C) sinh(v / (n V_t))

It is a low-pass filter below the diodes' knee (cut-off ``1 / (2 pi R C)``) and a soft clipper
with memory above it: the classic overdrive/distortion pedal core and a standard benchmark of
virtual-analog modeling. Here it is integrated with the trapezoidal rule (Newton-Raphson on the
implicit equation) at ``oversampling`` times the audio rate, between a long Kaiser-window
polyphase interpolator and decimator, so that its output is practically free of aliasing: a
reference for neural models of it, which alias.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from scipy.signal import resample_poly

from diffx._validation import check_finite, check_integer, check_sample_rate

DIODE_SATURATION_CURRENT_A = 2.52e-9
"""Shockley saturation current I_s of the clipping diodes (Yeh et al., DAFx 2007, 1N914)."""
DIODE_IDEALITY = 1.752
"""Ideality factor n of the diodes (Yeh et al., DAFx 2007)."""
THERMAL_VOLTAGE_V = 25.85e-3
"""Thermal voltage V_t at room temperature, volts."""
SERIES_RESISTANCE_OHM = 2.2e3
"""Series resistor R (Yeh et al., DAFx 2007)."""
DEFAULT_CUTOFF_HZ = 1.0 / (2 * math.pi * SERIES_RESISTANCE_OHM * 10e-9)
"""Small-signal cut-off with Yeh et al.'s C = 10 nF: about 7.23 kHz."""
RESAMPLER_KAISER_BETA = 10.0
"""Kaiser window beta of the polyphase interpolator/decimator (about 100 dB stop band)."""
NEWTON_TOLERANCE_V = 1e-12
NEWTON_MAX_ITERATIONS = 60
NEWTON_MAX_STEP_V = 0.1
"""Newton steps are limited to this size so a far first guess cannot overshoot into the
exponential region of sinh (the residual is monotonic, so the limited iteration converges)."""


@numba.njit(cache=True)
def _clipper_trapezoidal(u, h, rc, k, inv_nvt):  # pragma: no cover - compiled
    # v' = f(v, u) = (u - v) / rc - k sinh(v / nVt), with k = 2 I_s / C.
    out = np.empty_like(u)
    v = 0.0
    f_prev = u[0] / rc  # f at v = 0 with the first input (the circuit starts at rest)
    for n in range(u.shape[0]):
        un = u[n]
        rhs = v + 0.5 * h * f_prev
        x = v
        for _ in range(NEWTON_MAX_ITERATIONS):
            s = math.sinh(x * inv_nvt)
            g = x - rhs - 0.5 * h * ((un - x) / rc - k * s)
            dg = 1.0 + 0.5 * h * (1.0 / rc + k * inv_nvt * math.cosh(x * inv_nvt))
            step = g / dg
            if step > NEWTON_MAX_STEP_V:
                step = NEWTON_MAX_STEP_V
            elif step < -NEWTON_MAX_STEP_V:
                step = -NEWTON_MAX_STEP_V
            x -= step
            if abs(step) < NEWTON_TOLERANCE_V:
                break
        v = x
        f_prev = (un - v) / rc - k * math.sinh(v * inv_nvt)
        out[n] = v
    return out


def diode_clipper(
    x: torch.Tensor,
    sample_rate: float,
    drive_db: float = 24.0,
    cutoff_hz: float = DEFAULT_CUTOFF_HZ,
    oversampling: int = 8,
    output_gain_db: float = 0.0,
    resistance_ohm: float = SERIES_RESISTANCE_OHM,
    saturation_current_a: float = DIODE_SATURATION_CURRENT_A,
    ideality: float = DIODE_IDEALITY,
) -> torch.Tensor:
    """Simulate the diode clipper on audio (reference device; no gradient).

    Full scale maps to volts: the input ``x`` (1.0 = 0 dBFS) times the drive gain is the
    source voltage ``v_in`` in volts, and the capacitor voltage in volts (about +-0.7 V when the
    diodes conduct) times the output gain is the output.

    Args:
        x: ``(..., samples)`` audio, finite.
        sample_rate: Hz.
        drive_db: gain before the circuit, dB.
        cutoff_hz: small-signal cut-off ``1 / (2 pi R C)``; sets ``C``. Below the
            oversampled Nyquist frequency.
        oversampling: integer factor of the internal rate (8 or more for an alias-free output
            of a hard-driven clipper; 1 runs at the audio rate, aliasing).
        output_gain_db: gain after the circuit, dB.
        resistance_ohm, saturation_current_a, ideality: R, I_s and n of the circuit.

    Returns:
        ``(..., samples)`` output of ``x``'s dtype and device, computed in float64 numpy.

    Raises:
        ValueError: non-finite audio, or a parameter out of range (named).
    """
    check_finite(x, "x")
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last (samples) axis, got shape {tuple(x.shape)}")
    sample_rate = check_sample_rate(sample_rate)
    oversampling = check_integer(oversampling, "oversampling", 1)
    for name, value in (("drive_db", drive_db), ("output_gain_db", output_gain_db)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
    for name, value in (
        ("resistance_ohm", resistance_ohm),
        ("saturation_current_a", saturation_current_a),
        ("ideality", ideality),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value!r}")
    internal_rate = sample_rate * oversampling
    if not 0 < cutoff_hz < internal_rate / 2:
        raise ValueError(
            f"cutoff_hz must lie in (0, {internal_rate / 2:g}) Hz (the internal Nyquist), "
            f"got {cutoff_hz!r}"
        )
    capacitance_f = 1.0 / (2 * math.pi * resistance_ohm * cutoff_hz)
    rc = resistance_ohm * capacitance_f
    k = 2 * saturation_current_a / capacitance_f
    inv_nvt = 1.0 / (ideality * THERMAL_VOLTAGE_V)
    h = 1.0 / internal_rate

    audio = x.detach().to("cpu", torch.float64).numpy().reshape(-1, x.shape[-1])
    drive = 10.0 ** (drive_db / 20.0)
    out = np.empty_like(audio)
    for row in range(audio.shape[0]):
        u = drive * audio[row]
        if oversampling > 1:
            u = resample_poly(u, oversampling, 1, window=("kaiser", RESAMPLER_KAISER_BETA))
        v = _clipper_trapezoidal(np.ascontiguousarray(u), h, rc, k, inv_nvt)
        if oversampling > 1:
            v = resample_poly(v, 1, oversampling, window=("kaiser", RESAMPLER_KAISER_BETA))
        out[row] = v[: audio.shape[1]]
    out *= 10.0 ** (output_gain_db / 20.0)
    return torch.from_numpy(out.reshape(x.shape)).to(device=x.device, dtype=x.dtype)
