"""AutoWah and ModulatedFilter: parameters, their mapping onto the functional ops, configs,
gradients and behaviour."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.autograd import gradcheck

from diffx import functional as F
from diffx.effects import AutoWah, EffectChain, ModulatedFilter, ParametricEQ
from tests.functional.test_varying import spectral_peak_hz

SR = 16000.0


def test_auto_wah_is_its_functional_op_with_denormalized_parameters():
    wah = AutoWah(SR)
    assert wah.param_names == ["min_freq_hz", "max_freq_hz", "sensitivity_db", "q",
                               "attack_ms", "release_ms", "mix"]  # fmt: skip
    x = 0.3 * torch.randn(3, 2, 800, dtype=torch.float64)
    params = wah.sample_parameters(3, torch.Generator().manual_seed(0), dtype=torch.float64)
    physical = wah.denormalize(params)
    torch.testing.assert_close(wah(x, params), F.auto_wah(x, SR, **physical), rtol=0, atol=0)
    assert all(spec.limits is not None for spec in wah.param_specs)
    # The frequency ranges stay below Nyquist at a low rate.
    low_rate = AutoWah(8000.0)
    assert max(spec.maximum for spec in low_rate.param_specs if spec.unit == "Hz") < 4000.0


def test_auto_wah_defaults_sweep_with_the_level():
    wah = AutoWah(SR)
    white = torch.randn(1, 1, 32000, generator=torch.Generator().manual_seed(1))
    quiet, loud = (spectral_peak_hz(wah(white * g)[..., 2000:]) for g in (1e-3, 0.5))
    assert quiet < 450.0 < 1500.0 < loud


@pytest.mark.parametrize("mode", ["lowpass", "bandpass", "highpass"])
def test_modulated_filter_is_its_functional_op(mode):
    effect = ModulatedFilter(SR, mode=mode)
    assert effect.param_names == ["freq_hz", "q", "rate_hz", "depth_octaves"]
    x = 0.3 * torch.randn(2, 1, 600, dtype=torch.float64)
    params = effect.sample_parameters(2, torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = F.modulated_filter(x, SR, mode=mode, **effect.denormalize(params))
    torch.testing.assert_close(effect(x, params), expected, rtol=0, atol=0)
    assert repr(effect).startswith(f"ModulatedFilter(mode={mode!r}")


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="mode"):
        ModulatedFilter(SR, mode="notch")
    with pytest.raises(ValueError, match="freq_hz"):
        ModulatedFilter(SR, param_ranges={"freq_hz": (100.0, SR)})
    with pytest.raises(ValueError, match="depth_octaves"):
        ModulatedFilter(SR, param_ranges={"depth_octaves": (0.0, 20.0)})
    with pytest.raises(ValueError, match="attack_ms"):
        AutoWah(SR, param_ranges={"attack_ms": (0.0, 10.0)})
    with pytest.raises(ValueError, match="sample_rate"):
        AutoWah(-1.0)


def test_normalized_parameters_out_of_range_are_named():
    wah = AutoWah(SR)
    params = wah.default_parameters(1).clone()
    params[0, 3] = 1.5
    with pytest.raises(ValueError, match="'q'"):
        wah(torch.zeros(1, 1, 100), params)


def test_gradients_reach_every_normalized_parameter():
    x = 0.3 * torch.randn(1, 1, 12, dtype=torch.float64, requires_grad=True)
    for effect in (AutoWah(SR), ModulatedFilter(SR, "bandpass")):
        params = effect.sample_parameters(1, torch.Generator().manual_seed(3), dtype=torch.float64)
        params = (0.05 + 0.9 * params).requires_grad_()  # away from the clipped range ends
        assert gradcheck(effect, (x, params))


def test_built_from_a_config_like_the_yaml_ones():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--chain", type=nn.Module)
    config = {"chain": {"class_path": "diffx.effects.EffectChain", "init_args": {"effects": [
        {"class_path": "diffx.effects.AutoWah",
         "init_args": {"sample_rate": SR, "param_ranges": {"q": [1.0, 4.0, 2.0]}}},
        {"class_path": "diffx.effects.ModulatedFilter",
         "init_args": {"sample_rate": SR, "mode": "highpass"}},
    ]}}}  # fmt: skip
    chain = parser.instantiate(parser.parse_object(config)).chain
    assert isinstance(chain, EffectChain)
    wah, lfo = chain.effects
    assert isinstance(wah, AutoWah) and wah.param_specs[3].maximum == 4.0
    assert isinstance(lfo, ModulatedFilter) and lfo.mode == "highpass"
    y = chain(torch.randn(2, 1, 500) * 0.1)
    assert y.shape == (2, 1, 500) and bool(torch.isfinite(y).all())


def test_chains_with_the_existing_effects():
    chain = EffectChain([ParametricEQ(SR, n_bands=1), AutoWah(SR), ModulatedFilter(SR)])
    x = torch.randn(2, 2, 400) * 0.2
    params = chain.sample_parameters(2, torch.Generator().manual_seed(4)).requires_grad_()
    chain(x, params).square().sum().backward()
    assert bool(torch.isfinite(params.grad).all()) and bool((params.grad != 0).any())
