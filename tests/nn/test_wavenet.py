"""Tests for diffx.nn.wavenet against an explicit per-sample NumPy evaluation of NAM's WaveNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffx.nn.wavenet import LayerArrayConfig, WaveNet, standard_config

# Two arrays with different kernels, uneven dilations, a gated array, a head bias and a head
# kernel > 1: small enough for gradcheck and the NumPy oracle, yet exercising every path.
TINY = [
    dict(
        input_size=1,
        condition_size=1,
        channels=3,
        head_size=2,
        kernel_size=2,
        dilations=(1, 3),
        activation="Tanh",
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
        head_kernel_size=2,
    ),
]


def tiny_model(dtype=torch.float64, seed=0) -> WaveNet:
    torch.manual_seed(seed)
    model = WaveNet(TINY, head_scale=0.7).to(dtype)
    # Biases default to small values; make every parameter matter in the comparisons.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.6)
    return model


def _act(name, z):
    return {"Tanh": np.tanh, "ReLU": lambda v: np.maximum(v, 0.0)}[name](z)


def numpy_reference(model: WaveNet, x: np.ndarray) -> np.ndarray:
    """Per-sample evaluation of the architecture description, with the input preceded by zeros.

    x: (samples,) mono signal; returns (samples,). Signals are dicts of time index -> vector and
    taps are read explicitly as s[t - (K - 1 - k) * d], so nothing is shared with the torch code.
    """
    rf = model.receptive_field
    n = len(x)
    u = np.concatenate([np.zeros(rf - 1), x])
    cond = {t: u[t : t + 1] for t in range(len(u))}
    y = dict(cond)
    carried = None  # previous array's head output, summed into this array's head terms
    for cfg, array in zip(model.layer_configs, model.arrays):
        w_re = array.rechannel.weight.detach().numpy()[:, :, 0]
        h = {t: w_re @ v for t, v in y.items()}
        acc = carried
        for layer, k_size, dil, act in zip(
            array.layers, cfg.kernel_sizes, cfg.dilations, cfg.activations
        ):
            w = layer.conv.weight.detach().numpy()
            b = layer.conv.bias.detach().numpy()
            m = layer.input_mixer.weight.detach().numpy()[:, :, 0]
            w1 = layer.layer1x1.weight.detach().numpy()[:, :, 0]
            b1 = layer.layer1x1.bias.detach().numpy()
            new_h, new_acc = {}, {}
            for t in range(min(h) + (k_size - 1) * dil, len(u)):
                z = b + m @ cond[t]
                for k in range(k_size):
                    z = z + w[:, :, k] @ h[t - (k_size - 1 - k) * dil]
                if cfg.gated:
                    c = cfg.channels
                    a = _act(act, z[:c]) / (1.0 + np.exp(-z[c:]))
                else:
                    a = _act(act, z)
                new_h[t] = h[t] + w1 @ a + b1
                new_acc[t] = a if acc is None else acc[t] + a
            h, acc = new_h, new_acc
        wh = array.head_rechannel.weight.detach().numpy()
        bh = array.head_rechannel.bias
        bh = 0.0 if bh is None else bh.detach().numpy()
        kh = cfg.head_kernel_size
        carried = {
            t: bh + sum(wh[:, :, k] @ acc[t - (kh - 1 - k)] for k in range(kh))
            for t in range(min(acc) + kh - 1, len(u))
        }
        y = {t: h[t] for t in carried}
    return model.head_scale * np.array([carried[t][0] for t in range(len(u) - n, len(u))])


def test_receptive_field_analytic():
    # Each array adds sum((kernel - 1) * dilation) + (head kernel - 1); the network adds 1.
    dil = [2**i for i in range(10)]
    expected_standard = 1 + 2 * sum((3 - 1) * d for d in dil)
    assert expected_standard == 4093
    assert WaveNet(standard_config()).receptive_field == expected_standard
    expected_tiny = 1 + ((2 - 1) * 1 + (2 - 1) * 3) + ((3 - 1) * 2 + (2 - 1) * 1 + (2 - 1))
    assert tiny_model().receptive_field == expected_tiny


def test_standard_parameter_count():
    # Per array: rechannel C*In; per layer conv C*C*3 + C, mixer C, 1x1 C*C + C; head H*C (+H).
    def array_count(inp, c, head, bias):
        return c * inp + 10 * (c * c * 3 + c + c + c * c + c) + head * c + (head if bias else 0)

    expected = array_count(1, 16, 8, False) + array_count(16, 8, 1, True)
    model = WaveNet()
    assert sum(p.numel() for p in model.parameters()) == expected
    # NAM's published standard models hold 13802 weights including head_scale.
    assert model.num_nam_weights() == expected + 1 == 13802
    assert model.head_scale == 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_reference(seed):
    model = tiny_model(seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, 40)
    expected = numpy_reference(model, x)
    y = model(torch.from_numpy(x).view(1, 1, -1))
    np.testing.assert_allclose(y[0, 0].detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_shape_and_dtype(dtype):
    model = WaveNet().to(dtype)
    x = torch.rand(3, 1, 257, dtype=dtype) * 2 - 1
    y = model(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()


def test_causality_and_receptive_field():
    model = tiny_model()
    rf = model.receptive_field
    x = torch.rand(1, 1, 60, dtype=torch.float64) * 2 - 1
    n0 = 20
    x2 = x.clone()
    x2[..., n0] += 0.5
    diff = (model(x2) - model(x)).abs()[0, 0]
    assert diff[:n0].max() == 0  # nothing before the perturbation changes
    assert diff[n0 + rf :].max() == 0  # nor anything a receptive field or more later
    assert diff[n0] > 0 and diff[n0 + rf - 1] > 0  # both ends of the window are reached


@pytest.mark.parametrize("blocks", [[1] * 30, [7, 1, 13, 2, 9], [30]])
def test_streaming_equals_whole_signal(blocks):
    model = tiny_model()
    x = torch.rand(2, 1, sum(blocks), dtype=torch.float64) * 2 - 1
    whole = model(x)
    state, outs, i = None, [], 0
    for b in blocks:
        y, state = model.process_block(x[..., i : i + b], state)
        outs.append(y)
        i += b
    assert state.samples_seen == x.shape[-1]
    assert state.history.shape == (2, 1, model.receptive_field - 1)
    torch.testing.assert_close(torch.cat(outs, dim=-1), whole, rtol=0, atol=1e-13)


def test_streaming_standard_float32():
    model = WaveNet()
    x = torch.rand(1, 1, 5000) * 2 - 1
    whole = model(x)
    state, outs = None, []
    for chunk in x.split(1024, dim=-1):
        y, state = model.process_block(chunk, state)
        outs.append(y)
    torch.testing.assert_close(torch.cat(outs, dim=-1), whole, rtol=1e-5, atol=1e-6)


def test_gradcheck():
    model = tiny_model()
    x = (torch.rand(1, 1, 16, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(model, (x,))
    assert torch.autograd.gradgradcheck(model, (x,))
    params = dict(model.named_parameters())
    w = params["arrays.1.layers.0.conv.weight"].detach().clone().requires_grad_()

    def f(weight):
        return torch.func.functional_call(
            model, {**params, "arrays.1.layers.0.conv.weight": weight}, (x.detach(),)
        )

    assert torch.autograd.gradcheck(f, (w,))


def test_silence_finite_output_and_gradients():
    model = WaveNet()
    x = torch.zeros(1, 1, 64, requires_grad=True)
    y = model(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    # The last array's last 1x1 feeds only the residual path, which NAM discards (its weights
    # are still exported); every other parameter gets a finite gradient.
    unused = {"arrays.1.layers.9.layer1x1.weight", "arrays.1.layers.9.layer1x1.bias"}
    for name, p in model.named_parameters():
        if name in unused:
            assert p.grad is None
        else:
            assert torch.isfinite(p.grad).all(), name


def test_export_import_roundtrip():
    a, b = tiny_model(seed=0), tiny_model(seed=1)
    b.import_weights(a.export_weights())
    assert b.head_scale == a.head_scale
    x = torch.rand(1, 1, 30, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_import_weights_wrong_count():
    model = tiny_model()
    w = model.export_weights()
    with pytest.raises(ValueError, match=f"{w.numel() - 1} values.*expects {w.numel()}"):
        model.import_weights(w[:-1])


def test_config_rebuilds_model():
    model = tiny_model()
    clone = WaveNet(**model.config()).to(torch.float64)
    assert clone.layer_configs == model.layer_configs
    assert clone.receptive_field == model.receptive_field


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.full((1, 1, 8), float("nan")), "x contains"),
        (torch.zeros(1, 2, 8), "1 channel"),
        (torch.zeros(1, 8), "shaped"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(ValueError, match=match):
        WaveNet()(x)


def test_bad_state():
    model = tiny_model()
    _, state = model.process_block(torch.zeros(2, 1, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="state"):
        model.process_block(torch.zeros(3, 1, 4, dtype=torch.float64), state)


@pytest.mark.parametrize(
    "layers, match",
    [
        ([dict(TINY[0], head_size=5), TINY[1]], "head_size"),
        ([TINY[0], dict(TINY[1], input_size=4)], "input_size"),
        ([dict(TINY[0], activation="Nope"), TINY[1]], "unknown activation"),
        ([dict(TINY[0], dilations=())], "dilations"),
        ([dict(TINY[0], kernel_size=(2, 2, 2))], "kernel_size"),
        ([dict(TINY[0], channels=0)], "channels"),
        ([], "at least one"),
    ],
)
def test_bad_config(layers, match):
    with pytest.raises(ValueError, match=match):
        WaveNet(layers)


def test_layer_array_config_normalises_uniform_lists():
    cfg = LayerArrayConfig(
        1, 1, 2, 1, kernel_size=(3, 3), dilations=(1, 2), activation=("Tanh",) * 2
    )
    assert cfg.kernel_size == 3 and cfg.activation == "Tanh"
