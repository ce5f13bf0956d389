"""Stereo ops against their analytic definitions: power, inverses, mono folds, gradients."""

import math

import numpy as np
import pytest
import torch

import diffx.functional as F

G = torch.Generator().manual_seed(0)


def _noise(batch, channels, samples=256, dtype=torch.float64):
    return torch.randn(batch, channels, samples, generator=G, dtype=dtype)


@pytest.mark.parametrize("position", [-1.0, -0.5, 0.0, 0.3, 1.0])
def test_pan_keeps_power_and_follows_the_sine_cosine_law(position):
    x = _noise(1, 1)
    y = F.pan(x, position)
    assert y.shape == (1, 2, 256)
    torch.testing.assert_close(y.square().sum(1), x.square().sum(1))  # constant power
    theta = (position + 1) * math.pi / 4
    torch.testing.assert_close(y[:, 0], math.cos(theta) * x[:, 0])
    torch.testing.assert_close(y[:, 1], math.sin(theta) * x[:, 0])


def test_pan_ends_and_centre():
    x = _noise(3, 1)
    y = F.pan(x, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    assert y[0, 1].abs().max() < 1e-15 and y[2, 0].abs().max() < 1e-15
    torch.testing.assert_close(y[1, 0], y[1, 1])
    torch.testing.assert_close(y[1, 0], x[1, 0] / math.sqrt(2))  # -3 dB per channel


def test_mid_side_round_trip_and_mono_has_no_side():
    x = _noise(4, 2)
    ms = F.mid_side_encode(x)
    torch.testing.assert_close(F.mid_side_decode(ms), x, rtol=0, atol=1e-15)
    mono = _noise(2, 1).expand(2, 2, 256)
    assert F.mid_side_encode(mono)[:, 1].abs().max() == 0


@pytest.mark.parametrize("width", [0.0, 0.5, 1.0, 2.0])
def test_width_scales_the_side_only(width):
    x = _noise(2, 2)
    y = F.stereo_width(x, width)
    left, right = x[:, 0].numpy(), x[:, 1].numpy()
    mid, side = (left + right) / 2, (left - right) / 2
    np.testing.assert_allclose(y[:, 0].numpy(), mid + width * side, atol=1e-14)
    np.testing.assert_allclose(y[:, 1].numpy(), mid - width * side, atol=1e-14)


def test_gradcheck_and_gradgradcheck():
    x = _noise(2, 2, 32).requires_grad_()
    w = torch.tensor([0.3, 1.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(F.stereo_width, (x, w))
    assert torch.autograd.gradgradcheck(F.stereo_width, (x, w))
    m = _noise(2, 1, 32).requires_grad_()
    p = torch.tensor([-0.4, 0.8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(F.pan, (m, p))
    assert torch.autograd.gradgradcheck(F.pan, (m, p))


def test_batch_items_are_independent():
    x = _noise(3, 2)
    w = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    whole = F.stereo_width(x, w)
    for i in range(3):
        torch.testing.assert_close(whole[i : i + 1], F.stereo_width(x[i : i + 1], w[i]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: F.pan(_noise(1, 2), 0.0), "mono x"),
        (lambda: F.pan(_noise(1, 1), 1.5), "pan_position"),
        (lambda: F.stereo_width(_noise(1, 1), 1.0), "stereo x"),
        (lambda: F.stereo_width(_noise(1, 2), -0.1), "width"),
        (lambda: F.stereo_width(_noise(1, 2), F.stereo.MAX_WIDTH + 1), "width"),
        (lambda: F.mid_side_encode(_noise(1, 3)), "3 channel"),
        (lambda: F.mid_side_decode(_noise(1, 1)), "stereo ms"),
        (lambda: F.pan(torch.full((1, 1, 8), math.nan), 0.0), "NaN"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()
