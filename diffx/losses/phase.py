"""Phase-sensitive losses for aligning a signal to a reference (``diffx.tasks.PhaseAlignment``).

Time domain: the negative normalized cross-correlation (:class:`NCCLoss`). Spectral: the
complex multi-resolution STFT distance (:class:`ComplexSTFTLoss`, which sees phase where a
magnitude STFT loss does not) and the parallel-mix loss of Bargum et al. (2023)
(:class:`ParallelMixLoss`). Frequency domain, when a target response is known or measured:
:class:`PhaseResponseLoss` and :class:`GroupDelayLoss`.

An allpass filter keeps the energy of its input, so on long signals the ESR of ``A x`` against
``y`` is ``(|x|^2 + |y|^2 - 2 <A x, y>) / |y|^2``: minimizing it is maximizing the
correlation, the same optimum as :class:`NCCLoss`. By Parseval,
``<A x, y> = sum_f |S_xy(f)| cos(phi_A(f) - arg S_xy(f))``, so :class:`PhaseResponseLoss` with
cross-power weights is that same objective evaluated from the measured cross-spectrum, without
filtering any audio.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from diffx.losses._chunking import (
    BLOCK_BYTES,
    MAX_DIRECT_BYTES,
    Framing,
    check_chunking,
    complex_itemsize,
    framewise_sums,
)
from diffx.losses._reduction import check_reduction, reduce
from diffx.losses.time_domain import check_pair


def ncc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Normalized cross-correlation at lag 0 along the last dimension: ``(...,)`` in [-1, 1]."""
    check_pair(pred, target)
    num = (pred * target).sum(-1)
    den = torch.sqrt(pred.square().sum(-1) * target.square().sum(-1) + eps)
    return num / den


class NCCLoss(nn.Module):
    """``-NCC(pred, target)``: -1 when ``pred`` is a positive multiple of ``target``.

    Shapes: ``(batch, channels, samples)`` each; output a scalar, or ``(batch, channels)``
    with ``reduction="none"``.
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        return reduce(-ncc(pred, target), self.reduction)


def _stft(x: torch.Tensor, fft_size: int, window: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    spec = torch.stft(
        flat, fft_size, hop_length=fft_size // 4, window=window, center=True,
        return_complex=True,
    )  # fmt: skip
    return spec.reshape(*x.shape[:-1], *spec.shape[-2:])


def _spectra(pred: torch.Tensor, target: torch.Tensor, fft_sizes: tuple[int, ...]):
    """Yield ``(fft_size, STFT of pred, STFT of target)`` for every size (Hann, hop size/4)."""
    for n in fft_sizes:
        window = torch.hann_window(n, dtype=pred.dtype, device=pred.device)
        yield n, _stft(pred, n, window), _stft(target, n, window)


def _framing(fft_size: int) -> Framing:
    # As _stft: hop size / 4, centred frames, torch.stft's default reflect padding.
    return Framing(fft_size, fft_size // 4, fft_size // 2, "reflect")


def _block_spectra(fft_size: int, pred: torch.Tensor, target: torch.Tensor):
    """STFTs ``(rows, bins, frames)`` of the frames held by padded segments ``(rows, L)``."""
    window = torch.hann_window(fft_size, dtype=pred.dtype, device=pred.device)
    return tuple(
        torch.stft(x, fft_size, fft_size // 4, window=window, center=False, return_complex=True)
        for x in (pred, target)
    )


class _ChunkedSTFTLoss(nn.Module):
    """Chunking settings and the choice between one pass and blockwise sums (see
    :mod:`diffx.losses._chunking`), shared by the multi-resolution losses below."""

    fft_sizes: tuple[int, ...]

    def _init_chunking(self, max_direct_bytes: float, block_bytes: int) -> None:
        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)

    def _check_length(self, pred: torch.Tensor) -> None:
        """Refuse signals too short for the centred (reflect-padded) STFT of every size."""
        longest = max(self.fft_sizes)
        if pred.shape[-1] <= longest // 2:
            raise ValueError(
                f"pred and target have {pred.shape[-1]} samples, too short for the centred "
                f"STFT of size {longest}: it needs at least {longest // 2 + 1} samples"
            )

    def _use_blocks(self, pred: torch.Tensor) -> bool:
        """Whether the complex STFTs of ``pred`` (all sizes) exceed ``max_direct_bytes``."""
        rows, samples = pred[..., 0].numel(), pred.shape[-1]
        per_row = sum(_framing(n).frames(samples) * (n // 2 + 1) for n in self.fft_sizes)
        return rows * per_row * complex_itemsize(pred.dtype) > self.max_direct_bytes

    def _sums(self, fn, fft_size: int, pred: torch.Tensor, target: torch.Tensor):
        """Blockwise sums of ``fn(fft_size, pred_segment, target_segment)`` for every signal of
        ``(..., samples)`` inputs; returns ``(..., K)``."""
        rows_pred = pred.reshape(-1, pred.shape[-1])
        rows_target = target.reshape(-1, target.shape[-1])
        bytes_per_frame = (fft_size // 2 + 1) * complex_itemsize(pred.dtype)
        sums = framewise_sums(
            functools.partial(fn, fft_size), rows_pred, rows_target, _framing(fft_size),
            bytes_per_frame, self.block_bytes,
        )  # fmt: skip
        return sums.reshape(*pred.shape[:-1], sums.shape[-1])


def _check_sizes(fft_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in fft_sizes)
    if not sizes or any(s < 8 for s in sizes):
        raise ValueError(f"fft_sizes must be a non-empty list of sizes >= 8, got {fft_sizes!r}")
    return sizes


class ComplexSTFTLoss(_ChunkedSTFTLoss):
    """Multi-resolution complex STFT distance: the mean over FFT sizes of
    ``sum |S_pred - S_target| / sum |S_target|`` (Hann window, hop = size / 4).

    Unlike a magnitude STFT loss it is not blind to phase: two signals with equal magnitude
    spectra and opposite phases are at distance 2.

    Args:
        fft_sizes: STFT sizes in samples.
        eps: added to the denominator.
        reduction: over ``(batch, channels)``.
        max_direct_bytes: largest size (bytes) of the complex STFTs of ``pred``, all sizes
            together, computed in one autograd pass; beyond it the sums are taken in blocks of
            frames and recomputed in the backward pass (same value to float rounding, peak
            memory a few times the input). ``math.inf``: never chunk, 0: always.
        block_bytes: most bytes of STFT per block when chunking.

    Shapes: ``(batch, channels, samples)`` each, more than ``max(fft_sizes) // 2`` samples;
    output a scalar, or ``(batch, channels)`` with ``reduction="none"``.
    """

    def __init__(
        self, fft_sizes: Sequence[int] = (2048, 1024, 512), eps: float = 1e-8,
        reduction: str = "mean", *, max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ):  # fmt: skip
        super().__init__()
        self.fft_sizes = _check_sizes(fft_sizes)
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)
        self._init_chunking(max_direct_bytes, block_bytes)

    @staticmethod
    def _block_sums(fft_size: int, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(rows, 2)``: sums of ``|S_pred - S_target|`` and ``|S_target|`` over a block."""
        sp, st = _block_spectra(fft_size, pred, target)
        return torch.stack([(sp - st).abs().sum((-2, -1)), st.abs().sum((-2, -1))], dim=-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        self._check_length(pred)
        total = 0.0
        if self._use_blocks(pred):
            for n in self.fft_sizes:
                sums = self._sums(self._block_sums, n, pred, target)
                total = total + sums[..., 0] / (sums[..., 1] + self.eps)
            return reduce(total / len(self.fft_sizes), self.reduction)
        for _, sp, st in _spectra(pred, target, self.fft_sizes):
            total = total + (sp - st).abs().sum((-2, -1)) / (st.abs().sum((-2, -1)) + self.eps)
        return reduce(total / len(self.fft_sizes), self.reduction)


class ParallelMixLoss(_ChunkedSTFTLoss):
    """The comb-filter loss of Bargum et al. (2023): how far the magnitude of the sum
    ``|P + T|`` falls short of the in-phase sum ``|P| + |T|``, over several STFT sizes.

    Per FFT size: ``mean((|P| + |T| - |P + T|)^2) / mean((|P| + |T|)^2)`` over the bins up to
    ``max_freq_hz``. The paper's version (losses.py in github.com/abargum/diff-apf) is the
    unnormalized mean square over the lowest eighth of the bins at 192 kHz (FFT sizes 1024, 512,
    2048); the normalization here makes it independent of level, and the band is given in Hz.
    It is 0 exactly when every bin of ``pred`` is in phase with ``target``, whatever their
    magnitudes: the loss for aligning a dry signal to a processed one.

    Args:
        sample_rate: Hz (for ``max_freq_hz``).
        fft_sizes: STFT sizes in samples.
        max_freq_hz: highest frequency counted (default: all).
        reduction: over ``(batch, channels)``.
        max_direct_bytes: largest size (bytes) of the complex STFTs of ``pred``, all sizes
            together, computed in one autograd pass; beyond it the sums are taken in blocks of
            frames and recomputed in the backward pass (same value to float rounding, peak
            memory a few times the input). ``math.inf``: never chunk, 0: always.
        block_bytes: most bytes of STFT per block when chunking.

    Shapes: ``(batch, channels, samples)`` each, more than ``max(fft_sizes) // 2`` samples;
    output a scalar, or ``(batch, channels)`` with ``reduction="none"``.
    """

    def __init__(
        self, sample_rate: float, fft_sizes: Sequence[int] = (1024, 512, 2048),
        max_freq_hz: float | None = None, reduction: str = "mean", *,
        max_direct_bytes: float = MAX_DIRECT_BYTES, block_bytes: int = BLOCK_BYTES,
    ):  # fmt: skip
        super().__init__()
        self.sample_rate = float(sample_rate)
        self.fft_sizes = _check_sizes(fft_sizes)
        self.max_freq_hz = max_freq_hz
        self.reduction = check_reduction(reduction)
        self._init_chunking(max_direct_bytes, block_bytes)

    def _bins(self, fft_size: int) -> int:
        """Bins counted: those up to ``max_freq_hz`` (all by default), as the slice takes."""
        if self.max_freq_hz is None:
            return fft_size // 2 + 1
        return min(fft_size // 2 + 1, int(self.max_freq_hz / self.sample_rate * fft_size) + 1)

    def _block_sums(self, fft_size: int, pred: torch.Tensor, target: torch.Tensor):
        """``(rows, 2)``: sums of the squared gap and of the squared in-phase sum over a block."""
        sp, st = _block_spectra(fft_size, pred, target)
        bins = self._bins(fft_size)
        sp, st = sp[..., :bins, :], st[..., :bins, :]
        ideal = sp.abs() + st.abs()
        gap = (ideal - (sp + st).abs()).square().sum((-2, -1))
        return torch.stack([gap, ideal.square().sum((-2, -1))], dim=-1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        self._check_length(pred)
        total = 0.0
        if self._use_blocks(pred):
            for n in self.fft_sizes:
                sums = self._sums(self._block_sums, n, pred, target)
                # Means over bins x frames as the one-pass path takes them (eps on the mean).
                count = self._bins(n) * _framing(n).frames(pred.shape[-1])
                total = total + (sums[..., 0] / count) / (sums[..., 1] / count + 1e-12)
            return reduce(total / len(self.fft_sizes), self.reduction)
        for n, sp, st in _spectra(pred, target, self.fft_sizes):
            if self.max_freq_hz is not None:
                bins = int(self.max_freq_hz / self.sample_rate * n) + 1
                sp, st = sp[..., :bins, :], st[..., :bins, :]
            ideal = sp.abs() + st.abs()
            gap = (ideal - (sp + st).abs()).square().mean((-2, -1))
            total = total + gap / (ideal.square().mean((-2, -1)) + 1e-12)
        return reduce(total / len(self.fft_sizes), self.reduction)


def _check_response(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None):
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(
            f"pred and target must have one value per frequency, got shapes "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if weight is None:
        return torch.ones_like(target)
    if weight.shape[-1] != target.shape[-1]:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, target {tuple(target.shape)}")
    if bool((weight < 0).any()) or not bool((weight.sum(-1) > 0).all()):
        raise ValueError("weight must be >= 0 with a positive sum")
    return weight


class PhaseResponseLoss(nn.Module):
    """Weighted distance between a phase response and a target phase response (radians).

    ``wrapped=True``: ``sum w (1 - cos(pred - target)) / sum w`` (blind to whole turns, 0 to 2;
    for small errors about half the mean squared error in rad^2). ``wrapped=False``:
    ``sum w (pred - target)^2 / sum w`` on unwrapped phases: a smooth bowl without the local
    minima of the wrapped form, but it requires the target to be unwrapped correctly.

    Shapes: ``pred``, ``target`` and ``weight`` ``(..., n_freqs)``; output a scalar.
    """

    def __init__(self, wrapped: bool = True):
        super().__init__()
        self.wrapped = bool(wrapped)

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        w = _check_response(pred, target, weight)
        diff = pred - target
        err = 1 - torch.cos(diff) if self.wrapped else diff.square()
        return ((w * err).sum(-1) / w.sum(-1)).mean()


class GroupDelayLoss(nn.Module):
    """Weighted mean squared error between group delays, in samples^2.

    Shapes: ``pred``, ``target`` and ``weight`` ``(..., n_freqs)``; output a scalar.
    """

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        w = _check_response(pred, target, weight)
        return ((w * (pred - target).square()).sum(-1) / w.sum(-1)).mean()
