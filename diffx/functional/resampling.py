"""Resampling: integer-factor FFT-domain up/down-sampling, and rational-ratio polyphase resampling.

A nonlinear model (a clipper, an LSTM or WaveNet amp model) creates harmonics above its Nyquist
frequency that fold back as aliases. Running it at ``L`` times the sample rate moves Nyquist up
by ``L``, so fewer harmonics fold, and those that land between ``fs/2`` and ``L·fs/2`` are
removed when the output is brought back to ``fs`` (:class:`diffx.nn.Oversampled` does this
around any model).

The resampler follows V. Välimäki and S. Bilbao, "Giant FFTs for sample-rate conversion",
J. Audio Eng. Soc. 71(3), 2023: take one FFT of the whole signal, zero-pad the spectrum
(upsampling) or truncate it (downsampling), and take the inverse FFT of the new length. This is
an ideal brick-wall low-pass: no pass-band ripple, no transition band, zero phase, no latency.
For even lengths the bin at the lower rate's Nyquist frequency needs care, because a real
signal has one coefficient there but a pair (at ``+fs/2`` and ``-fs/2``) at the higher rate:

* upsampling splits it into two halves, one on each side (the cosine at ``fs/2`` keeps its
  amplitude; a sine at exactly ``fs/2`` is sampled as zeros and cannot be recovered);
* downsampling merges the pair into one real bin (their sum, ``2·Re X[fs/2]``), which is what
  sampling a real signal at the lower rate does to a component at ``fs/2``.

With these two rules downsampling exactly inverts upsampling, to float precision.

Periodic extension: the DFT treats the signal as one period of a periodic signal, so the
resampled signal near the end is interpolated towards the *beginning* of the signal (and vice
versa). For a signal holding a whole number of periods this is exact; for a signal that does
not end where it starts, the jump from the last sample to the first rings (the Gibbs
phenomenon) into both ends. ``pad_samples`` appends zeros before the FFT, so the signal is
treated as followed by that much silence instead of by its own beginning; in
:class:`diffx.nn.Oversampled` the model also runs over the padding, so its ring-out (the
transient a model with memory emits after the input stops) lands in the padding, which is
cropped, instead of wrapping round onto the first samples of the output.

``resample`` converts between any two integer rates (files read at another rate) with
``scipy.signal.resample_poly`` by the exact rational ratio, a windowed-sinc polyphase filter.

The FFT resampler is non-causal and needs the whole signal at once: it suits offline rendering
and training on fixed-length segments, not block-wise streaming.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import resample_poly

from diffx._validation import check_audio, check_integer, check_integer_sample_rate

__all__ = ["fft_downsample", "fft_upsample", "resample"]


def _check_factor(factor: int, name: str = "factor") -> int:
    """Return ``factor`` as a Python int >= 1, or raise ``ValueError`` naming it."""
    return check_integer(factor, name, minimum=1)


def _check_pad(pad_samples: int, name: str = "pad_samples") -> int:
    """Return ``pad_samples`` as a Python int >= 0, or raise ``ValueError`` naming it."""
    return check_integer(pad_samples, name, minimum=0)



def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Unchecked core of ``fft_upsample`` (no padding): ``(..., n)`` -> ``(..., factor * n)``."""
    if factor == 1:
        return x
    n = x.shape[-1]
    # norm="forward" puts the 1/n on the forward transform and none on the inverse, so each
    # bin holds a sinusoid's amplitude independent of length: the inverse transform at the
    # higher length then reproduces the same amplitudes without a separate factor L scaling.
    spectrum = torch.fft.rfft(x, norm="forward")
    if n % 2 == 0:
        # The Nyquist bin of length n becomes an ordinary bin at length factor*n, paired with
        # its mirror at -fs/2; irfft supplies the mirror, so each half carries half the value.
        spectrum = torch.cat([spectrum[..., :-1], 0.5 * spectrum[..., -1:]], dim=-1)
    # irfft zero-pads the spectrum up to n_out // 2 + 1 bins itself: the zero-padding step.
    return torch.fft.irfft(spectrum, n=factor * n, norm="forward")


def _downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Unchecked core of ``fft_downsample`` (no padding); ``x.shape[-1]`` divisible by factor."""
    if factor == 1:
        return x
    n_out = x.shape[-1] // factor
    spectrum = torch.fft.rfft(x, norm="forward")[..., : n_out // 2 + 1]
    if n_out % 2 == 0:
        # +fs/2 and -fs/2 (conjugates for a real signal) alias onto the same bin at the lower
        # rate: their sum 2·Re(X) is real. Setting the imaginary part to zero explicitly keeps
        # the result independent of how a back end treats a non-Hermitian Nyquist bin in irfft.
        nyquist = 2.0 * spectrum[..., -1:].real
        nyquist = torch.complex(nyquist, torch.zeros_like(nyquist))
        spectrum = torch.cat([spectrum[..., :-1], nyquist], dim=-1)
    return torch.fft.irfft(spectrum, n=n_out, norm="forward")


def fft_upsample(x: torch.Tensor, factor: int, pad_samples: int = 0) -> torch.Tensor:
    """Upsample by an integer factor by zero-padding the spectrum (band-limited interpolation).

    The original samples are kept exactly (up to float rounding) at every ``factor``-th output
    sample, and no content is added above the input's Nyquist frequency. The signal is treated
    as periodic (see the module docstring); a signal holding a whole number of periods of a
    band-limited waveform is interpolated exactly.

    Args:
        x: ``(..., samples)`` real audio, any leading dims, float32 or float64, CPU or CUDA.
            Finite values only.
        factor: integer upsampling factor ``L >= 1`` (1 returns ``x`` itself).
        pad_samples: zeros appended to ``x`` before the FFT, at the input's sample rate; the
            signal is then interpolated as if followed by that much silence instead of by its
            own beginning. The padded part is cropped from the output.

    Returns:
        ``(..., factor * samples)`` at ``factor`` times the input's sample rate, same dtype and
        device. Differentiable with respect to ``x``.

    Raises:
        ValueError: ``x`` not a finite floating-point tensor, ``factor`` not an integer >= 1,
            ``pad_samples`` not an integer >= 0.
    """
    check_audio(x, "x", min_dim=1)
    factor = _check_factor(factor)
    pad_samples = _check_pad(pad_samples)
    n = x.shape[-1]
    if pad_samples:
        return _upsample(F.pad(x, (0, pad_samples)), factor)[..., : factor * n]
    return _upsample(x, factor)


def fft_downsample(x: torch.Tensor, factor: int, pad_samples: int = 0) -> torch.Tensor:
    """Downsample by an integer factor by truncating the spectrum (an ideal brick-wall low-pass).

    Every component above the output's Nyquist frequency is removed before decimation, so
    nothing aliases; a component exactly at the new Nyquist frequency is folded as sampling
    folds it (see the module docstring). ``fft_downsample(fft_upsample(x, L), L)`` returns
    ``x`` to float precision. The signal is treated as periodic.

    Args:
        x: ``(..., samples)`` real audio, any leading dims, float32 or float64, CPU or CUDA;
            ``samples`` must be divisible by ``factor`` (no implicit padding, so the output
            length is always exactly ``samples // factor``). Finite values only.
        factor: integer downsampling factor ``L >= 1`` (1 returns ``x`` itself).
        pad_samples: zeros appended before the FFT, counted at the *output* (lower) sample
            rate, i.e. ``factor * pad_samples`` zeros are appended to ``x``; the padded part is
            cropped from the output. Counting at the lower rate makes it the same number as the
            ``pad_samples`` of the matching ``fft_upsample`` call.

    Returns:
        ``(..., samples // factor)`` at the input's sample rate divided by ``factor``, same
        dtype and device. Differentiable with respect to ``x``.

    Raises:
        ValueError: ``x`` not a finite floating-point tensor, ``samples`` not divisible by
            ``factor``, ``factor`` not an integer >= 1, ``pad_samples`` not an integer >= 0.
    """
    check_audio(x, "x", min_dim=1)
    factor = _check_factor(factor)
    pad_samples = _check_pad(pad_samples)
    n = x.shape[-1]
    if n % factor:
        raise ValueError(
            f"x has {n} samples, which is not divisible by factor={factor}; trim or zero-pad it "
            f"to a multiple of {factor} (e.g. {math.ceil(n / factor) * factor} samples) first"
        )
    if pad_samples:
        return _downsample(F.pad(x, (0, factor * pad_samples)), factor)[..., : n // factor]
    return _downsample(x, factor)


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample ``audio (..., samples)`` from ``from_rate`` to ``to_rate`` Hz, as float64.

    ``scipy.signal.resample_poly`` by the exact ratio reduced by the rates' greatest common
    divisor; the output has ``ceil(samples * to_rate / from_rate)`` samples. The arithmetic is
    float64, so the filter's taps and accumulation add no error above float32 rounding of the
    result. Equal rates return a float64 copy.
    """
    from_rate = check_integer_sample_rate(from_rate, "from_rate")
    to_rate = check_integer_sample_rate(to_rate, "to_rate")
    audio = np.asarray(audio, dtype=np.float64)
    if from_rate == to_rate:
        return audio.copy()
    g = math.gcd(to_rate, from_rate)
    return resample_poly(audio, to_rate // g, from_rate // g, axis=-1)
