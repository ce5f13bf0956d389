"""Bounded-memory (blockwise) evaluation of the long-signal losses.

Oracle: the same loss in one autograd pass (``max_direct_bytes=inf``). Forced into blocks
(``max_direct_bytes=0``) with a block size that splits the batch into several row runs and a
row into several frame runs, the value and the gradients with respect to ``pred`` and
``target`` agree to float64 rounding, for every reduction.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffx.losses import (
    AntialiasLowpass,
    ComplexSTFTLoss,
    MelSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleSpectralLoss,
    NMRLoss,
    ParallelMixLoss,
)
from diffx.losses._chunking import Framing, block_plan, check_chunking

SR = 16000

LOSSES = {
    "mrstft": lambda **kw: MultiResolutionSTFTLoss(
        fft_sizes=(256, 128), hop_sizes=(64, 32), win_lengths=(200, 100), w_lin_mag=0.5, **kw),
    "mrstft_sc_only": lambda **kw: MultiResolutionSTFTLoss(
        fft_sizes=(256,), hop_sizes=(64,), win_lengths=(256,), w_log_mag=0.0, **kw),
    "mel": lambda **kw: MelSTFTLoss(SR, n_mels=16, fft_size=256, hop_size=64, win_length=256,
                                    **kw),
    "multiscale": lambda **kw: MultiScaleSpectralLoss(fft_sizes=(256, 64), **kw),
    "multiscale_linear": lambda **kw: MultiScaleSpectralLoss(fft_sizes=(128,), log_weight=0.0,
                                                             **kw),
    "complex_stft": lambda **kw: ComplexSTFTLoss(fft_sizes=(256, 64), **kw),
    "parallel_mix": lambda **kw: ParallelMixLoss(SR, fft_sizes=(256, 64), max_freq_hz=5000.0,
                                                 **kw),
    # BS.1387's bands reach 18 kHz: the NMR needs 44.1 kHz (4 frames of 1024 in 3000 samples).
    "nmr": lambda **kw: NMRLoss(44100, n_fft=1024, hop_length=512, **kw),
    "nmr_db": lambda **kw: NMRLoss(44100, output="db", n_fft=1024, hop_length=512, **kw),
}  # fmt: skip

# About 4 frames of the largest spectra per block: (3, 2, 3000) signals split into 6 row runs
# and each row into several frame runs.
SMALL_BLOCK_BYTES = 4 * 129 * 16


def _pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = 0.3 * torch.randn(3, 2, 3000, generator=g, dtype=torch.float64)
    pred = target + 0.1 * torch.randn(3, 2, 3000, generator=g, dtype=torch.float64)
    pred[1, 0, :1000] = 0.0  # a silent stretch: floors and clamps inside blocks
    return pred, target


def _value_and_grads(loss, pred, target):
    pred = pred.clone().requires_grad_(True)
    target = target.clone().requires_grad_(True)
    value = loss(pred, target)
    # A weighted sum, so that "none" checks every item's gradient separately.
    weights = torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).reshape(value.shape)
    (value * weights).sum().backward()
    return value.detach(), pred.grad, target.grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_blockwise_matches_one_pass(name, reduction):
    pred, target = _pair()
    direct = LOSSES[name](reduction=reduction, max_direct_bytes=math.inf)
    blocked = LOSSES[name](reduction=reduction, max_direct_bytes=0, block_bytes=SMALL_BLOCK_BYTES)
    expected = _value_and_grads(direct, pred, target)
    got = _value_and_grads(blocked, pred, target)
    for label, e, g in zip(("value", "grad pred", "grad target"), expected, got):
        assert e.shape == g.shape, label
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-12, msg=f"{name}: {label}")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_blockwise_float32_matches_one_pass(reduction):
    pred, target = (t.float() for t in _pair(1))
    direct = LOSSES["mrstft"](reduction=reduction, max_direct_bytes=math.inf)
    blocked = LOSSES["mrstft"](reduction=reduction, max_direct_bytes=0,
                               block_bytes=SMALL_BLOCK_BYTES)  # fmt: skip
    expected = _value_and_grads(direct, pred, target)
    for e, g in zip(expected, _value_and_grads(blocked, pred, target)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_blockwise_fir_matches_conv1d_and_its_adjoint():
    x = torch.randn(3, 2, 5000, dtype=torch.float64, requires_grad=True)
    direct = AntialiasLowpass(SR, 5000.0, 7000.0, max_direct_bytes=math.inf)
    blocked = AntialiasLowpass(SR, 5000.0, 7000.0, max_direct_bytes=0, block_bytes=4096)
    g = torch.randn(3, 2, 5000, dtype=torch.float64)
    y_direct = direct(x)
    (grad_direct,) = torch.autograd.grad(y_direct, x, g)
    y_blocked = blocked(x)
    (grad_blocked,) = torch.autograd.grad(y_blocked, x, g)
    torch.testing.assert_close(y_blocked, y_direct, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(grad_blocked, grad_direct, rtol=1e-12, atol=1e-13)
    # And the filter is the centred linear-phase FIR (numpy's full convolution, trimmed).
    taps = direct.taps.numpy()
    full = np.convolve(x[0, 0].detach().numpy(), taps)
    delay = (len(taps) - 1) // 2
    np.testing.assert_allclose(y_blocked[0, 0].detach().numpy(), full[delay : delay + 5000],
                               rtol=1e-12, atol=1e-13)  # fmt: skip


def test_framing_counts_frames_as_torch_stft():
    for n_fft, hop, samples in [(256, 64, 3000), (64, 16, 64), (2048, 512, 44100)]:
        framing = Framing(n_fft, hop, n_fft // 2)
        window = torch.hann_window(n_fft, dtype=torch.float64)
        spec = torch.stft(torch.zeros(samples, dtype=torch.float64), n_fft, hop, window=window,
                          return_complex=True)  # fmt: skip
        assert framing.frames(samples) == spec.shape[-1]


def test_block_plan_covers_everything_once_within_the_budget():
    for rows, frames, per_frame, budget in [(14, 2049, 16400, 32 * 2**20), (3, 100, 10, 35),
                                            (5, 7, 100, 10**9), (1, 1, 8, 1)]:  # fmt: skip
        row_runs, frame_runs = block_plan(rows, frames, per_frame, budget)
        assert [r for a, b in row_runs for r in range(a, b)] == list(range(rows))
        assert [f for a, b in frame_runs for f in range(a, b)] == list(range(frames))
        largest = max(b - a for a, b in row_runs) * max(b - a for a, b in frame_runs)
        assert largest * per_frame <= max(budget, per_frame)


@pytest.mark.parametrize("settings, culprit", [((-1.0, 10), "max_direct_bytes"),
                                               ((math.nan, 10), "max_direct_bytes"),
                                               ((0.0, 0), "block_bytes"),
                                               ((0.0, 2.5), "block_bytes")])  # fmt: skip
def test_bad_chunking_settings_are_named(settings, culprit):
    with pytest.raises(ValueError, match=culprit):
        check_chunking(*settings)
    with pytest.raises(ValueError, match=culprit):
        ComplexSTFTLoss(max_direct_bytes=settings[0], block_bytes=settings[1])
