"""Phase-sensitive losses against analytic values and numpy."""

import math

import numpy as np
import pytest
import torch

from diffx.losses import (
    ComplexSTFTLoss,
    GroupDelayLoss,
    NCCLoss,
    ParallelMixLoss,
    PhaseResponseLoss,
    ncc,
)


def _noise(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_ncc_matches_numpy_per_item():
    x, y = _noise(3, 1, 500, seed=1), _noise(3, 1, 500, seed=2)
    values = ncc(x, y)
    for b in range(3):
        a, c = x[b, 0].numpy(), y[b, 0].numpy()
        assert float(values[b, 0]) == pytest.approx(a @ c / np.sqrt((a @ a) * (c @ c)))
    assert float(NCCLoss()(x, 2.5 * x)) == pytest.approx(-1.0)
    assert float(NCCLoss()(x, -x)) == pytest.approx(1.0)


def test_complex_stft_loss_sees_phase_where_magnitude_does_not():
    x = _noise(2, 1, 8192, seed=3)
    loss = ComplexSTFTLoss(fft_sizes=(512, 256))
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-12)
    # Same magnitudes, opposite phases: |S - (-S)| / |S| = 2 in every bin.
    assert float(loss(-x, x)) == pytest.approx(2.0, rel=1e-9)


def test_parallel_mix_loss_ignores_magnitude_and_counts_phase():
    x = _noise(2, 1, 8192, seed=4)
    loss = ParallelMixLoss(44100, fft_sizes=(512, 1024))
    assert float(loss(0.3 * x, x)) == pytest.approx(0.0, abs=1e-12)
    # Opposite phase: |P + T| = 0, so the gap is the whole in-phase sum: ratio 1.
    assert float(loss(-x, x)) == pytest.approx(1.0, rel=1e-9)
    # Band limit in Hz: a phase error only above it is not seen.
    hp = torch.fft.irfft(torch.fft.rfft(x) * (torch.arange(4097) > 3000), 8192)
    lp = x - hp
    limited = ParallelMixLoss(44100, fft_sizes=(512,), max_freq_hz=8000)
    assert float(limited(lp - hp, x)) < 0.02 * float(limited(-lp + hp, x))


def test_phase_response_loss_wrapped_and_unwrapped():
    target = torch.linspace(-20, 0, 100, dtype=torch.float64)
    wrapped, unwrapped = PhaseResponseLoss(wrapped=True), PhaseResponseLoss(wrapped=False)
    assert float(wrapped(target + 2 * math.pi, target)) == pytest.approx(0.0, abs=1e-12)
    assert float(wrapped(target + math.pi / 2, target)) == pytest.approx(1.0)
    assert float(unwrapped(target + 0.3, target)) == pytest.approx(0.09)
    # Weights: only the weighted half counts.
    pred = target.clone()
    pred[50:] += 1.0
    weight = torch.cat([torch.ones(50), torch.zeros(50)]).double()
    assert float(unwrapped(pred, target, weight)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        unwrapped(pred, target, -weight)
    with pytest.raises(ValueError, match="one value per frequency"):
        unwrapped(pred[:10], target)


def test_group_delay_loss():
    target = torch.linspace(0, 5, 40, dtype=torch.float64)
    assert float(GroupDelayLoss()(target + 2.0, target)) == pytest.approx(4.0)


def test_silence_gives_finite_losses_and_gradients():
    silent = torch.zeros(2, 1, 4096, dtype=torch.float64)
    x = _noise(2, 1, 4096, seed=5)
    for loss in (NCCLoss(), ComplexSTFTLoss(fft_sizes=(512,)), ParallelMixLoss(44100, (512,))):
        for pred, target in ((silent, x), (x, silent), (silent, silent)):
            pred = pred.clone().requires_grad_(True)
            value = loss(pred, target)
            (grad,) = torch.autograd.grad(value, pred)
            assert torch.isfinite(value), type(loss).__name__
            assert torch.isfinite(grad).all(), type(loss).__name__
