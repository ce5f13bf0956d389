"""Integer-factor oversampling by FFT-domain resampling, and a wrapper that runs a model at L·fs.

A nonlinear model (a clipper, an LSTM or WaveNet amp model) creates harmonics above its Nyquist
frequency that fold back as aliases. Running it at ``L`` times the sample rate moves Nyquist up
by ``L``, so fewer harmonics fold, and those that land between ``fs/2`` and ``L·fs/2`` are
removed when the output is brought back to ``fs``.

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
treated as followed by that much silence instead of by its own beginning; in ``Oversampled``
the model also runs over the padding, so its ring-out (the transient a model with memory emits
after the input stops) lands in the padding, which is cropped, instead of wrapping round onto
the first samples of the output.

The FFT resampler is non-causal and needs the whole signal at once: it suits offline rendering
and training on fixed-length segments, not block-wise streaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from diffx._validation import check_audio, check_integer

__all__ = ["Oversampled", "fft_downsample", "fft_upsample"]


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


class Oversampled(nn.Module):
    """Run any audio model at ``factor`` times the sample rate to reduce its aliasing.

    ``forward`` upsamples the input with ``fft_upsample``, calls the model, and brings the
    result back with ``fft_downsample``. Harmonics the model creates between the original
    Nyquist frequency and ``factor`` times it no longer fold back; they are removed by the
    brick-wall downsampler. Only harmonics above ``factor·fs/2`` still alias.

    The wrapped model is a registered submodule, so its parameters appear in
    ``Oversampled(...).parameters()`` and train through the wrapper (FFT resampling is linear
    and differentiable). The model sees the signal at the higher rate: a model whose behaviour
    depends on the sample rate (filters, recurrent networks trained at ``fs``) is then a
    different system. Pass it any sample-rate argument it needs at ``factor`` times the rate
    through ``forward``'s extra arguments, which go to the model unchanged. The model must
    return as many samples as it receives (a "valid" convolution that shortens the signal is
    refused, since the output could no longer be aligned with the input).

    Args:
        model: module mapping ``(batch, channels, samples)`` to ``(batch, channels_out,
            samples)`` at the oversampled rate.
        factor: integer oversampling factor ``L >= 1`` (1 runs the model at the original rate).
        pad_samples: zeros appended to the input at the original rate before upsampling; the
            model runs over them and they are cropped from the output, so the model's ring-out
            does not wrap round onto the start (see the module docstring). Use at least the
            model's decay time in samples when it has memory.

    Example:
        >>> drive = Oversampled(nn.Tanh(), factor=8)
        >>> drive(torch.zeros(2, 1, 441)).shape  # (batch, channels, samples) at fs
        torch.Size([2, 1, 441])
    """

    def __init__(self, model: nn.Module, factor: int, pad_samples: int = 0) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.factor = _check_factor(factor)
        self.pad_samples = _check_pad(pad_samples)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, pad_samples={self.pad_samples}"

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Apply the model at ``factor`` times the sample rate.

        Args:
            x: ``(batch, channels, samples)`` audio at the original rate, float32 or float64.
            *args, **kwargs: passed to the model unchanged (e.g. ``(batch,)`` parameters).

        Returns:
            ``(batch, channels_out, samples)`` at the original rate.

        Raises:
            ValueError: ``x`` not finite ``(batch, channels, samples)`` audio, or the model's
                output not a floating-point tensor of ``factor * (samples + pad_samples)``
                samples.
        """
        check_audio(x, "x")
        B, C, T = x.shape  # batch, channels, samples
        n_pad = T + self.pad_samples
        padded = F.pad(x, (0, self.pad_samples)) if self.pad_samples else x
        y = self.model(_upsample(padded, self.factor), *args, **kwargs)
        expected = self.factor * n_pad
        if not isinstance(y, torch.Tensor) or not y.is_floating_point():
            raise ValueError(
                f"model must return a floating-point tensor, got {type(y).__name__}"
                + (f" of dtype {y.dtype}" if isinstance(y, torch.Tensor) else "")
            )
        if y.dim() < 1 or y.shape[-1] != expected:
            raise ValueError(
                f"model output has shape {tuple(y.shape)}, expected {expected} samples "
                f"(factor {self.factor} x {n_pad} input samples): Oversampled needs a model "
                f"that preserves the signal length"
            )
        return _downsample(y, self.factor)[..., :T]
