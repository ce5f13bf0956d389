"""ParamSpec mappings, Effect parameter handling and EffectChain composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.effects.base import EffectChain, ParamSpec
from diffx.effects.processors import Gain, ParametricEQ

SR = 44100.0


def test_linear_and_log_mappings_are_analytic_and_invertible():
    lin = ParamSpec("gain_db", -24.0, 24.0, 0.0, "dB")
    log = ParamSpec("freq_hz", 20.0, 20000.0, 1000.0, "Hz", "log")
    u = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(lin.denormalize(u), torch.tensor([-24.0, -12.0, 0.0, 24.0]).double())
    # 0.5 on a log scale is the geometric mean of the ends.
    assert float(log.denormalize(u)[2]) == pytest.approx(math.sqrt(20.0 * 20000.0))
    assert float(log.denormalize(u)[0]) == pytest.approx(20.0)
    assert float(log.denormalize(u)[3]) == pytest.approx(20000.0)
    torch.testing.assert_close(log.normalize(log.denormalize(u)).double(), u)
    torch.testing.assert_close(lin.normalize(lin.denormalize(u)).double(), u)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(minimum=1.0, maximum=0.0, default=0.5), "below maximum"),
        (dict(minimum=0.0, maximum=1.0, default=2.0), "default"),
        (dict(minimum=0.0, maximum=1.0, default=0.5, scale="log"), "log scale"),
        (dict(minimum=0.0, maximum=1.0, default=0.5, scale="cubic"), "scale"),
    ],
)
def test_paramspec_rejects_inconsistent_specs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ParamSpec("p", **kwargs)


def test_out_of_range_normalized_parameter_names_the_parameter():
    eq = ParametricEQ(SR)
    params = eq.default_parameters(2).clone()
    params[1, eq.param_names.index("band2_gain_db")] = 1.2
    with pytest.raises(ValueError, match="'band2_gain_db' must lie in \\[0, 1\\]"):
        eq(torch.randn(2, 1, 64), params)
    params[1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        eq(torch.randn(2, 1, 64), params)


def test_wrong_parameter_shapes():
    eq = ParametricEQ(SR)
    with pytest.raises(ValueError, match=r"params must be shaped \(batch, 18\)"):
        eq(torch.randn(2, 1, 64), torch.rand(2, 17))
    with pytest.raises(ValueError, match="batch size 3 differs from x batch size 2"):
        eq(torch.randn(2, 1, 64), torch.rand(3, 18))


def test_param_ranges_override_and_unknown_key():
    eq = ParametricEQ(SR, param_ranges={"band1_gain_db": (-6, 6)})
    spec = dict(zip(eq.param_names, eq.param_specs))["band1_gain_db"]
    assert (spec.minimum, spec.maximum) == (-6.0, 6.0)
    with pytest.raises(ValueError, match="unknown parameter 'band9_gain_db'"):
        ParametricEQ(SR, param_ranges={"band9_gain_db": (-6, 6)})


def test_eq_default_is_identity_and_random_matches_scipy():
    eq = ParametricEQ(SR)
    x = torch.randn(3, 1, 2000, dtype=torch.float64)
    # Default gains are 0 dB: every section is an identity.
    torch.testing.assert_close(eq(x), x, atol=1e-10, rtol=0)
    params = eq.sample_parameters(3, generator=torch.Generator().manual_seed(0)).double()
    assert ((params >= 0) & (params <= 1)).all()
    y = eq(x, params)
    sos = eq.sos(params).numpy()
    for b in range(3):
        ref = x[b, 0].numpy()
        for section in sos[b]:
            ref = scipy.signal.lfilter(section[:3], section[3:], ref)
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=1e-8)


def test_frequencies_stay_below_nyquist_at_low_sample_rates():
    eq = ParametricEQ(16000.0, n_bands=6)
    for spec in eq.param_specs:
        if spec.unit == "Hz":
            assert spec.maximum < 8000.0
    y = eq(torch.randn(2, 1, 500), torch.ones(2, eq.parameter_size()))
    assert torch.isfinite(y).all()


def test_chain_splits_parameters_and_applies_in_order():
    chain = EffectChain([Gain(SR), ParametricEQ(SR), Gain(SR)])
    assert chain.parameter_size() == 1 + 18 + 1
    assert chain.param_names[0] == "gain.gain_db" and chain.param_names[-1] == "gain2.gain_db"
    x = torch.randn(2, 1, 300, dtype=torch.float64)
    params = chain.sample_parameters(2, generator=torch.Generator().manual_seed(1)).double()
    blocks = chain.split(params)
    expected = x
    for effect, block in zip(chain.effects, blocks):
        expected = effect(expected, block)
    torch.testing.assert_close(chain(x, params), expected)
    physical = chain.denormalize(params)
    gain_total = 10 ** ((physical["gain.gain_db"] + physical["gain2.gain_db"]) / 20)
    eq_only = chain.effects[1](x, blocks[1])
    torch.testing.assert_close(chain(x, params), eq_only * gain_total.view(-1, 1, 1))


def test_chain_gradients_reach_normalized_parameters():
    chain = EffectChain([ParametricEQ(SR), Gain(SR)])
    x = torch.randn(2, 1, 1000)
    params = chain.sample_parameters(2).requires_grad_()
    chain(x, params).square().mean().backward()
    assert torch.isfinite(params.grad).all()
    assert (params.grad.abs() > 0).any()


def test_chain_rejects_mixed_sample_rates_and_non_effects():
    with pytest.raises(ValueError, match="sample_rate"):
        EffectChain([Gain(44100), Gain(48000)])
    with pytest.raises(ValueError, match="Effect modules"):
        EffectChain([torch.nn.Identity()])
