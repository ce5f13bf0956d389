"""Every effect module: equals its functional op in physical units, and stays finite at the
ends of every normalized range for silence and full-scale input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch

from diffx import functional as F
from diffx.effects import processors as P

SR = 44100.0

EFFECTS = {
    "gain": lambda: P.Gain(SR),
    "delay": lambda: P.Delay(SR),
    "eq": lambda: P.ParametricEQ(SR),
    "distortion": lambda: P.Distortion(SR),
    "distortion_adaa": lambda: P.Distortion(SR, kind="soft_clip", antialiasing="adaa1"),
    "reverb": lambda: P.NoiseReverb(SR, n_bands=4, length_s=0.05),
    "allpass": lambda: P.AllpassCascade(SR, "mixed", n_second=2, n_first=1),
    "allpass_warped_stretched": lambda: P.AllpassCascade(SR, "warped_stretched", 1, 2),
    "compressor": lambda: P.Compressor(SR),
}


@pytest.mark.parametrize("name", sorted(EFFECTS))
@pytest.mark.parametrize("signal", ["silence", "full_scale"])
def test_finite_output_and_gradients_at_range_ends(name, signal):
    effect = EFFECTS[name]()
    n = effect.parameter_size()
    g = torch.Generator().manual_seed(0)
    x = (
        torch.zeros(1, 1, 1500)
        if signal == "silence"
        else torch.sign(torch.randn(1, 1, 1500, generator=g))
    )
    # All-zeros, all-ones and a few random corners of the normalized cube.
    corners = [torch.zeros(n), torch.ones(n)] + [
        torch.randint(0, 2, (n,), generator=g).float() for _ in range(3)
    ]
    for corner in corners:
        params = corner[None].clone().requires_grad_()
        xg = x.clone().requires_grad_()
        y = effect(xg, params)
        assert torch.isfinite(y).all(), (name, corner)
        y.square().mean().backward()
        assert torch.isfinite(params.grad).all(), (name, corner)
        assert torch.isfinite(xg.grad).all(), (name, corner)


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_rejects_bad_audio_and_parameters(name):
    effect = EFFECTS[name]()
    x = torch.randn(2, 1, 256)
    params = effect.sample_parameters(2)
    with pytest.raises(ValueError, match="x contains"):
        effect(x * float("nan"), params)
    with pytest.raises(ValueError, match="must lie in"):
        effect(x, params - 2.0)
    with pytest.raises(ValueError, match="shaped"):
        effect(x[0], params)


def test_gain_module_matches_decibels():
    effect = P.Gain(SR)
    x = torch.randn(2, 1, 100, dtype=torch.float64)
    params = torch.tensor([[0.0], [0.75]], dtype=torch.float64)  # -24 dB and +12 dB
    y = effect(x, params)
    torch.testing.assert_close(y[0], x[0] * 10 ** (-24 / 20))
    torch.testing.assert_close(y[1], x[1] * 10 ** (12 / 20))


def test_allpass_module_matches_scipy_and_keeps_magnitude():
    effect = P.AllpassCascade(SR, "mixed", n_second=3, n_first=1)
    params = effect.sample_parameters(2, generator=torch.Generator().manual_seed(3)).double()
    x = torch.randn(2, 1, 3000, dtype=torch.float64)
    y = effect(x, params)
    sos = effect.sos(params).numpy()
    for b in range(2):
        ref = scipy.signal.sosfilt(sos[b] / sos[b][:, 3:4], x[b, 0].numpy())
        np.testing.assert_allclose(y[b, 0].numpy(), ref, atol=1e-9)
        _, h = scipy.signal.sosfreqz(sos[b] / sos[b][:, 3:4], worN=256)
        np.testing.assert_allclose(np.abs(h), 1.0, atol=1e-9)


def test_distortion_module_matches_functional():
    effect = P.Distortion(SR)
    params = torch.tensor([[0.5, 1.0]], dtype=torch.float64)  # drive 18 dB, output 6 dB
    x = torch.randn(1, 1, 200, dtype=torch.float64)
    expected = torch.tanh(x * 10 ** (18 / 20)) * 10 ** (6 / 20)
    torch.testing.assert_close(effect(x, params), expected)


def test_reverb_module_mix_zero_is_dry():
    effect = P.NoiseReverb(SR, n_bands=3, length_s=0.1)
    params = effect.sample_parameters(2)
    params[:, -1] = 0.0  # mix
    x = torch.randn(2, 1, 500)
    torch.testing.assert_close(effect(x, params), x)


def test_delay_module_integer_delay_is_a_shift():
    effect = P.Delay(SR)
    delay_ms = 10 * 1000 / SR  # ten samples
    params = effect.param_specs[0].normalize(delay_ms).view(1, 1).double()
    x = torch.randn(1, 1, 300, dtype=torch.float64)
    y = effect(x, params)
    torch.testing.assert_close(y[..., 10:], x[..., :-10], atol=1e-9, rtol=0)


def test_every_module_accepts_its_own_sampled_parameters_in_a_chain():
    from diffx.effects.base import EffectChain

    chain = EffectChain([EFFECTS[name]() for name in ("eq", "compressor", "distortion", "reverb")])
    x = torch.randn(3, 2, 2000)
    for params in itertools.islice(iter(lambda: chain.sample_parameters(3), None), 3):
        assert torch.isfinite(chain(x, params)).all()
    assert F.parametric_eq is not None


def test_compressor_link_none_compresses_each_channel_alone_and_mean_links_them():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 4096, generator=g, dtype=torch.float64)
    x[:, 1] *= 0.05  # a quiet right channel: linked, it is compressed by the loud left
    params = torch.rand(2, 6, generator=g, dtype=torch.float64)
    unlinked = P.Compressor(SR, link="none")(x, params)
    each = torch.cat([P.Compressor(SR)(x[:, c : c + 1], params) for c in range(2)], dim=1)
    torch.testing.assert_close(unlinked, each, rtol=1e-12, atol=1e-14)
    linked = P.Compressor(SR)(x, params)
    physical = P.Compressor(SR).denormalize(params)
    torch.testing.assert_close(linked, F.compressor(x, SR, **physical), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="link"):
        P.Compressor(SR, link="left")
