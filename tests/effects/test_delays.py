"""FeedbackDelay and FDNReverb modules: their specs, the functional ops they call, channels."""

from __future__ import annotations

import pytest
import torch

import diffx.functional as F
from diffx.effects import EffectChain, FDNReverb, FeedbackDelay, Gain

SR = 16000.0


def test_feedback_delay_calls_the_functional_op_with_physical_values():
    effect = FeedbackDelay(SR)
    x = torch.randn(2, 2, 4000, generator=torch.Generator().manual_seed(0))
    params = torch.rand(2, effect.parameter_size(), generator=torch.Generator().manual_seed(1))
    p = effect.denormalize(params)
    expected = F.feedback_delay(x, SR, p["delay_ms"], p["feedback"], p["mix"],
                                lowpass_hz=p["lowpass_hz"],
                                highpass_hz=p["highpass_hz"])  # fmt: skip
    torch.testing.assert_close(effect(x, params), expected)
    assert effect.param_names == ["delay_ms", "feedback", "lowpass_hz", "highpass_hz", "mix"]


def test_defaults_leave_the_audio_dry():
    x = torch.randn(1, 1, 800)
    torch.testing.assert_close(FeedbackDelay(SR)(x), x)
    torch.testing.assert_close(FDNReverb(SR)(x), x)


def test_fdn_reverb_calls_the_functional_op_and_goes_stereo():
    effect = FDNReverb(SR, n_lines=4, n_bands=3, output_channels=2)
    x = torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(2))
    params = torch.rand(2, effect.parameter_size(), generator=torch.Generator().manual_seed(3))
    p = effect.denormalize(params)
    rt60 = torch.stack([p["band0_rt60_s"], p["band1_rt60_s"], p["band2_rt60_s"]], dim=1)
    expected = F.fdn_reverb(x, SR, rt60, p["mix"], delays=effect.delays, output_channels=2)
    y = effect(x, params)
    assert y.shape == (2, 2, 3000)
    torch.testing.assert_close(y, expected)


def test_stereo_fdn_refuses_more_than_two_channels():
    with pytest.raises(ValueError, match="mono or stereo"):
        FDNReverb(SR, output_channels=2)(torch.zeros(1, 3, 100))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_bands=4), "n_bands"),
    (dict(output_channels=3), "output_channels"),
    (dict(mixing="random"), "mixing"),
    (dict(n_lines=6, mixing="hadamard"), "hadamard"),
    (dict(param_ranges={"band0_rt60_s": (0.01, 2.0)}), "band0_rt60_s"),
])  # fmt: skip
def test_fdn_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FDNReverb(SR, **kwargs)


def test_feedback_range_beyond_the_op_is_refused():
    with pytest.raises(ValueError, match="feedback"):
        FeedbackDelay(SR, param_ranges={"feedback": (0.0, 1.0)})


def test_gradients_reach_every_parameter_through_a_chain():
    chain = EffectChain([Gain(SR), FeedbackDelay(SR), FDNReverb(SR, n_lines=4, n_bands=2)])
    x = torch.randn(2, 1, 2000, generator=torch.Generator().manual_seed(4))
    params = torch.rand(2, chain.parameter_size(), generator=torch.Generator().manual_seed(5))
    params = params.clamp(0.05, 0.95).requires_grad_()
    chain(x, params).square().mean().backward()
    assert torch.isfinite(params.grad).all()
    assert (params.grad.abs().sum(0) > 0).all()
