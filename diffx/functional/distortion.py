"""Memoryless waveshaping distortion with optional first-order antiderivative anti-aliasing.

A static nonlinearity ``f`` creates harmonics above Nyquist that fold back as aliases. First
order antiderivative anti-aliasing (ADAA) replaces ``f(u[n])`` by the average of ``f`` over the
straight line from ``u[n-1]`` to ``u[n]``::

    y[n] = (F(u[n]) - F(u[n-1])) / (u[n] - u[n-1]),      F' = f,

i.e. a continuous-time rectangular (one-sample) low-pass applied before re-sampling (J. D.
Parker, V. Zavalishin and E. Le Bivic, "Reducing the aliasing of nonlinear waveshaping using
continuous-time convolution", DAFx 2016; S. Bilbao, F. Esqueda, J. D. Parker and V. Valimaki,
"Antiderivative antialiasing for memoryless nonlinearities", IEEE SPL 24(7), 2017).

Two consequences, both documented on each function:

* Half-sample delay: the average is centred between the samples, so the ADAA output is
  ``f(u)`` delayed by half a sample. Where ``f`` is linear the average is exactly the two-tap
  mean ``(u[n] + u[n-1]) / 2``, a low-pass ``cos(w / 2)``: -0.7 dB at fs/8, -3 dB at fs/4,
  zero at Nyquist. The first output sample uses ``u[-1] = 0`` (the signal is taken to start
  from silence).
* Ill-conditioning: when consecutive samples are close the quotient is 0/0 in the limit and
  loses precision to cancellation, so the first-order fallback ``f((u[n] + u[n-1]) / 2)`` (the
  midpoint rule for the same average) is used when
  ``|u[n] - u[n-1]| <= tol * max(1, |u[n]|, |u[n-1]|)``. The default ``tol`` per dtype
  (``adaa_tolerance``) balances the two errors: cancellation costs about
  ``eps * |F| / |du|`` and the midpoint rule ``|f''| du**2 / 24``; with ``|F| <~ max(1, |u|)``
  they are equal near ``du = (16 eps) ** (1 / 3)`` (0.0124 in float32, 1.5e-5 in float64).
  The relative scaling by ``max(1, |u|)`` keeps the cancellation error bounded in the
  saturated region, where ``f'' ~ 0`` and the midpoint rule is accurate anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from diffx._validation import as_param, check_audio
from diffx.functional.utility import db_to_amplitude

ANTIALIASING = (None, "adaa1")
# Drive and threshold ranges (dB). Beyond +-60 dB of drive the shapers are linear or fully
# saturated to float precision; clip thresholds span -100 dBFS to +40 dB.
MAX_ABS_DRIVE_DB = 60.0
MIN_THRESHOLD_DB = -100.0
MAX_THRESHOLD_DB = 40.0
LOG_2 = math.log(2.0)
# Shaper inputs are clipped to +-1e15 (300 dB above full scale): every shaper is saturated to
# float precision long before, and the antiderivatives (~|u|) and ADAA's differences stay finite
# for any finite audio, even where ``x * drive`` overflows float32.
MAX_SHAPER_INPUT = 1e15


def adaa_tolerance(dtype: torch.dtype) -> float:
    """Default relative ill-conditioning tolerance of ADAA for ``dtype``: ``(16 eps) ** (1/3)``."""
    return (16.0 * torch.finfo(dtype).eps) ** (1.0 / 3.0)


def _check_antialiasing(antialiasing: str | None, adaa_tol: float | None = None) -> None:
    if antialiasing not in ANTIALIASING:
        raise ValueError(f"antialiasing must be one of {ANTIALIASING}, got {antialiasing!r}")
    if adaa_tol is not None:
        _check_tolerance(adaa_tol, "adaa_tol")


def _check_tolerance(tol: float, name: str) -> float:
    """A relative ADAA tolerance must be a number in [0, 1] (1 = always the midpoint rule)."""
    try:
        value = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {tol!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must be a number in [0, 1], got {tol!r}")
    return value


def adaa1(
    u: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    antiderivative: Callable[[torch.Tensor], torch.Tensor],
    tol: float | None = None,
) -> torch.Tensor:
    """First-order antiderivative anti-aliasing of the waveshaper ``f`` along the last axis.

    Args:
        u: ``(..., samples)`` input of the nonlinearity.
        f: the nonlinearity (elementwise, differentiable).
        antiderivative: ``F`` with ``F' = f`` (elementwise, differentiable).
        tol: relative tolerance of the midpoint fallback, in [0, 1]; ``None`` =
            ``adaa_tolerance(dtype)``.

    Returns:
        ``(..., samples)`` anti-aliased output, delayed by half a sample relative to ``f(u)``.
    """
    tol = adaa_tolerance(u.dtype) if tol is None else _check_tolerance(tol, "tol")
    u_prev = torch.nn.functional.pad(u[..., :-1], (1, 0))
    du = u - u_prev
    scale = torch.maximum(u.abs(), u_prev.abs()).clamp_min(1.0)
    close = du.abs() <= tol * scale
    # A safe denominator keeps the unused branch finite, so torch.where passes finite
    # gradients (0 * inf would give NaN) when samples are equal, e.g. for silence.
    safe_du = torch.where(close, torch.ones_like(du), du)
    quotient = (antiderivative(u) - antiderivative(u_prev)) / safe_du
    midpoint = f(0.5 * (u + u_prev))
    return torch.where(close, midpoint, quotient)


def _log_cosh(u: torch.Tensor) -> torch.Tensor:
    # log cosh u = u + log(1 + exp(-2u)) - log 2, smooth everywhere and overflow-free.
    return u + torch.nn.functional.softplus(-2.0 * u) - LOG_2


def _hard(u: torch.Tensor) -> torch.Tensor:
    return u.clamp(-1.0, 1.0)


def _hard_antiderivative(u: torch.Tensor) -> torch.Tensor:
    a = u.abs()
    return torch.where(a <= 1.0, 0.5 * u * u, a - 0.5)


def _cubic(u: torch.Tensor) -> torch.Tensor:
    v = u.clamp(-1.0, 1.0)
    return 1.5 * v - 0.5 * v**3


def _cubic_antiderivative(u: torch.Tensor) -> torch.Tensor:
    # 1.5 (u^2 / 2 - u^4 / 12) inside [-1, 1]; continues as |u| - 3/8 (F(1) = 5/8).
    a = u.abs()
    u2 = u * u
    return torch.where(a <= 1.0, 0.75 * u2 - 0.125 * u2 * u2, a - 0.375)


def _shape(
    x: torch.Tensor,
    pre: torch.Tensor,
    post: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    antiderivative: Callable[[torch.Tensor], torch.Tensor],
    antialiasing: str | None,
    tol: float | None,
) -> torch.Tensor:
    """``post * f(pre * x)`` with ``pre``, ``post`` shaped ``(batch,)``, optionally with ADAA.

    ``pre * x`` is clipped to ``+-MAX_SHAPER_INPUT`` (no gradient flows past the clip).
    """
    u = (x * pre[:, None, None]).clamp(-MAX_SHAPER_INPUT, MAX_SHAPER_INPUT)
    y = f(u) if antialiasing is None else adaa1(u, f, antiderivative, tol)
    return y * post[:, None, None]


def tanh_distortion(
    x: torch.Tensor,
    drive_db: torch.Tensor | float = 0.0,
    antialiasing: str | None = None,
    adaa_tol: float | None = None,
) -> torch.Tensor:
    """Hyperbolic tangent saturation ``y = tanh(g x)``, ``g = 10 ** (drive_db / 20)``.

    With ``antialiasing="adaa1"`` the output is the first-order ADAA of ``tanh`` (antiderivative
    ``log cosh``), delayed by half a sample; see the module docstring.

    Args:
        x: ``(batch, channels, samples)`` audio.
        drive_db: ``(batch,)`` or scalar input gain in dB, within ``+-MAX_ABS_DRIVE_DB``.
        antialiasing: ``None`` or ``"adaa1"``.
        adaa_tol: relative tolerance of the ADAA fallback in [0, 1] (``None`` =
            ``adaa_tolerance``).

    Returns:
        ``(batch, channels, samples)`` audio in (-1, 1).
    """
    check_audio(x, "x")
    _check_antialiasing(antialiasing, adaa_tol)
    g = db_to_amplitude(
        as_param(drive_db, "drive_db", x.shape[0], x, -MAX_ABS_DRIVE_DB, MAX_ABS_DRIVE_DB)
    )
    return _shape(x, g, torch.ones_like(g), torch.tanh, _log_cosh, antialiasing, adaa_tol)


def hard_clip(
    x: torch.Tensor,
    threshold_db: torch.Tensor | float = 0.0,
    antialiasing: str | None = None,
    adaa_tol: float | None = None,
) -> torch.Tensor:
    """Hard clipping ``y = clamp(x, -c, c)``, ``c = 10 ** (threshold_db / 20)``.

    Computed as ``c * clamp(x / c, -1, 1)``, so ADAA (antiderivative ``u**2 / 2`` inside,
    ``|u| - 1/2`` outside) and its tolerance act on the normalized signal ``x / c``. With
    ``antialiasing="adaa1"`` the output is delayed by half a sample.

    Args:
        x: ``(batch, channels, samples)`` audio.
        threshold_db: ``(batch,)`` or scalar clip level in dBFS, in
            ``[MIN_THRESHOLD_DB, MAX_THRESHOLD_DB]``.
        antialiasing: ``None`` or ``"adaa1"``.
        adaa_tol: relative tolerance of the ADAA fallback in [0, 1] (``None`` =
            ``adaa_tolerance``).

    Returns:
        ``(batch, channels, samples)`` audio within ``[-c, c]``.
    """
    check_audio(x, "x")
    _check_antialiasing(antialiasing, adaa_tol)
    t = as_param(threshold_db, "threshold_db", x.shape[0], x, MIN_THRESHOLD_DB, MAX_THRESHOLD_DB)
    c = db_to_amplitude(t)
    return _shape(x, 1.0 / c, c, _hard, _hard_antiderivative, antialiasing, adaa_tol)


def soft_clip(
    x: torch.Tensor,
    drive_db: torch.Tensor | float = 0.0,
    antialiasing: str | None = None,
    adaa_tol: float | None = None,
) -> torch.Tensor:
    """Cubic soft clipper ``y = 1.5 u - 0.5 u**3`` for ``|u| <= 1``, ``sign(u)`` beyond.

    ``u = 10 ** (drive_db / 20) * x``. The cubic has unit output and zero slope at ``|u| = 1``
    (slope 1.5 at the origin), so the curve is continuous with a continuous first derivative.
    With ``antialiasing="adaa1"`` (antiderivative ``0.75 u**2 - 0.125 u**4`` inside,
    ``|u| - 3/8`` outside) the output is delayed by half a sample.

    Args:
        x: ``(batch, channels, samples)`` audio.
        drive_db: ``(batch,)`` or scalar input gain in dB, within ``+-MAX_ABS_DRIVE_DB``.
        antialiasing: ``None`` or ``"adaa1"``.
        adaa_tol: relative tolerance of the ADAA fallback in [0, 1] (``None`` =
            ``adaa_tolerance``).

    Returns:
        ``(batch, channels, samples)`` audio in [-1, 1].
    """
    check_audio(x, "x")
    _check_antialiasing(antialiasing, adaa_tol)
    g = db_to_amplitude(
        as_param(drive_db, "drive_db", x.shape[0], x, -MAX_ABS_DRIVE_DB, MAX_ABS_DRIVE_DB)
    )
    return _shape(x, g, torch.ones_like(g), _cubic, _cubic_antiderivative, antialiasing, adaa_tol)
