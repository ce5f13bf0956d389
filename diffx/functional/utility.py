"""Gain, fractional delay and linear FFT convolution.

These are the small linear building blocks other effects reuse: ``fft_convolve`` backs the
convolution reverb and the time-varying filters of the synthesizer, ``fractional_delay`` the
phase-alignment task.
"""

from __future__ import annotations

import math

import scipy.fft
import torch

from diffx._validation import as_param, check_audio, check_sample_rate

# Gain range accepted by ``gain`` (dB). 10 ** (240 / 20) = 1e12 keeps a full-scale float32 signal
# (max ~3.4e38) far from overflow and 1e-12 far above its smallest normal number.
MAX_ABS_GAIN_DB = 240.0

# Longest delay accepted by ``fractional_delay`` (one hour): far beyond any audio use, and the
# delay in samples (at most 3.5e8 at 96 kHz) stays exact in an int64 index.
MAX_DELAY_MS = 3_600_000.0

CONVOLVE_MODES = ("causal", "full")


def db_to_amplitude(gain_db: torch.Tensor) -> torch.Tensor:
    """Convert decibels to a linear amplitude factor, ``10 ** (gain_db / 20)``."""
    # exp of a scaled value is one op and differentiates to itself times a constant.
    return torch.exp(gain_db * (math.log(10.0) / 20.0))


def gain(x: torch.Tensor, gain_db: torch.Tensor | float) -> torch.Tensor:
    """Scale audio by a gain in decibels.

    Args:
        x: ``(batch, channels, samples)`` audio.
        gain_db: ``(batch,)`` or scalar gain in dB, within ``+-MAX_ABS_GAIN_DB``.

    Returns:
        ``(batch, channels, samples)`` audio ``x * 10 ** (gain_db / 20)``.
    """
    check_audio(x, "x")
    B, C, T = x.shape  # batch, channels, samples
    g = as_param(gain_db, "gain_db", B, x, -MAX_ABS_GAIN_DB, MAX_ABS_GAIN_DB)
    return x * db_to_amplitude(g)[:, None, None]


def fractional_delay(
    x: torch.Tensor, delay_ms: torch.Tensor | float, sample_rate: float
) -> torch.Tensor:
    """Delay audio by a (fractional) number of milliseconds, exactly, in the frequency domain.

    The delay ``d = n + f`` (samples; ``n`` integer, ``0 <= f < 1``) is applied in two exact
    steps. The fractional part: ``x`` is zero-padded to ``N = next_fast_len(2 * samples + 1)``
    (``N`` depends on the length only, so every batch item is treated alike), transformed,
    multiplied by the linear phase ``exp(-2j pi k f / N)`` and transformed back. The integer
    part: the result is read ``n`` samples later by indexing, which is exact, costs nothing
    for any ``n`` and carries no gradient (``d y / d delay`` flows through ``f``; ``y`` is
    continuous in ``d`` across integers because the padding keeps the last sample from
    wrapping). The first ``samples`` samples are returned: the delay is causal and the end of
    the delayed signal is dropped.

    Accuracy: an integer delay is an exact shift with zeros in front, up to FFT rounding
    (~1e-15 relative in float64, ~1e-7 in float32). A fractional delay is band-limited
    (periodic-sinc) interpolation of the zero-padded signal; the sinc's periodic images lie
    at least ``samples`` samples away, so a signal that is band-limited and near zero at both
    ends (e.g. a windowed tone) is delayed to ~1e-12 in float64 and ~1e-6 in float32 (see the
    tests). A signal that starts or stops abruptly shows the Gibbs ringing any ideal fractional
    delay produces; the ringing before its onset is kept for ``(N - samples) // 2`` samples.
    At an even ``N`` the Nyquist bin, which must stay real, is multiplied by ``cos(pi f)``
    (the real part of the phase term), as ``irfft`` does.

    Args:
        x: ``(batch, channels, samples)`` audio.
        delay_ms: ``(batch,)`` or scalar delay in milliseconds, in [0, ``MAX_DELAY_MS``] (one
            hour); a delay of at least the signal's length gives silence.
        sample_rate: sample rate in Hz.

    Returns:
        ``(batch, channels, samples)`` delayed audio.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    B, C, T = x.shape  # batch, channels, samples
    delay = as_param(delay_ms, "delay_ms", B, x, 0.0, MAX_DELAY_MS) * (sr / 1000.0)  # samples
    whole = torch.floor(delay.detach())
    frac = delay - whole  # in [0, 1): the phase k f / N stays within half a turn
    n_fft = scipy.fft.next_fast_len(2 * T + 1, real=True)
    spectrum = torch.fft.rfft(x, n=n_fft)
    k = torch.arange(spectrum.shape[-1], device=x.device, dtype=x.dtype)
    phase = (-2.0 * math.pi / n_fft) * k[None, :] * frac[:, None]  # (batch, bins)
    shift = torch.polar(torch.ones_like(phase), phase)
    z = torch.fft.irfft(spectrum * shift[:, None, :], n=n_fft)  # (batch, channels, N)
    # Output sample t is z[t - n]; negative indices are the pre-onset ringing, which the
    # circular transform put at the end of z, kept for half of the padding.
    src = torch.arange(T, device=x.device)[None, :] - whole.to(torch.long)[:, None]  # (B, T)
    valid = src >= -((n_fft - T) // 2)
    index = torch.where(valid, src % n_fft, torch.zeros_like(src))
    y = z.gather(-1, index[:, None, :].expand(B, C, T))
    return y * valid[:, None, :].to(x.dtype)


def fft_convolve(x: torch.Tensor, h: torch.Tensor, mode: str = "causal") -> torch.Tensor:
    """Linear (not circular) convolution of ``x`` with ``h`` through real FFTs.

    The FFT length is at least ``samples + taps - 1`` and ``irfft`` is told that length
    explicitly, so odd and even sizes are both exact (``irfft`` without ``n`` assumes an even
    length and is wrong otherwise).

    Args:
        x: ``(..., samples)`` signal.
        h: ``(..., taps)`` impulse response; leading dimensions broadcast against ``x``'s
            (e.g. ``x (batch, channels, T)`` with ``h (1, channels, K)`` or ``(batch, 1, K)``).
        mode: ``"causal"`` returns the first ``samples`` samples of the full convolution
            (the output lines up with ``x``; the tail is dropped), ``"full"`` all
            ``samples + taps - 1``.

    Returns:
        ``(broadcast leading dims, samples)`` for ``"causal"``, ``(..., samples + taps - 1)``
        for ``"full"``.
    """
    check_audio(x, "x", min_dim=1)
    check_audio(h, "h", min_dim=1)
    if mode not in CONVOLVE_MODES:
        raise ValueError(f"mode must be one of {CONVOLVE_MODES}, got {mode!r}")
    try:
        torch.broadcast_shapes(x.shape[:-1], h.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"h's leading shape {tuple(h.shape[:-1])} does not broadcast against x's "
            f"{tuple(x.shape[:-1])}"
        ) from None
    T, K = x.shape[-1], h.shape[-1]
    n_full = T + K - 1
    n_fft = scipy.fft.next_fast_len(n_full, real=True)
    dtype = torch.promote_types(x.dtype, h.dtype)
    spectrum = torch.fft.rfft(x.to(dtype), n=n_fft) * torch.fft.rfft(h.to(dtype), n=n_fft)
    y = torch.fft.irfft(spectrum, n=n_fft)
    return y[..., : (T if mode == "causal" else n_full)]
