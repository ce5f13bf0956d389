"""Run a trained amp model at an integer multiple of the sample rate it was trained at.

A neural amp model learns its dynamics at one sample rate ``fs``: a recurrent model's state
update spans one sample period, a WaveNet's taps are spaced by its dilations in samples. Fed
audio at ``L * fs`` unchanged, both become a different (time-compressed) system. The adapters
here keep the weights and move the model's notion of "one step" to ``L`` samples, so that at
``L * fs`` the model computes what it computed at ``fs``, only with ``L`` times the bandwidth
available for the harmonics its nonlinearities create. This is how Carson, Wright and Bilbao
("Anti-aliasing of neural distortion effects via model fine tuning", DAFx 2025, Table 1) run
their "2x oversampling" baselines:

- Recurrent models (:class:`DelayLineRNN`): the delay-line method of Carson, Wright, Chowdhury,
  Välimäki and Bilbao, "Sample rate independent recurrent neural networks for audio effects
  processing" (DAFx 2024, arXiv 2406.06293): the recurrence reads the state ``L`` samples back,
  ``h[n] = f(x[n], h[n - L])`` (for an LSTM the cell state likewise). Its linearised transfer
  function is ``H(z^L)``, the trained model's response at the same frequencies in Hz. For
  integer ``L`` the ``L`` polyphase components of the signal (samples ``p, p + L, p + 2L, ...``
  for ``p = 0 .. L-1``) never interact, so the delay-line model is the unchanged network run on
  each polyphase component, its outputs interleaved. That is how it is computed here: one
  reshape puts the phases into the batch, so the recurrence still runs once over ``T / L``
  steps.
- NAM WaveNets (:func:`dilate_wavenet`): every dilation multiplied by ``L``, same weights, as
  the paper does for its TCNs. The taps then span the same time in seconds and, again, the
  network acts on each polyphase component separately with the original dilations.

Both are exact in one sense the tests check: on an input whose every ``L``-th sample is the
original signal (any upsampling that keeps the original samples, e.g. FFT or zero-stuffing),
the outputs at ``0, L, 2L, ...`` are the base-rate model's outputs on the original signal.

A complete oversampled model is ``Oversampled(adapt_to_rate(model, L), L)`` (below), which
upsamples (FFT, ideal band limit), runs the adapted model at ``L * fs`` and downsamples, so the
harmonics between ``fs / 2`` and ``L * fs / 2`` are removed instead of folding back.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from diffx._validation import check_audio, check_integer
from diffx.functional.resampling import _check_pad, _downsample, _upsample
from diffx.nn.lstm import LSTMAmp
from diffx.nn.wavenet import WaveNet

__all__ = ["DelayLineRNN", "Oversampled", "adapt_to_rate", "dilate_wavenet"]


def _check_factor(factor: int) -> int:
    return check_integer(factor, "factor", minimum=1)


def _scaled_rate(sample_rate: float | None, factor: int) -> float | None:
    return None if sample_rate is None else float(sample_rate) * factor


class DelayLineRNN(nn.Module):
    """A recurrent amp model run at ``factor`` times its training rate by the delay-line method.

    ``h[n] = f(x[n], h[n - factor])``: each of the ``factor`` polyphase components of the input
    is processed by the unchanged model from a zero state, and the outputs are interleaved
    (Carson et al., DAFx 2024; see the module docstring). The wrapped model is a registered
    submodule, so its parameters are shared (not copied) and train through the wrapper.

    Args:
        model: a :class:`~diffx.nn.LSTMAmp` (LSTM, GRU or RNN unit) on audio alone
            (``input_size == 1``).
        factor: integer rate multiple ``L >= 1`` (1 is the model itself).

    Attributes:
        sample_rate: the rate this wrapper runs at, ``factor * model.sample_rate`` (``None``
            when the model's rate is unknown).

    Each call starts from a zero state (the model's ``stateful`` setting and kept state are
    neither used nor changed): it suits offline rendering of whole signals, not streaming.

    Raises:
        ValueError: ``model`` is not an ``LSTMAmp``, has knob inputs, or ``factor`` is not an
            integer >= 1.
    """

    def __init__(self, model: LSTMAmp, factor: int) -> None:
        super().__init__()
        if not isinstance(model, LSTMAmp):
            raise ValueError(
                f"model must be a diffx.nn.LSTMAmp for the delay-line method, got "
                f"{type(model).__name__}"
            )
        if model.input_size != 1:
            raise ValueError(
                f"model has input_size={model.input_size} (audio + knobs); only audio-only "
                "models (input_size=1) can be oversampled here"
            )
        self.model = model
        self.factor = _check_factor(factor)
        self.sample_rate = _scaled_rate(model.sample_rate, self.factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, sample_rate={self.sample_rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model at ``factor`` times its rate.

        Args:
            x: ``(batch, 1, samples)`` audio at ``factor`` times the model's training rate,
                any length (a length that is not a multiple of ``factor`` is zero-padded at
                the end internally; the model is causal, so the padding changes no output).

        Returns:
            ``(batch, 1, samples)`` output at the same rate, same dtype as ``x``.
        """
        check_audio(x, "x")
        B, C, T = x.shape  # batch, channels, samples
        if C != 1:
            raise ValueError(f"x must have 1 channel (mono audio), got shape {tuple(x.shape)}")
        L = self.factor
        n = -(-T // L)  # steps per phase, rounded up
        if n * L != T:
            x = torch.nn.functional.pad(x, (0, n * L - T))
        # (B, 1, n*L) -> (B, 1, n, L): element [b, 0, k, p] is sample k*L + p, i.e. step k of
        # phase p. Moving the phase into the batch gives (B*L, 1, n) independent sequences.
        phases = x.reshape(B, 1, n, L).permute(0, 3, 1, 2).reshape(B * L, 1, n)
        # Zero state for every phase, and the model's own stream state left untouched.
        stateful, self.model.stateful = self.model.stateful, False
        try:
            y = self.model(phases)
        finally:
            self.model.stateful = stateful
        y = y.reshape(B, L, 1, n).permute(0, 2, 3, 1).reshape(B, 1, n * L)
        return y[..., :T]


def dilate_wavenet(model: WaveNet, factor: int) -> WaveNet:
    """A copy of a NAM WaveNet with every dilation multiplied by ``factor``, for ``factor * fs``.

    The taps then span the same durations in seconds at the higher rate, as Carson et al.
    (DAFx 2025) do for their TCNs at 2x oversampling. The receptive field becomes
    ``(R - 1) * factor + 1`` samples at the new rate, ``R`` the original one.

    Args:
        model: a :class:`~diffx.nn.WaveNet` on mono audio whose layer arrays have
            ``head_kernel_size == 1`` (every NAM preset).
        factor: integer rate multiple ``L >= 1``.

    Returns:
        A new ``WaveNet`` (weights copied, on the model's device and dtype, in the model's
        train/eval mode) with ``sample_rate = factor * model.sample_rate`` (``None`` if the
        model's is unknown). Later changes to either model do not affect the other.

    Raises:
        ValueError: ``model`` is not a ``WaveNet``, takes more than one input channel, has a
            head kernel > 1 (its dilation is not part of the NAM configuration), or ``factor``
            is not an integer >= 1.
    """
    if not isinstance(model, WaveNet):
        raise ValueError(f"model must be a diffx.nn.WaveNet, got {type(model).__name__}")
    factor = _check_factor(factor)
    if model.in_channels != 1:
        raise ValueError(
            f"model takes {model.in_channels} input channels (audio + conditions); only "
            "audio-only WaveNets (input_size=1) can be oversampled here"
        )
    configs = []
    for i, cfg in enumerate(model.layer_configs):
        if cfg.head_kernel_size != 1:
            raise ValueError(
                f"layers[{i}].head_kernel_size is {cfg.head_kernel_size}; only 1 can be "
                "dilated (a head convolution has no dilation in the NAM configuration)"
            )
        configs.append(replace(cfg, dilations=tuple(d * factor for d in cfg.dilations)))
    dilated = WaveNet(
        configs,
        head_scale=model.head_scale,
        sample_rate=_scaled_rate(model.sample_rate, factor),
    )
    # Kernel shapes do not depend on dilation, so the state dict maps one to one.
    reference = next(model.parameters())
    dilated.to(device=reference.device, dtype=reference.dtype)
    dilated.load_state_dict(model.state_dict())
    dilated.train(model.training)
    return dilated


def adapt_to_rate(model: nn.Module, factor: int) -> nn.Module:
    """The model adapted to run at ``factor`` times its training rate (no resampling).

    Args:
        model: an audio-only :class:`~diffx.nn.LSTMAmp` or :class:`~diffx.nn.WaveNet`.
        factor: integer rate multiple ``L >= 1``.

    Returns:
        :class:`DelayLineRNN` (sharing the LSTM's parameters) or :func:`dilate_wavenet`'s copy,
        mapping ``(batch, 1, samples)`` at ``factor * fs`` to the same shape.

    Raises:
        ValueError: an unsupported model type, a conditioned model, or a bad ``factor``.

    Example:
        >>> from diffx.nn import Oversampled
        >>> amp = LSTMAmp(hidden_size=8, sample_rate=44100)
        >>> amp_2x = Oversampled(adapt_to_rate(amp, 2), 2)  # (B, 1, T) at 44.1 kHz in and out
    """
    if isinstance(model, LSTMAmp):
        return DelayLineRNN(model, factor)
    if isinstance(model, WaveNet):
        return dilate_wavenet(model, factor)
    raise ValueError(
        f"cannot run a {type(model).__name__} at a multiple of its rate: supported models are "
        "diffx.nn.LSTMAmp (delay-line method) and diffx.nn.WaveNet (dilations scaled)"
    )


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
