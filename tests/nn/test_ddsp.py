"""DDSP decoder: output ranges, input scaling, causality of the recurrent path."""

from __future__ import annotations

import math

import pytest
import torch

from diffx.nn import DDSPDecoder
from diffx.nn.ddsp import EXP_SIGMOID_FLOOR, exp_sigmoid


def test_exp_sigmoid_matches_its_closed_form():
    x = torch.tensor([-50.0, 0.0, 2.0, 50.0], dtype=torch.float64)
    expected = 2.0 * (1.0 / (1.0 + torch.exp(-x))) ** math.log(10.0) + 1e-7
    torch.testing.assert_close(exp_sigmoid(x), expected)
    assert float(exp_sigmoid(torch.tensor(0.0))) == pytest.approx(2 * 0.5 ** math.log(10) + 1e-7)
    assert float(exp_sigmoid(torch.tensor(-1e4))) == pytest.approx(EXP_SIGMOID_FLOOR)


def test_inputs_are_midi_over_127_and_loudness_over_120_db_plus_one():
    scaled = DDSPDecoder.scale_inputs(torch.tensor([[440.0, 880.0]]), torch.tensor([[-120.0, 0.0]]))
    torch.testing.assert_close(scaled[0, :, 0], torch.tensor([69.0, 81.0]) / 127.0)
    torch.testing.assert_close(scaled[0, :, 1], torch.tensor([0.0, 1.0]))
    # 0 Hz (an unvoiced frame) is floored, not turned into -inf.
    assert torch.isfinite(DDSPDecoder.scale_inputs(torch.zeros(1, 1), torch.zeros(1, 1))).all()


def test_decoder_outputs_positive_controls_of_the_right_shapes():
    torch.manual_seed(0)
    decoder = DDSPDecoder(n_harmonics=20, n_noise_bands=9, hidden_size=16, gru_size=16)
    out = decoder(300 + 100 * torch.rand(3, 50), -40 + 10 * torch.randn(3, 50))
    assert out["amplitude"].shape == (3, 50)
    assert out["harmonic_distribution"].shape == (3, 50, 20)
    assert out["noise_magnitudes"].shape == (3, 50, 9)
    for value in out.values():
        assert torch.all(value > 0) and torch.all(value <= 2.0 + 1e-6)
    # The noise starts quiet (pre-activation bias -5): well under the harmonic amplitude scale.
    assert out["noise_magnitudes"].median().item() < 1e-3


def test_decoder_is_causal_in_time():
    torch.manual_seed(1)
    decoder = DDSPDecoder(n_harmonics=8, n_noise_bands=5, hidden_size=16, gru_size=16).eval()
    f0 = 200 + 50 * torch.rand(1, 40)
    loudness = -30 + 5 * torch.randn(1, 40)
    changed = loudness.clone()
    changed[:, 25:] += 20.0
    a, b = decoder(f0, loudness), decoder(f0, changed)
    torch.testing.assert_close(a["amplitude"][:, :25], b["amplitude"][:, :25])
    assert not torch.allclose(a["amplitude"][:, 25:], b["amplitude"][:, 25:])


def test_decoder_rejects_bad_input():
    decoder = DDSPDecoder(n_harmonics=4, n_noise_bands=3, hidden_size=8, gru_size=8)
    with pytest.raises(ValueError, match="f0_hz"):
        decoder(torch.zeros(2, 10), torch.zeros(2, 11))
    with pytest.raises(ValueError, match="loudness_db"):
        decoder(torch.ones(1, 4), torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="n_noise_bands"):
        DDSPDecoder(n_noise_bands=1)
