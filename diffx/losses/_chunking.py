"""Bounded-memory evaluation of framewise losses on long signals.

A spectral loss on ``(rows, samples)`` audio expands every row into ``frames x bins`` complex
values; autograd then keeps several such tensors per resolution alive until the backward pass.
On a (7, 2, 2^20) float64 batch that reached 16 GB for the multi-resolution STFT loss, 70
times the input. Chunking the computation alone does not help the backward pass, because
autograd would still save every chunk's intermediates.

:func:`framewise_sums` evaluates a loss's per-row statistics (sums over frames) block by
block, where a block is a group of rows and a run of consecutive frames, and keeps nothing of a
block once its sums are added up. Its backward pass recomputes each block with autograd and
backpropagates it at once, so at any time only one block's graph exists. The price is one
extra forward evaluation per backward, which is why the losses use it only when the whole
input's spectra would exceed ``max_direct_bytes``; shorter inputs take the one-pass path.

Every statistic must be a sum over frames (and bins) of the block, so that adding the blocks'
sums gives the whole signal's value; losses then form their means, norms and ratios from the
sums (a spectral convergence ``||Y - X|| / ||Y||`` takes the square root only after the sums of
squares of all blocks are added).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

#: Default of ``max_direct_bytes``: up to this many bytes of spectra (all rows, frames and
#: resolutions together) a loss runs in one autograd pass, as before chunking. Training
#: batches such as (16, 1, 65536) float32 (115 MB for the default MR-STFT) stay below it, so
#: their speed is unchanged; the peak of the one-pass path is a few times this.
MAX_DIRECT_BYTES = 256 * 2**20

#: Default of ``block_bytes``: the spectra of one block (rows x frames x bins complex values)
#: take at most this many bytes; a block's peak, forward or backward, is a small multiple.
BLOCK_BYTES = 32 * 2**20

SumsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_chunking(max_direct_bytes: float, block_bytes: int) -> tuple[float, int]:
    """Validate the two chunking settings of a loss; returns them as ``(float, int)``."""
    if not (float(max_direct_bytes) >= 0):
        raise ValueError(
            f"max_direct_bytes must be >= 0 (inf: never chunk), got {max_direct_bytes!r}"
        )
    if isinstance(block_bytes, bool) or int(block_bytes) != block_bytes or block_bytes < 1:
        raise ValueError(f"block_bytes must be a positive integer, got {block_bytes!r}")
    return float(max_direct_bytes), int(block_bytes)


def complex_itemsize(dtype: torch.dtype) -> int:
    """Bytes of one complex value of the real ``dtype`` (8 for float32, 16 for float64)."""
    return 2 * torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class Framing:
    """How a loss cuts ``(rows, samples)`` into frames.

    Attributes:
        n_fft: frame length (samples).
        hop: frame step (samples).
        pad: samples added at each end before framing (``n_fft // 2`` for a centred STFT).
        pad_mode: ``"reflect"`` or ``"constant"`` (zeros), as in ``torch.stft``.
    """

    n_fft: int
    hop: int
    pad: int = 0
    pad_mode: str = "reflect"

    def frames(self, samples: int) -> int:
        """Number of frames of a signal of ``samples`` samples (as ``torch.stft``)."""
        return 1 + (samples + 2 * self.pad - self.n_fft) // self.hop

    def padded(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows (r, samples)`` padded at both ends; a copy of ``r`` rows only."""
        if self.pad == 0:
            return rows
        return F.pad(rows, (self.pad, self.pad), mode=self.pad_mode)

    def span(self, f0: int, f1: int) -> slice:
        """The samples of the padded signal that frames ``f0`` to ``f1 - 1`` cover."""
        return slice(f0 * self.hop, (f1 - 1) * self.hop + self.n_fft)


def _even_chunks(total: int, most: int) -> list[tuple[int, int]]:
    """Split ``range(total)`` into ``ceil(total / most)`` runs of (nearly) equal length."""
    n = max(1, math.ceil(total / max(1, most)))
    bounds = [round(total * k / n) for k in range(n + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def block_plan(
    rows: int, frames: int, bytes_per_frame: float, block_bytes: int
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Row runs and frame runs whose blocks hold at most ``block_bytes`` (at least one frame).

    Whole rows are grouped while one row fits; a longer row is split into runs of frames.
    """
    row_bytes = frames * bytes_per_frame
    if row_bytes <= block_bytes:
        return _even_chunks(rows, int(block_bytes // row_bytes)), [(0, frames)]
    return _even_chunks(rows, 1), _even_chunks(frames, int(block_bytes // bytes_per_frame))


def _blocks(framing: Framing, plan, pred: torch.Tensor, target: torch.Tensor) -> Iterator:
    """Yield ``(r0, r1, padded pred rows, padded target rows, frame runs)`` per row run."""
    row_runs, frame_runs = plan
    for r0, r1 in row_runs:
        yield r0, r1, framing.padded(pred[r0:r1]), framing.padded(target[r0:r1]), frame_runs


class _FramewiseSums(torch.autograd.Function):
    """Blockwise sums with a backward pass that recomputes one block at a time."""

    @staticmethod
    def forward(ctx, fn: SumsFn, framing: Framing, plan, pred, target):  # type: ignore[override]
        ctx.fn, ctx.framing, ctx.plan = fn, framing, plan
        ctx.save_for_backward(pred, target)
        total = None
        for r0, r1, p, t, frame_runs in _blocks(framing, plan, pred, target):
            for f0, f1 in frame_runs:
                span = framing.span(f0, f1)
                sums = fn(p[:, span], t[:, span])
                if total is None:
                    total = sums.new_zeros(pred.shape[0], sums.shape[-1])
                total[r0:r1] += sums
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sums):  # type: ignore[override]
        pred, target = ctx.saved_tensors
        fn, framing = ctx.fn, ctx.framing
        need_pred, need_target = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        grad_pred = torch.zeros_like(pred) if need_pred else None
        grad_target = torch.zeros_like(target) if need_target else None
        for r0, r1, p, t, frame_runs in _blocks(framing, ctx.plan, pred, target):
            # Gradients with respect to the padded rows; frames overlap, so blocks add up.
            gp = torch.zeros_like(p) if need_pred else None
            gt = torch.zeros_like(t) if need_target else None
            for f0, f1 in frame_runs:
                span = framing.span(f0, f1)
                ps = p[:, span].detach().requires_grad_(need_pred)
                ts = t[:, span].detach().requires_grad_(need_target)
                with torch.enable_grad():
                    sums = fn(ps, ts)
                    leaves = [x for x in (ps, ts) if x.requires_grad]
                    grads = torch.autograd.grad(sums, leaves, grad_sums[r0:r1])
                grads = list(grads)
                if need_pred:
                    gp[:, span] += grads.pop(0)
                if need_target:
                    gt[:, span] += grads.pop(0)
            if need_pred:
                grad_pred[r0:r1] = _unpad_grad(gp, pred[r0:r1], framing)
            if need_target:
                grad_target[r0:r1] = _unpad_grad(gt, target[r0:r1], framing)
        return None, None, None, grad_pred, grad_target


def _unpad_grad(grad_padded: torch.Tensor, rows: torch.Tensor, framing: Framing) -> torch.Tensor:
    """Gradient with respect to ``rows`` from the gradient with respect to its padded copy."""
    if framing.pad == 0:
        return grad_padded
    # The padding's own backward (reflected samples fold back onto the ones they copy).
    leaf = rows.detach().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(framing.padded(leaf), leaf, grad_padded)
    return grad


def framewise_sums(
    fn: SumsFn,
    pred: torch.Tensor,
    target: torch.Tensor,
    framing: Framing,
    bytes_per_frame: float,
    block_bytes: int,
) -> torch.Tensor:
    """Per-row sums of a framewise statistic, computed in blocks of bounded memory.

    Args:
        fn: maps a block, ``pred`` and ``target`` segments ``(r, L)`` of the padded rows that
            hold exactly the block's frames (``L = (frames - 1) * hop + n_fft``; frame them
            with ``center=False``), to ``(r, K)`` sums over those frames. Differentiable.
        pred, target: ``(rows, samples)`` signals.
        framing: frame length, hop and padding.
        bytes_per_frame: memory one frame of one row costs inside ``fn`` (its spectra), which
            sets the block size.
        block_bytes: most bytes of spectra per block.

    Returns:
        ``(rows, K)``: ``fn``'s sums over all frames of each row, differentiable in ``pred`` and
        ``target``. Peak memory: the gradient (one input's size), one row run's padded copy,
        and one block's intermediates.
    """
    plan = block_plan(pred.shape[0], framing.frames(pred.shape[-1]), bytes_per_frame, block_bytes)
    return _FramewiseSums.apply(fn, framing, plan, pred, target)
