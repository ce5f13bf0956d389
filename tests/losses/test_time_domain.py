"""ESR and DC losses against their closed forms and a scipy-filtered pre-emphasis."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch
from torch import nn

from diffx.losses.time_domain import ESR_EPS, DCLoss, ESRLoss, dc_error, esr


class HighpassConv(nn.Module):
    """y[n] = x[n] - 0.85 x[n-1], a stand-in pre-emphasis for the hook."""

    def forward(self, x):
        return x - 0.85 * nn.functional.pad(x, (1, 0))[..., :-1]


def signals(dtype=torch.float64, shape=(2, 3, 500)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g, dtype=dtype), torch.randn(
        shape, generator=g, dtype=dtype
    )


def test_esr_closed_forms():
    target, _ = signals()
    for gain in (0.0, 0.5, 1.0, 1.7):
        expected = torch.full(target.shape[:-1], (1 - gain) ** 2, dtype=target.dtype)
        torch.testing.assert_close(esr(gain * target, target, eps=0.0), expected)
    torch.testing.assert_close(esr(-target, target, eps=0.0), torch.full((2, 3), 4.0).double())


def test_esr_loss_reductions_and_per_item_ratio():
    target, pred = signals()
    per_item = ((target - pred) ** 2).sum(-1) / ((target**2).sum(-1) + ESR_EPS)
    torch.testing.assert_close(ESRLoss(reduction="none")(pred, target), per_item)
    torch.testing.assert_close(ESRLoss()(pred, target), per_item.mean())
    torch.testing.assert_close(ESRLoss(reduction="sum")(pred, target), per_item.sum())


def test_esr_pre_emphasis_matches_scipy_filtered_signals():
    target, pred = signals()
    b, a = [1.0, -0.85], [1.0]
    yt, yp = (scipy.signal.lfilter(b, a, s.numpy(), axis=-1) for s in (target, pred))
    expected = ((yt - yp) ** 2).sum(-1) / ((yt**2).sum(-1) + ESR_EPS)
    ours = ESRLoss(pre_emphasis=HighpassConv(), reduction="none")(pred, target)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_dc_loss_measures_the_offset():
    target, _ = signals()
    offset = 0.3
    pred = target + offset
    expected = offset**2 / ((target**2).mean(-1) + ESR_EPS)
    torch.testing.assert_close(DCLoss(reduction="none")(pred, target), expected)
    torch.testing.assert_close(dc_error(pred, target), expected)
    # A zero-mean error has no DC.
    zero_mean = torch.sin(torch.linspace(0, 2 * np.pi, 501, dtype=torch.float64))[:-1]
    assert DCLoss()(target + zero_mean, target).item() < 1e-20


def test_silent_target_is_finite_with_finite_gradients():
    pred = torch.randn(1, 1, 100, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(1, 1, 100, dtype=torch.float64, requires_grad=True)
    for loss in (ESRLoss(), DCLoss()):
        value = loss(pred, target)
        (grad_pred, grad_target) = torch.autograd.grad(value, (pred, target))
        assert torch.isfinite(value) and torch.isfinite(grad_pred).all()
        assert torch.isfinite(grad_target).all()


def test_gradcheck():
    target, pred = signals(shape=(2, 1, 20))
    target.requires_grad_(True)
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(ESRLoss(pre_emphasis=HighpassConv()), (pred, target))
    assert torch.autograd.gradcheck(DCLoss(), (pred, target))


def test_float32_matches_float64():
    target, pred = signals()
    torch.testing.assert_close(
        ESRLoss()(pred.float(), target.float()).double(), ESRLoss()(pred, target), rtol=1e-5, atol=0
    )


def test_bad_input_is_named():
    x = torch.zeros(1, 1, 10)
    with pytest.raises(ValueError, match="differ in length"):
        ESRLoss()(x, torch.zeros(1, 1, 11))
    with pytest.raises(ValueError, match="differ in shape"):
        DCLoss()(x, torch.zeros(2, 1, 10))
    with pytest.raises(ValueError, match="target contains"):
        ESRLoss()(x, torch.full((1, 1, 10), float("inf")))
    with pytest.raises(ValueError, match="channels"):
        ESRLoss()(torch.zeros(10), torch.zeros(10))
    with pytest.raises(ValueError, match="reduction"):
        DCLoss(reduction="batchmean")
