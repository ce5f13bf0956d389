"""Tests for the Expander, NoiseGate and Limiter effects: the op they wrap, their ranges,
links, gradients through normalized parameters, and construction from YAML-like configs."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.autograd import gradcheck

from diffx import functional as F
from diffx.effects import Compressor, EffectChain, Expander, Limiter, NoiseGate
from diffx.functional import dynamics, gates

SR = 16000


def _x(channels=2, samples=800, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    env = torch.linspace(0.0, 1.0, samples, dtype=torch.float64) ** 4
    x = torch.randn(2, channels, samples, generator=gen, dtype=torch.float64) * env
    return x.to(dtype)


@pytest.mark.parametrize(
    "effect, fn, extra",
    [(Expander(SR, link="max"), F.expander, {"link": "max"}),
     (NoiseGate(SR, link="none"), F.noise_gate, {"link": "none"}),
     (Limiter(SR, lookahead_ms=2.0), F.limiter, {"link": "max", "lookahead_ms": 2.0})],
)  # fmt: skip
def test_effect_is_its_functional_op(effect, fn, extra):
    x = _x()
    params = effect.sample_parameters(2, torch.Generator().manual_seed(1))
    physical = effect.denormalize(params)
    torch.testing.assert_close(effect(x, params), fn(x, SR, **physical, **extra))


def test_specs_match_the_ops_limits():
    specs = {s.name: s for e in (Expander(SR), NoiseGate(SR), Limiter(SR)) for s in e.param_specs}
    assert specs["ratio"].limits == gates.EXPANDER_RATIO_RANGE
    assert specs["hold_ms"].limits == gates.HOLD_RANGE_MS and specs["hold_ms"].scale == "log"
    assert specs["range_db"].limits == gates.RANGE_RANGE_DB
    assert specs["threshold_db"].limits == dynamics.THRESHOLD_RANGE_DB
    for name in ("attack_ms", "release_ms"):
        assert specs[name].limits == dynamics.TIME_RANGE_MS and specs[name].scale == "log"


def test_links_and_lookahead_are_checked():
    assert Expander(SR).link == "mean" and NoiseGate(SR).link == "mean"
    assert Limiter(SR).link == "max"
    with pytest.raises(ValueError, match="link"):
        Expander(SR, link="sum")
    with pytest.raises(ValueError, match="lookahead_ms"):
        Limiter(SR, lookahead_ms=2000.0)
    assert Limiter(SR, lookahead_ms=5.0).latency == 80


def test_limiter_effect_keeps_every_channel_under_the_ceiling():
    x = 4 * _x(channels=2, samples=4000, seed=3)
    effect = Limiter(SR, lookahead_ms=1.0, param_ranges={"threshold_db": (-12.0, -3.0)})
    params = effect.sample_parameters(2, torch.Generator().manual_seed(2))
    physical = effect.denormalize(params)
    ceiling = physical["threshold_db"] + physical["makeup_gain_db"]
    y = effect(x, params)
    peak_db = 20 * torch.log10(y.abs().amax(dim=(1, 2)))
    assert bool((peak_db <= ceiling + 1e-4).all())


@pytest.mark.parametrize("effect", [Expander(SR), NoiseGate(SR), Limiter(SR, lookahead_ms=0.5)],
                         ids=lambda e: type(e).__name__)  # fmt: skip
def test_gradients_through_normalized_parameters(effect):
    gen = torch.Generator().manual_seed(4)
    x = (0.3 * torch.randn(2, 2, 24, generator=gen, dtype=torch.float64)).requires_grad_()
    params = effect.sample_parameters(2, torch.Generator().manual_seed(5), dtype=torch.float64)
    params = (0.05 + 0.9 * params).requires_grad_()  # away from the clipped range ends
    assert gradcheck(effect, (x, params))


def test_hold_gets_no_gradient_the_others_do():
    effect = NoiseGate(SR)
    x = _x(samples=2000, seed=6)
    params = effect.default_parameters(2).clone().requires_grad_()
    effect(x, params).square().sum().backward()
    grads = dict(zip(effect.param_names, params.grad.abs().sum(0)))
    assert grads["hold_ms"] == 0
    assert grads["threshold_db"] > 0 and grads["release_ms"] > 0


def test_built_from_a_config_like_the_yaml_ones():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--chain", type=nn.Module)
    config = {"chain": {"class_path": "diffx.effects.EffectChain", "init_args": {"effects": [
        {"class_path": "diffx.effects.NoiseGate",
         "init_args": {"sample_rate": SR, "link": "max",
                       "param_ranges": {"hold_ms": [5.0, 50.0, 10.0]}}},
        {"class_path": "diffx.effects.Expander", "init_args": {"sample_rate": SR}},
        {"class_path": "diffx.effects.Limiter",
         "init_args": {"sample_rate": SR, "lookahead_ms": 3.0}},
    ]}}}  # fmt: skip
    chain = parser.instantiate(parser.parse_object(config)).chain
    assert isinstance(chain, EffectChain)
    gate, expander, limiter = chain.effects
    assert isinstance(gate, NoiseGate) and gate.link == "max"
    assert gate.param_specs[2].maximum == 50.0
    assert isinstance(expander, Expander)
    assert isinstance(limiter, Limiter) and limiter.lookahead_ms == 3.0
    y = chain(_x())
    assert y.shape == (2, 2, 800) and bool(torch.isfinite(y).all())


def test_in_a_chain_with_the_compressor():
    chain = EffectChain([NoiseGate(SR), Compressor(SR), Limiter(SR)])
    x = _x(samples=1500, seed=7)
    params = chain.sample_parameters(2, torch.Generator().manual_seed(8)).requires_grad_()
    chain(x, params).square().sum().backward()
    assert bool(torch.isfinite(params.grad).all()) and bool((params.grad != 0).any())
