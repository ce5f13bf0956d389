"""Spectral losses: thin wrappers around auraloss's STFT losses with input checks.

The arithmetic is auraloss's (``auraloss.freq.STFTLoss`` / ``MultiResolutionSTFTLoss``); these
classes add what a training loop needs around it: shape, length and finiteness checks that name
the bad argument, and torch-style ``reduction`` over the batch. They run auraloss's forward op
for op, so value and gradient are auraloss's bit for bit, but skip the phase spectra it computes
and discards and fuse the magnitude's backward (:func:`_auraloss_value`); two options trade
bit-identity for speed: ``fast_backward`` (same value, gradient to float rounding) and
``compile`` (value and gradient to float rounding).

Reductions. ``"mean"`` calls auraloss once on the whole batch and returns exactly what it
returns; note that its spectral-convergence term is ``||Y - X||_F / ||Y||_F`` pooled over the
batch, not a mean of per-item ratios. ``"none"`` returns one loss per item, ``(batch,)``, each
auraloss's value for that item alone, and ``"sum"`` their sum. So ``"mean"`` equals the mean of
``"none"`` only when the batch holds one item or ``w_sc = 0``.

Long signals: the STFTs of a whole batch, kept by autograd for the backward pass, take tens of
times the audio's size (16 GB for auraloss's default MR-STFT on (7, 2, 2^20) float64). When they
would exceed ``max_direct_bytes``, these losses instead sum auraloss's terms block by block
(:mod:`diffx.losses._chunking`) and recompute each block in the backward pass, which bounds the
peak to a few times the input; the value is auraloss's to float rounding.

Silence (auraloss issue #63, NaN gradients from a log without an epsilon): auraloss 0.4 clamps
the STFT power at ``eps`` (default 1e-8) before its square root, so every magnitude is at least
``sqrt(eps)`` and the logarithm and the spectral-convergence ratio stay finite, with finite
gradients, for silent prediction and target. Mel filters that cover no FFT bin would undo this
(a mel band of exactly 0 gives ``log(0)``), so :class:`MelSTFTLoss` refuses such settings.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from diffx._validation import check_sample_rate
from diffx.losses._chunking import (
    BLOCK_BYTES,
    MAX_DIRECT_BYTES,
    Framing,
    check_chunking,
    complex_itemsize,
    framewise_sums,
)
from diffx.losses._reduction import check_reduction
from diffx.losses.time_domain import check_pair

#: auraloss's default floor on STFT power (full scale = 1): magnitudes are at least 1e-4.
STFT_EPS = 1e-8

# Slaney's mel scale (Auditory Toolbox; librosa's default, ``htk=False``): linear below 1 kHz
# at 200/3 Hz per mel, logarithmic above with 27 mels per factor 6.4.
_MEL_LINEAR_HZ = 200.0 / 3.0
_MEL_BREAK_HZ = 1000.0
_MEL_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_LINEAR_HZ
    log = _MEL_BREAK_HZ / _MEL_LINEAR_HZ + np.log(np.maximum(hz, 1e-300) / _MEL_BREAK_HZ) / (
        _MEL_LOG_STEP
    )
    return np.where(hz >= _MEL_BREAK_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    break_mel = _MEL_BREAK_HZ / _MEL_LINEAR_HZ
    linear = mel * _MEL_LINEAR_HZ
    log = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mel - break_mel))
    return np.where(mel >= break_mel, log, linear)


def mel_filterbank(sample_rate: float, fft_size: int, n_mels: int) -> np.ndarray:
    """Slaney-style triangular mel filterbank from 0 Hz to Nyquist, area-normalised.

    The filters auraloss uses (it calls ``librosa.filters.mel(sr=..., n_fft=..., n_mels=...)``
    with librosa's defaults); built here so the mel loss does not need librosa. Filter ``i``
    rises linearly in Hz from mel point ``i`` to ``i + 1`` and falls to ``i + 2`` (``n_mels + 2``
    points equally spaced in mel), scaled by ``2 / (f[i + 2] - f[i])`` so each has unit area.

    Args:
        sample_rate: Hz.
        fft_size: FFT length; the filterbank covers its ``fft_size // 2 + 1`` bins.
        n_mels: number of filters.

    Returns:
        ``(n_mels, fft_size // 2 + 1)`` float32 weights.
    """
    sr = check_sample_rate(sample_rate)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    bins_hz = np.linspace(0.0, sr / 2, fft_size // 2 + 1)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bins_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def _check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_weights(**weights: float) -> None:
    for name, w in weights.items():
        if not (0 <= float(w) < math.inf):
            raise ValueError(f"{name} must be a finite non-negative weight, got {w!r}")
    if all(float(w) == 0 for w in weights.values()):
        raise ValueError(f"at least one of {sorted(weights)} must be positive")


def _check_resolution(fft_size: int, hop_size: int, win_length: int, where: str) -> None:
    _check_positive_int(fft_size, f"fft_size{where}")
    _check_positive_int(hop_size, f"hop_size{where}")
    _check_positive_int(win_length, f"win_length{where}")
    if win_length > fft_size:
        raise ValueError(
            f"win_length{where} ({win_length}) must not exceed fft_size{where} ({fft_size})"
        )


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` with gradient 0 at ``x = 0`` (as ``torch.norm``'s backward), not inf."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _auraloss_terms(stft_loss: nn.Module) -> tuple[str, ...]:
    """The sums :func:`_auraloss_sums` returns for one ``auraloss.freq.STFTLoss``, in order:
    only the terms with a non-zero weight, as auraloss computes only those."""
    terms = ("sc_error", "sc_target") if stft_loss.w_sc else ()
    terms += ("log_l1",) if stft_loss.w_log_mag else ()
    return terms + (("lin_l1",) if stft_loss.w_lin_mag else ())


def _auraloss_sums(stft_loss: nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-row sums behind ``auraloss.freq.STFTLoss`` on a block of frames.

    Args:
        stft_loss: the auraloss module (its window, sizes, ``eps``, weights, mel ``fb``).
        pred, target: ``(rows, L)`` segments of the reflect-padded signals holding whole frames.

    Returns:
        ``(rows, K)``, the sums of :func:`_auraloss_terms` over bins and frames: squared
        magnitude error and squared target magnitude (spectral convergence), L1 of log
        magnitudes, L1 of magnitudes. Magnitudes as auraloss: ``sqrt(clamp(|X|^2, eps))``, then
        the mel filterbank where it has one.
    """
    f = stft_loss
    window = f.window.to(pred.device)

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            x, f.fft_size, f.hop_size, f.win_length, window, center=False, return_complex=True
        )
        mag = torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=f.eps))
        return torch.matmul(f.fb.to(mag.device), mag) if f.scale is not None else mag

    x_mag, y_mag = magnitude(pred), magnitude(target)
    sums = []
    if f.w_sc:
        sums += [(y_mag - x_mag).square().sum((-2, -1)), y_mag.square().sum((-2, -1))]
    if f.w_log_mag:
        sums.append((torch.log(x_mag) - torch.log(y_mag)).abs().sum((-2, -1)))
    if f.w_lin_mag:
        sums.append((x_mag - y_mag).abs().sum((-2, -1)))
    return torch.stack(sums, dim=-1)


class _Magnitude(torch.autograd.Function):
    """auraloss's STFT magnitude ``sqrt(clamp(re^2 + im^2, min=eps))`` with one fused backward.

    The same value and gradient, bit for bit, as autograd through auraloss's expression: the
    backward evaluates autograd's formulas in their order (sqrt's ``g / (2 mag)``, clamp's
    ``where(power >= eps, ., 0)``, pow's ``. * (2 re)`` and ``. * (2 im)``), but in three ops
    instead of the dozen, complex zero tensors included, that autograd runs for ``.real`` and
    ``.imag``.
    """

    @staticmethod
    def forward(spec, eps):
        power = spec.real**2 + spec.imag**2
        return torch.sqrt(torch.clamp(power, min=eps)), power >= eps

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(inputs[0], output[0], output[1])

    @staticmethod
    def backward(ctx, grad, _grad_mask):
        spec, mag, unclamped = ctx.saved_tensors
        grad_power = torch.where(unclamped, grad / (2 * mag), 0.0)
        grad_parts = (2 * torch.view_as_real(spec)) * grad_power.unsqueeze(-1)
        return torch.view_as_complex(grad_parts), None


def _auraloss_magnitude(spec: torch.Tensor, eps: float) -> torch.Tensor:
    """auraloss's ``sqrt(clamp(|spec|^2, min=eps))`` (see :class:`_Magnitude`)."""
    if spec.requires_grad and torch.is_grad_enabled():
        return _Magnitude.apply(spec, eps)[0]
    return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=eps))


class _FastStftMagnitude(torch.autograd.Function):
    """``fast_backward``: auraloss's STFT magnitude of reflect-padded rows, the same value, with
    a cheaper backward that rounds differently.

    Forward: ``torch.stft(x_pad, center=False)`` (what ``torch.stft(x, center=True)`` computes
    after padding), then :class:`_Magnitude`'s expression. Backward: the adjoint of the
    one-sided DFT as one inverse real FFT (``irfft`` of the gradient with the bins other than DC
    and Nyquist halved, since it mirrors them), where autograd zero-pads the gradient to a full
    spectrum for an inverse complex FFT of twice the work; then the window, over its non-zero
    ``win_length`` taps only, and the overlap-add by ``fold``. Gradients agree with autograd's to
    float rounding (about 1e-7 relative in float32). First order only: a double backward raises.
    """

    @staticmethod
    def forward(x_pad, n_fft, hop, win_length, window, eps):
        spec = torch.stft(x_pad, n_fft, hop, win_length, window, center=False, return_complex=True)
        power = spec.real**2 + spec.imag**2
        return torch.sqrt(torch.clamp(power, min=eps)), power >= eps, spec

    @staticmethod
    def setup_context(ctx, inputs, output):
        x_pad, n_fft, hop, win_length, window, _ = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(output[2], output[0], output[1], window)
        ctx.geometry = (n_fft, hop, win_length, x_pad.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, _grad_mask, _grad_spec):
        spec, mag, unclamped, window = ctx.saved_tensors
        n_fft, hop, win_length, padded = ctx.geometry
        grad_power = torch.where(unclamped, grad / (2 * mag), 0.0)
        # d|X|^2 / dX = 2 X; irfft counts the bins between DC and Nyquist twice, so they take
        # X alone and DC and Nyquist 2 X.
        scale = torch.ones(spec.shape[1], 1, dtype=grad_power.dtype, device=grad_power.device)
        scale[0] = 2.0
        if n_fft % 2 == 0:
            scale[-1] = 2.0
        parts = torch.view_as_real(spec) * (grad_power * scale).unsqueeze(-1)
        # (rows, frames, bins): the layout torch.stft's spectrum has in memory.
        half = torch.view_as_complex(parts).transpose(1, 2)
        frames = torch.fft.irfft(half, n=n_fft, dim=-1, norm="forward")
        left = (n_fft - win_length) // 2
        frames = frames[..., left : left + win_length] * window.to(frames.dtype)
        span = (frames.shape[1] - 1) * hop + win_length
        summed = nn.functional.fold(
            frames.transpose(1, 2), output_size=(1, span), kernel_size=(1, win_length),
            stride=(1, hop),
        ).view(frames.shape[0], span)  # fmt: skip
        grad_x = nn.functional.pad(summed, (left, padded - left - span))
        return grad_x, None, None, None, None, None


def _replicable(stft_loss: nn.Module) -> bool:
    """Whether :func:`_auraloss_value` reproduces this ``auraloss.freq.STFTLoss`` (the settings
    diffx's wrappers make); other settings run auraloss's own forward."""
    f = stft_loss
    return (
        not f.w_phs and not f.perceptual_weighting and not f.scale_invariance
        and f.output == "loss" and f.reduction == "mean" and f.mag_distance == "L1"
    )  # fmt: skip


def _stft_loss_terms(x_mag, y_mag, w_sc: float, w_log_mag: float, w_lin_mag: float):
    """auraloss's weighted spectral-convergence, log- and linear-magnitude terms, in its order
    of operations, from the magnitudes of prediction and target."""
    sc = torch.norm(y_mag - x_mag, p="fro") / torch.norm(y_mag, p="fro") if w_sc else 0.0
    log = nn.functional.l1_loss(torch.log(x_mag), torch.log(y_mag)) if w_log_mag else 0.0
    lin = nn.functional.l1_loss(x_mag, y_mag) if w_lin_mag else 0.0
    return (w_sc * sc) + (w_log_mag * log) + (w_lin_mag * lin)


@functools.cache
def _compiled_stft_loss_terms():
    """:func:`_stft_loss_terms` through ``torch.compile`` (made on first use)."""
    # dynamic=False: each STFT size gets its own static graph; a dynamic (symbolic-shape)
    # recompile, which torch makes on the second shape by default, failed in inductor here.
    return torch.compile(_stft_loss_terms, dynamic=False)


def _auraloss_stft_value(
    f: nn.Module,
    pred: torch.Tensor,
    target: torch.Tensor,
    fast_backward: bool = False,
    compiled: bool = False,
) -> torch.Tensor:
    """``auraloss.freq.STFTLoss.forward`` for :func:`_replicable` settings, op for op (the same
    value and gradient, bit for bit) but without the phase spectra it computes and discards
    (``torch.angle`` of both STFTs, 40% of the loss's forward time at DeepAFx-ST's settings)
    and with :class:`_Magnitude`'s backward. With ``fast_backward``, :class:`_FastStftMagnitude`
    for ``pred`` (the same value, gradients to float rounding); with ``compiled``, the terms
    after the magnitudes through ``torch.compile`` (value and gradients to float rounding)."""
    f.window = f.window.to(pred.device)

    def magnitude(x: torch.Tensor) -> torch.Tensor:
        rows = x.view(-1, x.size(-1))
        if fast_backward and rows.requires_grad and torch.is_grad_enabled():
            pad = f.fft_size // 2
            padded = nn.functional.pad(rows.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
            return _FastStftMagnitude.apply(
                padded, f.fft_size, f.hop_size, f.win_length, f.window, f.eps
            )[0]
        spec = torch.stft(
            rows, f.fft_size, f.hop_size, f.win_length, f.window, return_complex=True
        )  # fmt: skip
        return _auraloss_magnitude(spec, f.eps)

    x_mag, y_mag = magnitude(pred), magnitude(target)
    if f.scale is not None:
        f.fb = f.fb.to(pred.device)
        x_mag, y_mag = torch.matmul(f.fb, x_mag), torch.matmul(f.fb, y_mag)
    terms = _compiled_stft_loss_terms() if compiled else _stft_loss_terms
    loss = terms(x_mag, y_mag, f.w_sc, f.w_log_mag, f.w_lin_mag) + (f.w_phs * 0.0)
    return loss.mean()


def _auraloss_value(
    module: nn.Module,
    pred: torch.Tensor,
    target: torch.Tensor,
    fast_backward: bool = False,
    compiled: bool = False,
) -> torch.Tensor:
    """``module(pred, target)`` for an auraloss ``STFTLoss`` or ``MultiResolutionSTFTLoss``:
    :func:`_auraloss_stft_value` per resolution where every one is :func:`_replicable`, with
    auraloss's own sum (so the same value and gradient, bit for bit, without
    ``fast_backward`` and ``compiled``); otherwise auraloss's forward."""
    stft_losses = list(getattr(module, "stft_losses", [module]))
    if not all(_replicable(f) for f in stft_losses):
        return module(pred, target)
    if not hasattr(module, "stft_losses"):
        return _auraloss_stft_value(module, pred, target, fast_backward, compiled)
    total = 0.0
    for f in stft_losses:
        total += _auraloss_stft_value(f, pred, target, fast_backward, compiled)
    total /= len(stft_losses)
    return total


def _auraloss_from_sums(stft_loss: nn.Module, sums: torch.Tensor, count: int) -> torch.Tensor:
    """auraloss's ``STFTLoss`` value from pooled sums ``(groups, K)`` over ``count`` magnitudes
    per group (rows x bins x frames); returns ``(groups,)``."""
    f, terms = stft_loss, _auraloss_terms(stft_loss)
    s = dict(zip(terms, sums.unbind(-1)))
    loss = sums.new_zeros(sums.shape[0])
    if f.w_sc:  # ||Y - X||_F / ||Y||_F; |Y| >= sqrt(eps) > 0, so the denominator is positive
        loss = loss + f.w_sc * (_safe_sqrt(s["sc_error"]) / s["sc_target"].sqrt())
    if f.w_log_mag:
        loss = loss + f.w_log_mag * (s["log_l1"] / count)
    if f.w_lin_mag:
        loss = loss + f.w_lin_mag * (s["lin_l1"] / count)
    return loss


class _AuralossWrapper(nn.Module):
    """Shared checks and reductions around one auraloss module held as ``self.loss``."""

    loss: nn.Module
    min_samples: int
    fast_backward: bool = False
    compile_terms: bool = False
    max_direct_bytes: float
    block_bytes: int

    def _stft_losses(self) -> list[nn.Module]:
        """The ``auraloss.freq.STFTLoss`` modules whose mean is the loss."""
        return list(getattr(self.loss, "stft_losses", [self.loss]))

    @staticmethod
    def _framing(stft_loss: nn.Module) -> Framing:
        # auraloss calls torch.stft with its defaults: centred frames, reflect padding.
        return Framing(stft_loss.fft_size, stft_loss.hop_size, stft_loss.fft_size // 2)

    def spectra_bytes(self, pred: torch.Tensor) -> int:
        """Bytes of the complex STFTs of ``pred`` at every resolution: what decides chunking."""
        rows, samples = pred[..., 0].numel(), pred.shape[-1]
        per_row = sum(
            self._framing(f).frames(samples) * (f.fft_size // 2 + 1) for f in self._stft_losses()
        )
        return rows * per_row * complex_itemsize(pred.dtype)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss between ``pred`` and ``target``, both ``(batch, channels, samples)``.

        Returns:
            A scalar, or ``(batch,)`` with ``reduction="none"``.
        """
        check_pair(pred, target, min_dim=3)
        if pred.dtype != target.dtype:
            raise ValueError(f"pred is {pred.dtype} but target is {target.dtype}")
        if pred.shape[-1] < self.min_samples:
            raise ValueError(
                f"pred and target have {pred.shape[-1]} samples, fewer than the largest "
                f"fft_size ({self.min_samples})"
            )
        if self.spectra_bytes(pred) > self.max_direct_bytes:
            return self._chunked(pred, target)
        options = (self.fast_backward, self.compile_terms)
        if self.reduction == "mean":
            return _auraloss_value(self.loss, pred, target, *options)
        per_item = torch.stack(
            [_auraloss_value(self.loss, pred[i : i + 1], target[i : i + 1], *options)
             for i in range(pred.shape[0])]
        )  # fmt: skip
        return per_item.sum() if self.reduction == "sum" else per_item

    def _chunked(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """auraloss's value from blockwise sums (see the module docstring), same reductions."""
        B, C, T = pred.shape  # batch, channels, samples
        rows_pred, rows_target = pred.reshape(B * C, T), target.reshape(B * C, T)
        itemsize = complex_itemsize(pred.dtype)
        stft_losses = self._stft_losses()
        total = pred.new_zeros(1 if self.reduction == "mean" else B)
        for f in stft_losses:
            framing = self._framing(f)
            sums = framewise_sums(
                functools.partial(_auraloss_sums, f), rows_pred, rows_target, framing,
                (f.fft_size // 2 + 1) * itemsize, self.block_bytes,
            )  # fmt: skip
            # "mean" pools the whole batch (auraloss on all of it), the others each item.
            sums = sums.reshape(B, C, -1).sum(1)
            items = B if self.reduction == "mean" else 1
            if self.reduction == "mean":
                sums = sums.sum(0, keepdim=True)
            bins = f.fb.shape[-2] if f.scale is not None else f.fft_size // 2 + 1
            total = total + _auraloss_from_sums(f, sums, items * C * bins * framing.frames(T))
        total = total / len(stft_losses)
        if self.reduction == "mean":
            return total[0]
        return total.sum() if self.reduction == "sum" else total


class MultiResolutionSTFTLoss(_AuralossWrapper):
    """Multi-resolution STFT loss (Yamamoto et al. 2020), ``auraloss.freq.MultiResolutionSTFTLoss``.

    The mean over resolutions of ``w_sc`` x spectral convergence + ``w_log_mag`` x L1 of log
    magnitudes + ``w_lin_mag`` x L1 of magnitudes; each channel is its own signal.

    Args:
        fft_sizes: FFT length of each resolution (samples).
        hop_sizes: hop of each resolution (samples).
        win_lengths: window length of each resolution (samples, at most its FFT length).
        window: a torch window function name, e.g. ``"hann_window"``.
        w_sc: weight of the spectral-convergence term.
        w_log_mag: weight of the log-magnitude term.
        w_lin_mag: weight of the linear-magnitude term.
        eps: floor on STFT power before the square root and log; see the module docstring.
        reduction: ``"mean"`` (auraloss's value), ``"sum"`` or ``"none"``; see the module
            docstring.
        max_direct_bytes: largest size (bytes) of the batch's complex STFTs, all resolutions
            together, computed in one autograd pass; beyond it the loss is computed in blocks
            and recomputed in the backward pass (see the module docstring). ``math.inf``:
            never chunk, 0: always.
        block_bytes: most bytes of STFT per block when chunking.
        fast_backward: differentiate the STFT of ``pred`` by an inverse real FFT
            (:class:`_FastStftMagnitude`): the same loss value, gradients equal to float
            rounding (about 1e-7 relative in float32), the loss's forward and backward together
            about 40% faster at DeepAFx-ST's settings; first order only. ``False`` (default):
            auraloss's gradient, bit for bit. The chunked path ignores it.
        compile: compute the terms after the magnitudes (spectral convergence, log and linear
            magnitude L1) through ``torch.compile`` (one fused kernel where eager runs a dozen;
            the complex STFT stays eager, inductor has no complex kernels): value and gradients
            to float rounding, seconds of compilation at the first call. The chunked path
            ignores it.

    Shapes:
        ``pred``, ``target``: ``(batch, channels, samples)`` with ``samples >= max(fft_sizes)``;
        output a scalar, or ``(batch,)`` with ``reduction="none"``.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        w_lin_mag: float = 0.0,
        eps: float = STFT_EPS,
        reduction: str = "mean",
        *,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
        fast_backward: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        import auraloss

        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)
        for name, flag in (("fast_backward", fast_backward), ("compile", compile)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        self.fast_backward, self.compile_terms = fast_backward, compile
        fft_sizes, hop_sizes, win_lengths = list(fft_sizes), list(hop_sizes), list(win_lengths)
        if not (len(fft_sizes) == len(hop_sizes) == len(win_lengths) >= 1):
            raise ValueError(
                f"fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length, "
                f"got {len(fft_sizes)}, {len(hop_sizes)} and {len(win_lengths)}"
            )
        for i, (n, hop, win) in enumerate(zip(fft_sizes, hop_sizes, win_lengths)):
            _check_resolution(n, hop, win, f"s[{i}]")
        _check_weights(w_sc=w_sc, w_log_mag=w_log_mag, w_lin_mag=w_lin_mag)
        if not (0 < float(eps) < math.inf):
            raise ValueError(f"eps must be positive and finite, got {eps!r}")
        if not hasattr(torch, window):
            raise ValueError(f"window must name a torch window function, got {window!r}")
        self.reduction = check_reduction(reduction)
        self.min_samples = max(int(n) for n in fft_sizes)
        self.loss = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=[int(n) for n in fft_sizes],
            hop_sizes=[int(n) for n in hop_sizes],
            win_lengths=[int(n) for n in win_lengths],
            window=window,
            w_sc=float(w_sc),
            w_log_mag=float(w_log_mag),
            w_lin_mag=float(w_lin_mag),
            eps=float(eps),
        )


class SumAndDifferenceSTFTLoss(MultiResolutionSTFTLoss):
    """Stereo loss on the sum and difference signals, ``auraloss.freq.SumAndDifferenceSTFTLoss``.

    ``(w_sum MRSTFT(L + R) + w_diff MRSTFT(L - R)) / 2``, with the sum and difference taken by
    auraloss's own ``SumAndDifference`` and each MR-STFT computed as
    :class:`MultiResolutionSTFTLoss` (auraloss's value, with its checks, reductions and
    chunking). The difference term sees what a plain per-channel loss barely weighs: the
    stereo image (width, panning, decorrelated reverb), as Steinmetz et al. proposed for stereo
    mixing ("Automatic multitrack mixing with a differentiable mixing console of neural audio
    effects", ICASSP 2021).

    Args:
        w_sum: weight of the sum-signal term.
        w_diff: weight of the difference-signal term.
        fft_sizes, hop_sizes, win_lengths, window, w_sc, w_log_mag, w_lin_mag, eps, reduction,
            max_direct_bytes, block_bytes, fast_backward, compile: as
            :class:`MultiResolutionSTFTLoss`, for both terms.

    Shapes:
        ``pred``, ``target``: ``(batch, 2, samples)`` stereo [left, right]; output a scalar, or
        ``(batch,)`` with ``reduction="none"``. Other channel counts raise ``ValueError``.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        w_sum: float = 1.0,
        w_diff: float = 1.0,
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        w_lin_mag: float = 0.0,
        eps: float = STFT_EPS,
        reduction: str = "mean",
        **options,
    ):
        super().__init__(fft_sizes, hop_sizes, win_lengths, window, w_sc, w_log_mag, w_lin_mag,
                         eps, reduction, **options)  # fmt: skip
        _check_weights(w_sum=w_sum, w_diff=w_diff)
        self.w_sum, self.w_diff = float(w_sum), float(w_diff)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import auraloss

        check_pair(pred, target, min_dim=3)
        if pred.shape[1] != 2:
            raise ValueError(
                f"SumAndDifferenceSTFTLoss needs stereo pred and target shaped (batch, 2, "
                f"samples), got {pred.shape[1]} channel(s)"
            )
        split = auraloss.freq.SumAndDifference()
        pred_sum, pred_diff = split(pred)
        target_sum, target_diff = split(target)
        sum_loss = super().forward(pred_sum, target_sum)
        diff_loss = super().forward(pred_diff, target_diff)
        return (self.w_sum * sum_loss + self.w_diff * diff_loss) / 2


class MelSTFTLoss(_AuralossWrapper):
    """Mel-scale STFT loss, ``auraloss.freq.MelSTFTLoss`` without needing librosa.

    auraloss's ``STFTLoss`` does the work; the mel filterbank it would build with librosa is
    built by :func:`mel_filterbank` (the same Slaney filters) and handed to it, so the value
    equals ``auraloss.freq.MelSTFTLoss(sample_rate, fft_size, ..., n_mels=n_mels)``.

    Args:
        sample_rate: Hz.
        n_mels: number of mel bands; every band must cover at least one FFT bin.
        fft_size: FFT length (samples).
        hop_size: hop (samples).
        win_length: window length (samples, at most ``fft_size``).
        window: a torch window function name.
        w_sc: weight of the spectral-convergence term.
        w_log_mag: weight of the log-magnitude term.
        w_lin_mag: weight of the linear-magnitude term.
        eps: floor on STFT power; see the module docstring.
        reduction: ``"mean"`` (auraloss's value), ``"sum"`` or ``"none"``.
        max_direct_bytes: largest size (bytes) of the batch's complex STFTs, all resolutions
            together, computed in one autograd pass; beyond it the loss is computed in blocks
            and recomputed in the backward pass (see the module docstring). ``math.inf``:
            never chunk, 0: always.
        block_bytes: most bytes of STFT per block when chunking.
        fast_backward, compile: as :class:`MultiResolutionSTFTLoss`'s.

    Shapes:
        ``pred``, ``target``: ``(batch, channels, samples)`` with ``samples >= fft_size``;
        output a scalar, or ``(batch,)`` with ``reduction="none"``.
    """

    def __init__(
        self,
        sample_rate: float,
        n_mels: int = 128,
        fft_size: int = 1024,
        hop_size: int = 256,
        win_length: int = 1024,
        window: str = "hann_window",
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        w_lin_mag: float = 0.0,
        eps: float = STFT_EPS,
        reduction: str = "mean",
        *,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
        fast_backward: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        import auraloss

        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)
        for name, flag in (("fast_backward", fast_backward), ("compile", compile)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        self.fast_backward, self.compile_terms = fast_backward, compile
        sr = check_sample_rate(sample_rate)
        _check_resolution(fft_size, hop_size, win_length, "")
        n_mels = _check_positive_int(n_mels, "n_mels")
        _check_weights(w_sc=w_sc, w_log_mag=w_log_mag, w_lin_mag=w_lin_mag)
        if not (0 < float(eps) < math.inf):
            raise ValueError(f"eps must be positive and finite, got {eps!r}")
        if not hasattr(torch, window):
            raise ValueError(f"window must name a torch window function, got {window!r}")
        fb = mel_filterbank(sr, int(fft_size), n_mels)
        empty = int((fb.max(axis=1) == 0).sum())
        if empty:
            raise ValueError(
                f"n_mels={n_mels} is too many for fft_size={fft_size} at sample_rate={sr:g}: "
                f"{empty} mel bands cover no FFT bin (their log magnitude would be -inf); use "
                f"fewer mels or a larger fft_size"
            )
        self.reduction = check_reduction(reduction)
        self.min_samples = int(fft_size)
        self.sample_rate = sr
        self.n_mels = n_mels
        loss = auraloss.freq.STFTLoss(
            fft_size=int(fft_size),
            hop_size=int(hop_size),
            win_length=int(win_length),
            window=window,
            w_sc=float(w_sc),
            w_log_mag=float(w_log_mag),
            w_lin_mag=float(w_lin_mag),
            sample_rate=sr,
            eps=float(eps),
        )
        # auraloss applies `fb` whenever `scale` is set; it is a buffer, so it follows .to().
        loss.scale = "mel"
        loss.n_bins = n_mels
        loss.register_buffer("fb", torch.from_numpy(fb).unsqueeze(0))
        self.loss = loss

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # auraloss multiplies the magnitudes by `fb` as stored; match the audio's dtype so
        # float64 audio runs (auraloss itself only moves `fb` between devices).
        if pred.dtype != self.loss.fb.dtype and pred.is_floating_point():
            self.loss.fb = self.loss.fb.to(pred.dtype)
        return super().forward(pred, target)


DDSP_FFT_SIZES = (2048, 1024, 512, 256, 128, 64)
"""The six scales of DDSP's multi-scale spectral loss (Engel et al., ICLR 2020, Sec. 4.2.1)."""

LOG_MAGNITUDE_EPS = 1e-7
"""Added to every magnitude before the log, so silence gives a finite loss and gradient."""


def _stft_magnitude(rows: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``|STFT|`` of ``rows (n, samples)``: periodic Hann of ``n_fft``, centred zero-padded
    frames, no normalization; ``(n, n_fft // 2 + 1, frames)``."""
    window = torch.hann_window(n_fft, dtype=rows.dtype, device=rows.device)
    return torch.stft(
        rows, n_fft, hop_length=hop, window=window, center=True, pad_mode="constant",
        return_complex=True,
    ).abs()


class MultiScaleSpectralLoss(nn.Module):
    """DDSP's multi-scale spectral loss: L1 on linear and on log STFT magnitudes, summed over
    FFT sizes.

    For each FFT size ``N`` (Hann window of ``N``, hop ``N * (1 - overlap)``, frames centred
    with zero padding), with ``S = |STFT(target)|`` and ``P = |STFT(pred)|`` (unnormalized)::

        L_N = linear_weight * mean|S - P| + log_weight * mean|log(S + eps) - log(P + eps)|

    and the loss is ``sum_N L_N``. The linear term weighs loud partials, the log term the quiet
    detail and the noise floor; the small FFTs catch transients, the large ones pitch.

    Args:
        fft_sizes: FFT sizes in samples (default :data:`DDSP_FFT_SIZES`).
        overlap: fraction of a window shared with the next (DDSP: 0.75).
        linear_weight, log_weight: weights of the two terms.
        eps: :data:`LOG_MAGNITUDE_EPS`.
        reduction: ``"mean"`` (over batch and channels), ``"sum"`` or ``"none"``
            (``(batch, channels)``).
        max_direct_bytes: largest size (bytes) of the complex STFTs of ``pred``, all FFT sizes
            together, computed in one autograd pass; beyond it the loss is summed in blocks
            and recomputed in the backward pass (same value to float rounding, peak memory a
            few times the input). ``math.inf``: never chunk, 0: always.
        block_bytes: most bytes of STFT per block when chunking.

    Shapes:
        ``pred``, ``target``: ``(batch, channels, samples)`` with ``samples >= max(fft_sizes)
        // 2 + 1`` (one centred frame at the largest size).
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = DDSP_FFT_SIZES,
        overlap: float = 0.75,
        linear_weight: float = 1.0,
        log_weight: float = 1.0,
        eps: float = LOG_MAGNITUDE_EPS,
        reduction: str = "mean",
        *,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ) -> None:
        super().__init__()
        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)
        if isinstance(fft_sizes, int) or len(fft_sizes) == 0:
            raise ValueError(f"fft_sizes must be a non-empty list of sizes, got {fft_sizes!r}")
        self.fft_sizes = tuple(
            _check_positive_int(n, f"fft_sizes[{i}]") for i, n in enumerate(fft_sizes)
        )
        if not 0.0 <= float(overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
        self.hops = tuple(max(1, round(n * (1.0 - float(overlap)))) for n in self.fft_sizes)
        _check_weights(linear_weight=linear_weight, log_weight=log_weight)
        if not float(eps) > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.linear_weight = float(linear_weight)
        self.log_weight = float(log_weight)
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        B, C, T = pred.shape  # batch, channels, samples
        if T < max(self.fft_sizes) // 2 + 1:
            raise ValueError(
                f"pred and target have {T} samples; the largest fft_size "
                f"({max(self.fft_sizes)}) needs at least {max(self.fft_sizes) // 2 + 1}"
            )
        pred_rows, target_rows = pred.reshape(B * C, T), target.reshape(B * C, T)
        if self._spectra_bytes(B * C, T, pred.dtype) > self.max_direct_bytes:
            total = self._chunked(pred_rows, target_rows).reshape(B, C)
        else:
            total = self._direct(pred_rows, target_rows).reshape(B, C)
        if self.reduction == "mean":
            return total.mean()
        if self.reduction == "sum":
            return total.sum()
        return total

    def _framing(self, n_fft: int, hop: int) -> Framing:
        # As _stft_magnitude: centred frames, zero padding.
        return Framing(n_fft, hop, n_fft // 2, "constant")

    def _spectra_bytes(self, rows: int, samples: int, dtype: torch.dtype) -> int:
        per_row = sum(
            self._framing(n, hop).frames(samples) * (n // 2 + 1)
            for n, hop in zip(self.fft_sizes, self.hops)
        )
        return rows * per_row * complex_itemsize(dtype)

    def _direct(self, pred_rows: torch.Tensor, target_rows: torch.Tensor) -> torch.Tensor:
        """Loss per row of ``(rows, samples)`` in one autograd pass; ``(rows,)``."""
        # Two transforms rather than one on the stacked pair: stacked, the target's STFT would
        # join the prediction's autograd graph and its backward would run for nothing (the
        # loss's backward took 2.4x as long that way, benchmarks/bench_ddsp.py).
        total = pred_rows.new_zeros(pred_rows.shape[0])
        for n_fft, hop in zip(self.fft_sizes, self.hops):
            p = _stft_magnitude(pred_rows, n_fft, hop)
            t = _stft_magnitude(target_rows, n_fft, hop)
            per_item = self.linear_weight * (p - t).abs().mean(dim=(-2, -1))
            if self.log_weight:
                log_gap = torch.log(p + self.eps) - torch.log(t + self.eps)
                per_item = per_item + self.log_weight * log_gap.abs().mean(dim=(-2, -1))
            total = total + per_item
        return total

    def _block_sums(self, n_fft: int, hop: int, pred: torch.Tensor, target: torch.Tensor):
        """``(rows, 2)`` sums of ``|P - T|`` and ``|log(P + eps) - log(T + eps)|`` over the
        frames held by the padded segments ``pred``, ``target`` ``(rows, L)``."""
        window = torch.hann_window(n_fft, dtype=pred.dtype, device=pred.device)

        def magnitude(x: torch.Tensor) -> torch.Tensor:
            spec = torch.stft(x, n_fft, hop, window=window, center=False, return_complex=True)
            return spec.abs()

        p, t = magnitude(pred), magnitude(target)
        linear = (p - t).abs().sum(dim=(-2, -1))
        if not self.log_weight:
            return linear.unsqueeze(-1)
        log_gap = torch.log(p + self.eps) - torch.log(t + self.eps)
        return torch.stack([linear, log_gap.abs().sum(dim=(-2, -1))], dim=-1)

    def _chunked(self, pred_rows: torch.Tensor, target_rows: torch.Tensor) -> torch.Tensor:
        """As :meth:`_direct`, from blockwise sums with bounded memory; ``(rows,)``."""
        T = pred_rows.shape[-1]
        itemsize = complex_itemsize(pred_rows.dtype)
        total = pred_rows.new_zeros(pred_rows.shape[0])
        for n_fft, hop in zip(self.fft_sizes, self.hops):
            framing = self._framing(n_fft, hop)
            sums = framewise_sums(
                functools.partial(self._block_sums, n_fft, hop), pred_rows, target_rows,
                framing, (n_fft // 2 + 1) * itemsize, self.block_bytes,
            )  # fmt: skip
            count = (n_fft // 2 + 1) * framing.frames(T)
            per_item = self.linear_weight * (sums[:, 0] / count)
            if self.log_weight:
                per_item = per_item + self.log_weight * (sums[:, 1] / count)
            total = total + per_item
        return total
