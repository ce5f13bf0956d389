"""Tests for diffx.nn.oversample: delay-line RNNs and dilated WaveNets at L times the rate.

Oracles: the base-rate model itself on the kept samples (an exact identity of both methods), an
explicit per-sample NumPy recurrence h[n] = f(x[n], h[n - L]) for the delay-line LSTM, the
polyphase identity for the dilated WaveNet, and the linearised response H(z^L) (the same gain
and phase in Hz at both rates) for small sines.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffx.nn.lstm import LSTMAmp
from diffx.nn.oversample import DelayLineRNN, Oversampled, adapt_to_rate, dilate_wavenet
from diffx.nn.wavenet import WaveNet

# Two arrays, uneven dilations, a gated array and a head bias; head kernels of 1 (NAM presets).
TINY_WAVENET = [
    dict(
        input_size=1,
        condition_size=1,
        channels=3,
        head_size=2,
        kernel_size=2,
        dilations=(1, 3),
        gated=True,
    ),
    dict(
        input_size=3,
        condition_size=1,
        channels=2,
        head_size=1,
        kernel_size=(3, 2),
        dilations=(2, 1),
        activation=("ReLU", "Tanh"),
        head_bias=True,
    ),
]


def tiny_wavenet(dtype=torch.float64, seed=0, scale=0.6) -> WaveNet:
    torch.manual_seed(seed)
    model = WaveNet(TINY_WAVENET, head_scale=0.7, sample_rate=8000).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * scale)
    return model


def tiny_rnn(unit_type="LSTM", dtype=torch.float64, seed=0, hidden=5) -> LSTMAmp:
    torch.manual_seed(seed)
    model = LSTMAmp(hidden_size=hidden, unit_type=unit_type, sample_rate=8000).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


def kept_sample_input(x: torch.Tensor, factor: int, seed: int = 1) -> torch.Tensor:
    """A signal at factor x the rate whose every factor-th sample is x; the rest random."""
    gen = torch.Generator().manual_seed(seed)
    B, C, T = x.shape
    up = torch.randn(B, C, T * factor, generator=gen, dtype=x.dtype)
    up[..., ::factor] = x
    return up


@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("unit_type", ["LSTM", "GRU", "RNN"])
def test_delay_line_keeps_base_rate_output_on_kept_samples(factor, unit_type):
    model = tiny_rnn(unit_type)
    x = torch.randn(2, 1, 40, dtype=torch.float64)
    y = DelayLineRNN(model, factor)(kept_sample_input(x, factor))
    torch.testing.assert_close(y[..., ::factor], model(x), rtol=0, atol=1e-13)


def _numpy_delay_line_lstm(model: LSTMAmp, x: np.ndarray, factor: int) -> np.ndarray:
    """Per-sample h[n], c[n] = LSTM(x[n], h[n - L], c[n - L]); y = W h + b + x (zero past)."""
    H = model.hidden_size
    w_ih = model.rec.weight_ih_l0.detach().numpy()
    w_hh = model.rec.weight_hh_l0.detach().numpy()
    b = (model.rec.bias_ih_l0 + model.rec.bias_hh_l0).detach().numpy()
    w_out = model.lin.weight.detach().numpy()[0]
    b_out = float(model.lin.bias.detach()[0])
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    hs, cs, y = {}, {}, np.zeros_like(x)
    for n, u in enumerate(x):
        h_prev = hs.get(n - factor, np.zeros(H))
        c_prev = cs.get(n - factor, np.zeros(H))
        z = w_ih[:, 0] * u + w_hh @ h_prev + b
        i, f, g, o = sig(z[:H]), sig(z[H : 2 * H]), np.tanh(z[2 * H : 3 * H]), sig(z[3 * H :])
        cs[n] = f * c_prev + i * g
        hs[n] = o * np.tanh(cs[n])
        y[n] = w_out @ hs[n] + b_out + u
    return y


@pytest.mark.parametrize("length", [30, 31, 32])  # multiple of 3 and not: internal padding
def test_delay_line_lstm_matches_explicit_recurrence(length):
    model = tiny_rnn("LSTM")
    x = torch.randn(1, 1, length, dtype=torch.float64)
    y = DelayLineRNN(model, 3)(x)
    expected = _numpy_delay_line_lstm(model, x[0, 0].numpy(), 3)
    np.testing.assert_allclose(y[0, 0].detach().numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3])
def test_dilated_wavenet_keeps_base_rate_output_on_kept_samples(factor):
    model = tiny_wavenet()
    x = torch.randn(2, 1, 60, dtype=torch.float64)
    y = dilate_wavenet(model, factor)(kept_sample_input(x, factor))
    torch.testing.assert_close(y[..., ::factor], model(x), rtol=0, atol=1e-12)


def test_dilated_wavenet_acts_on_each_polyphase_component_separately():
    model = tiny_wavenet()
    up = torch.randn(1, 1, 3 * 50, dtype=torch.float64)
    y = dilate_wavenet(model, 3)(up)
    for phase in range(3):
        torch.testing.assert_close(y[..., phase::3], model(up[..., phase::3]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_dilated_receptive_field(factor):
    model = tiny_wavenet()
    dilated = dilate_wavenet(model, factor)
    rf = model.receptive_field
    assert dilated.receptive_field == (rf - 1) * factor + 1
    # Measured: an impulse at sample 0 reaches output (rf - 1) * L and no later sample.
    n = (rf - 1) * factor + 5
    base = torch.randn(1, 1, n, dtype=torch.float64)
    poked = base.clone()
    poked[..., 0] += 1.0
    changed = (dilated(poked) - dilated(base)).abs()[0, 0]
    last = (rf - 1) * factor
    assert changed[last] > 1e-9
    assert torch.all(changed[last + 1 :] == 0)


def test_dilated_wavenet_is_an_independent_copy_with_the_model_settings():
    model = tiny_wavenet(dtype=torch.float32).eval()
    dilated = dilate_wavenet(model, 2)
    assert dilated.sample_rate == 16000
    assert not dilated.training
    assert next(dilated.parameters()).dtype == torch.float32
    assert [c.dilations for c in dilated.layer_configs] == [(2, 6), (4, 2)]
    assert dilated.head_scale == model.head_scale
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    first = next(model.parameters())
    assert not torch.equal(next(dilated.parameters()), first)


def test_delay_line_shares_parameters_and_leaves_stream_state_alone():
    model = tiny_rnn("LSTM", dtype=torch.float32)
    model.stateful = True
    model(torch.randn(3, 1, 10))  # a kept stream state of batch 3
    kept = tuple(s.clone() for s in model.state)
    wrapper = DelayLineRNN(model, 2)
    assert wrapper.sample_rate == 16000
    assert {id(p) for p in wrapper.parameters()} == {id(p) for p in model.parameters()}
    y = wrapper(torch.randn(2, 1, 21))
    assert y.shape == (2, 1, 21) and y.dtype == torch.float32
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.stateful
    for s, k in zip(model.state, kept):
        torch.testing.assert_close(s, k)


def _sine_fit(y: np.ndarray, f_hz: float, sample_rate: float, start_s: float) -> complex:
    """Complex amplitude (gain * e^{j phase}) of the f_hz component by least squares."""
    n = np.arange(len(y))
    keep = n >= int(start_s * sample_rate)
    w = 2 * math.pi * f_hz / sample_rate * n[keep]
    basis = np.stack([np.cos(w), np.sin(w), np.ones_like(w)], axis=1)
    (a, b, _), *_ = np.linalg.lstsq(basis, y[keep], rcond=None)
    return complex(a, -b)


@pytest.mark.parametrize("kind", ["LSTM", "WaveNet"])
def test_small_signal_response_is_the_same_in_hz_at_twice_the_rate(kind):
    # Linearised, the adapted model is H(z^2) at 2 fs: the same gain and phase at f in Hz as
    # the model at fs. Run unadapted at 2 fs, the model would respond as at f / 2 instead.
    model = tiny_rnn() if kind == "LSTM" else tiny_wavenet(scale=0.4)
    fs, f, amp = 8000.0, 1100.0, 1e-4
    resp = {}
    for name, rate, net in (
        ("base", fs, model),
        ("adapted", 2 * fs, adapt_to_rate(model, 2)),
        ("naive", 2 * fs, model),
    ):
        n = torch.arange(int(0.5 * rate), dtype=torch.float64)
        x = amp * torch.sin(2 * math.pi * f / rate * n)[None, None]
        y = net(x)[0, 0].detach().numpy()
        resp[name] = _sine_fit(y, f, rate, start_s=0.1) / amp
    error = abs(resp["adapted"] - resp["base"]) / abs(resp["base"])
    naive_error = abs(resp["naive"] - resp["base"]) / abs(resp["base"])
    assert error < 1e-4
    assert naive_error > 1e-2  # the comparison tells a model at the wrong rate apart


def test_oversampled_lstm_on_a_small_low_sine_reproduces_the_base_rate_response():
    # The full chain (FFT upsample, delay-line LSTM at 2 fs, FFT downsample) is linear in the
    # small signal and H(z^2) matches H(z) below fs / 2, so its response to the sine (its output
    # minus its output for silence, which removes the bias and the start-up transient) is the
    # base model's response.
    model = tiny_rnn()
    fs, f, amp = 8000.0, 250.0, 1e-4
    n = torch.arange(4000, dtype=torch.float64)  # a whole number (125) of periods
    x = amp * torch.sin(2 * math.pi * f / fs * n)[None, None]
    oversampled = Oversampled(adapt_to_rate(model, 2), 2)
    base = model(x) - model(torch.zeros_like(x))
    over = oversampled(x) - oversampled(torch.zeros_like(x))
    # Away from both ends: the FFT resampler treats the output as periodic, and its start-up
    # (zero state) and its end do not join smoothly, which rings near the ends.
    steady = slice(1000, 3000)
    rel = (over[..., steady] - base[..., steady]).abs().max() / base[..., steady].abs().max()
    assert rel < 1e-4


@pytest.mark.parametrize("factor", [0, -1, 1.5, 2.0, True, "2"])
def test_bad_factor(factor):
    with pytest.raises(ValueError, match="factor"):
        DelayLineRNN(tiny_rnn(), factor)
    with pytest.raises(ValueError, match="factor"):
        dilate_wavenet(tiny_wavenet(), factor)


def test_unsupported_models_are_refused():
    with pytest.raises(ValueError, match="LSTMAmp.*WaveNet"):
        adapt_to_rate(torch.nn.Tanh(), 2)
    with pytest.raises(ValueError, match="LSTMAmp"):
        DelayLineRNN(tiny_wavenet(), 2)
    with pytest.raises(ValueError, match="WaveNet"):
        dilate_wavenet(tiny_rnn(), 2)
    with pytest.raises(ValueError, match="input_size=2"):
        adapt_to_rate(LSTMAmp(hidden_size=3, input_size=2), 2)
    conditioned = WaveNet(
        [dict(input_size=2, condition_size=2, channels=2, head_size=1, dilations=(1, 2))]
    )
    with pytest.raises(ValueError, match="audio-only"):
        adapt_to_rate(conditioned, 2)
    head_kernel = WaveNet(
        [dict(input_size=1, condition_size=1, channels=2, head_size=1, head_kernel_size=2)]
    )
    with pytest.raises(ValueError, match="head_kernel_size"):
        adapt_to_rate(head_kernel, 2)


def test_bad_input_audio():
    wrapper = DelayLineRNN(tiny_rnn(), 2)
    with pytest.raises(ValueError, match="1 channel"):
        wrapper(torch.zeros(1, 2, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        wrapper(torch.full((1, 1, 8), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="x"):
        wrapper(torch.zeros(1, 8, dtype=torch.float64))
