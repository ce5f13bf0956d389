"""Stereo effects: Pan (mono to stereo) and StereoWidth, against analytic results."""

from __future__ import annotations

import math

import pytest
import torch

from diffx.effects import EffectChain, Gain, Pan, StereoWidth

SR = 44100.0


def _noise(channels: int, batch: int = 3, samples: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, samples, generator=g, dtype=torch.float64)


def test_pan_maps_normalized_positions_to_constant_power_gains():
    x = _noise(1)
    # Normalized 0, 0.5, 1 are hard left, centre (-3 dB each side), hard right.
    params = torch.tensor([[0.0], [0.5], [1.0]], dtype=torch.float64)
    y = Pan(SR)(x, params)
    assert y.shape == (3, 2, 512)
    expected = torch.tensor([[1.0, 0.0], [math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0]],
                            dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(y, x * expected[:, :, None], rtol=1e-12, atol=1e-15)
    # Constant power at every position.
    torch.testing.assert_close(y.square().sum(1, keepdim=True), x.square())


def test_stereo_width_default_is_identity_and_zero_folds_to_mono():
    x = _noise(2)
    width = StereoWidth(SR)
    torch.testing.assert_close(width(x), x, rtol=1e-12, atol=1e-15)
    mono = width(x, torch.zeros(3, 1, dtype=torch.float64))
    mid = x.mean(1, keepdim=True)
    torch.testing.assert_close(mono, mid.expand(-1, 2, -1), rtol=1e-12, atol=1e-15)
    # Normalized 1 is width 2: the side doubled, the mid kept.
    wide = width(x, torch.ones(3, 1, dtype=torch.float64))
    side = (x[:, :1] - x[:, 1:]) / 2
    torch.testing.assert_close(wide[:, :1] - wide[:, 1:], 2 * (2 * side))
    torch.testing.assert_close(wide.mean(1, keepdim=True), mid)


def test_a_chain_turns_mono_into_stereo_and_carries_gradients():
    chain = EffectChain([Gain(SR), Pan(SR), StereoWidth(SR)])
    x = _noise(1).requires_grad_(True)
    params = torch.rand(3, chain.parameter_size(), dtype=torch.float64, requires_grad=True)
    y = chain(x, params)
    assert y.shape == (3, 2, 512)
    y.square().sum().backward()
    assert bool(torch.isfinite(x.grad).all()) and bool(params.grad[:, :2].abs().sum() > 0)


@pytest.mark.parametrize("effect, channels, message", [
    (Pan(SR), 2, "Pan takes mono audio"), (StereoWidth(SR), 1, "StereoWidth takes stereo"),
    (StereoWidth(SR), 3, "got 3 channel"),
])  # fmt: skip
def test_stereo_effects_name_the_channel_count_they_take(effect, channels, message):
    with pytest.raises(ValueError, match=message):
        effect(_noise(channels))
