"""BiasNet: parameter ranges, SIREN initialization, and its responses against scipy."""

import math

import numpy as np
import pytest
import scipy.signal
import torch

from diffx.functional import allpass_cascade
from diffx.nn import BiasNet, SineMLP

SR = 44100


def test_sine_mlp_matches_the_reference_layer_from_a_zero_input():
    # The stored input bias is what Linear(input_size, h) gives a zero input: its bias.
    torch.manual_seed(0)
    net = SineMLP(3, hidden_sizes=(16, 8), input_size=32, omega_0=30.0)
    reference = torch.nn.Linear(32, 16)
    with torch.no_grad():
        reference.bias.copy_(net.input_bias)
    h = torch.sin(30.0 * reference(torch.zeros(32)))
    h = torch.sin(30.0 * net.hidden[0](h))
    expected = torch.tanh(net.out(h))
    torch.testing.assert_close(net(), expected)
    # The bias spread is PyTorch's Linear default for that fan-in.
    assert float(net.input_bias.detach().abs().max()) <= 1 / math.sqrt(32)


def test_siren_initialization_bounds():
    torch.manual_seed(0)
    net = SineMLP(2, hidden_sizes=(512, 256, 128), omega_0=30.0)
    for layer in [*net.hidden, net.out]:
        bound = math.sqrt(6 / layer.in_features) / 30.0
        w = layer.weight.detach()
        assert float(w.abs().max()) <= bound
        # Uniform on [-b, b] has standard deviation b / sqrt(3).
        assert abs(float(w.std()) - bound / math.sqrt(3)) < 0.05 * bound


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_parameters_stay_in_range_at_extreme_outputs(scale):
    net = BiasNet(SR, "warped", n_second=3, n_first=2, freq_scale=scale,
                  hidden_sizes=(8,))  # fmt: skip
    for sign in (-1.0, 1.0):
        with torch.no_grad():
            for sub in [*net.second, *net.first]:
                sub.out.weight.zero_()
                sub.out.bias.fill_(sign * 50.0)  # tanh saturates to +-1
        p = net()
        assert p["pole_radius"].shape == (1, 3) and p["first_order_coeff"].shape == (1, 2)
        assert p["warp"].shape == (1, 5)
        assert float(p["pole_radius"].min()) >= 0 and float(p["pole_radius"].max()) < 1
        f = p["freq_hz"]
        expected = net.max_freq_hz if sign > 0 else net.min_freq_hz
        torch.testing.assert_close(f, torch.full_like(f, expected), rtol=1e-9, atol=1e-6)
        assert float(p["first_order_coeff"].abs().max()) < 1
        assert float(p["warp"].abs().max()) < 1


def test_initial_frequencies_are_where_asked():
    net = BiasNet(SR, n_second=3, init_freq_hz=[200.0, 1000.0, 5000.0], init_pole_radius=0.7)
    p = net()
    # The random part of the output layer moves them only slightly.
    ratios = p["freq_hz"][0].detach() / torch.tensor([200.0, 1000.0, 5000.0], dtype=torch.float64)
    assert float((ratios.log().abs()).max()) < math.log(1.5)
    assert float((p["pole_radius"] - 0.7).abs().max()) < 0.1


def test_filter_sos_and_responses_agree_with_scipy():
    torch.manual_seed(1)
    net = BiasNet(SR, "warped_stretched", n_second=2, n_first=1, hidden_sizes=(16, 8))
    x = torch.randn(2, 1, 3000, dtype=torch.float64)
    y = net.filter(x)
    sos = net.sos().numpy()
    expected = scipy.signal.sosfilt(sos, x.numpy(), axis=-1)
    np.testing.assert_allclose(y.detach().numpy(), expected, atol=1e-9)
    # The same filter through the functional API.
    p = {k: v.detach() for k, v in net().items()}
    torch.testing.assert_close(y.detach(), allpass_cascade(x, SR, "warped_stretched", **p))
    freqs = np.linspace(30, 18000, 200)
    _, h = scipy.signal.sosfreqz(sos, worN=freqs, fs=SR)
    phase = net.phase_response(torch.tensor(freqs)).detach().numpy()
    wrapped = np.angle(np.exp(1j * (phase - np.angle(h))))
    assert np.abs(wrapped).max() < 1e-8
    w = 2 * np.pi * freqs / SR
    numeric = -np.gradient(np.unwrap(np.angle(h)), w)
    delay = net.group_delay(torch.tensor(freqs)).detach().numpy()
    assert np.abs(delay - numeric).max() < 0.05 * np.abs(numeric).max() + 0.05


def test_gradients_reach_every_network():
    net = BiasNet(SR, "mixed", n_second=2, n_first=1, hidden_sizes=(16, 8))
    loss = net.phase_response(torch.linspace(50, 10000, 64)).square().mean()
    loss.backward()
    for sub in [*net.second, *net.first]:
        assert sub.input_bias.grad is not None and float(sub.input_bias.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="nope"), "kind must be one of"),
        (dict(kind="second_order", n_second=0), "needs n_second"),
        (dict(kind="first_order", n_second=2), "no second-order"),
        (dict(kind="second_order", stretch=3), "stretch applies"),
        (dict(min_freq_hz=5000, max_freq_hz=100), "min_freq_hz < max_freq_hz"),
        (dict(freq_scale="mel"), "freq_scale"),
        (dict(max_pole_radius=1.0), "max_pole_radius"),
        (dict(init_freq_hz=[100.0]), "one frequency per second-order section"),
    ],
)
def test_bad_configuration_is_named(kwargs, message):
    args = dict(sample_rate=SR, n_second=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        BiasNet(**args)


def test_saturated_outputs_give_finite_audio_and_gradients():
    # Every tanh pinned at +-1: R, |a| and |a_w| at their bounds just below 1, f_c at the ends.
    net = BiasNet(SR, "warped_stretched", n_second=2, n_first=1, hidden_sizes=(8,))
    with torch.no_grad():
        for i, sub in enumerate([*net.second, *net.first]):
            sub.out.bias.fill_(50.0 if i % 2 else -50.0)
    x = torch.randn(1, 1, 4000, dtype=torch.float64)
    y = net.filter(x)
    assert torch.isfinite(y).all()
    loss = y.square().mean() + net.phase_response(torch.linspace(20, 20000, 50)).square().mean()
    loss.backward()
    for p in net.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    # Silence in, silence out.
    assert float(net.filter(torch.zeros(1, 1, 1000, dtype=torch.float64)).abs().max()) == 0.0


def test_set_sections_produces_them_and_unused_sections_are_delays():
    net = BiasNet(SR, "mixed", n_second=3, n_first=2, hidden_sizes=(32, 16))
    net.set_sections([0.9, 0.5], [300.0, 5000.0], [-0.7])
    with torch.no_grad():
        p = net()
    np.testing.assert_allclose(p["pole_radius"][0, :2].numpy(), [0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(p["freq_hz"][0, :2].numpy(), [300.0, 5000.0], rtol=1e-6)
    assert float(p["first_order_coeff"][0, 0]) == pytest.approx(-0.7, rel=1e-6)
    # unused: radius 0 (z^-2) and coefficient 0 (z^-1): together 3 samples of pure delay
    sos = net.sos().numpy()
    freqs = np.linspace(100, 10000, 50)
    _, h_all = scipy.signal.sosfreqz(sos, worN=freqs, fs=SR)
    used = np.concatenate([sos[:2], sos[3:4]])
    _, h_used = scipy.signal.sosfreqz(used, worN=freqs, fs=SR)
    delay = np.exp(-2j * np.pi * freqs / SR * 3)
    np.testing.assert_allclose(h_all, h_used * delay, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit a cascade"):
        net.set_sections([0.5] * 4, [100.0] * 4)
    with pytest.raises(ValueError, match="pole_radius has 1 values and freq_hz 2"):
        net.set_sections([0.5], [100.0, 200.0])
