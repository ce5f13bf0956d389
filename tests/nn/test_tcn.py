"""TCN: against a per-sample NumPy evaluation, causality, receptive field, FiLM conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffx.nn import TCN

# Small enough for the NumPy oracle, with an even and an odd tap span (kernel 4: 3 * d).
SMALL = dict(in_channels=2, out_channels=3, n_blocks=3, channels=5, kernel_size=4,
             dilation_growth=3)  # fmt: skip


def small_model(cond_dim=0, causal=True, seed=0, dtype=torch.float64) -> TCN:
    torch.manual_seed(seed)
    model = TCN(**SMALL, cond_dim=cond_dim, causal=causal, cond_hidden=6).to(dtype)
    # Zero biases and equal PReLU slopes at initialization would hide indexing mistakes.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _shift(h: np.ndarray, offset: int) -> np.ndarray:
    """``out[..., t] = h[..., t + offset]``, zero outside the signal."""
    out = np.zeros_like(h)
    T = h.shape[-1]
    lo, hi = max(0, -offset), min(T, T - offset)
    if hi > lo:
        out[..., lo:hi] = h[..., lo + offset : hi + offset]
    return out


def _prelu(z: np.ndarray, slope: np.ndarray) -> np.ndarray:
    return np.where(z >= 0, z, slope * z)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


def numpy_reference(model: TCN, x: np.ndarray, cond: np.ndarray | None) -> np.ndarray:
    """The architecture description evaluated tap by tap. x: (C_in, T); cond: (cond_dim,)."""
    k, growth = model.kernel_size, model.dilation_growth
    film = None
    if cond is not None:
        h = cond
        for layer in model.film:
            if isinstance(layer, torch.nn.Linear):
                h = _np(layer.weight) @ h + _np(layer.bias)
            else:
                h = _prelu(h, _np(layer.weight))
        film = h.reshape(model.n_blocks, 2, model.channels)
    h = x
    for i, block in enumerate(model.blocks):
        d = growth**i
        span = (k - 1) * d
        left = span if model.causal else span // 2
        w = _np(block.conv.weight)
        # Tap j of output t reads input t - left + j * d.
        z = _np(block.conv.bias)[:, None] + sum(
            w[:, :, j] @ _shift(h, j * d - left) for j in range(k)
        )
        if film is not None:
            z = z * (1 + film[i, 0][:, None]) + film[i, 1][:, None]
        res = _np(block.res.weight)[:, :, 0] @ h + _np(block.res.bias)[:, None]
        h = _prelu(z, _np(block.act.weight)[:, None]) + res
    return _np(model.output.weight)[:, :, 0] @ h + _np(model.output.bias)[:, None]


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
@pytest.mark.parametrize("cond_dim", [0, 4])
def test_matches_a_tap_by_tap_numpy_evaluation(causal, cond_dim):
    model = small_model(cond_dim, causal)
    torch.manual_seed(1)
    x = torch.randn(2, 2, 150, dtype=torch.float64)
    cond = torch.rand(2, cond_dim, dtype=torch.float64) if cond_dim else None
    y = model(x, cond).detach().numpy()
    for b in range(2):
        c = None if cond is None else cond[b].numpy()
        np.testing.assert_allclose(y[b], numpy_reference(model, x[b].numpy(), c), atol=1e-10)


def test_default_receptive_field_is_the_papers():
    # 1 + (13 - 1) * (1 + 8 + 64 + 512) samples: about 0.29 s at 24 kHz.
    assert TCN().receptive_field == 7021
    assert TCN().lookahead == 0


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_one_input_sample_changes_exactly_receptive_field_outputs(causal):
    model = small_model(causal=causal)
    spans = [(SMALL["kernel_size"] - 1) * SMALL["dilation_growth"] ** i for i in range(3)]
    assert model.receptive_field == 1 + sum(spans) == 40
    torch.manual_seed(2)
    x = torch.randn(1, 2, 200, dtype=torch.float64)
    t0 = 100
    x2 = x.clone()
    x2[0, 1, t0] += 1.0
    changed = torch.nonzero((model(x2) - model(x)).abs().amax(dim=(0, 1))).flatten()
    # Causal: outputs t0 .. t0 + rf - 1. Centred: input t0 reaches outputs t0 - right .. t0 + left,
    # where left and right are the padding on each side (span // 2 on the left per block).
    left = sum(spans) if causal else sum(s // 2 for s in spans)
    expected = torch.arange(t0 - (sum(spans) - left), t0 + left + 1)
    assert torch.equal(changed, expected)
    assert len(changed) == model.receptive_field
    assert model.lookahead == sum(spans) - left


def test_future_input_leaves_past_output_bit_identical():
    torch.manual_seed(0)
    model = TCN(n_blocks=3, channels=8, kernel_size=5, dilation_growth=4, cond_dim=3)
    x = torch.randn(2, 1, 3000)
    cond = torch.rand(2, 3)
    t0 = 1700
    x2 = x.clone()
    x2[..., t0:] = torch.randn(2, 1, 3000 - t0) * 10
    y, y2 = model(x, cond), model(x2, cond)
    assert torch.equal(y[..., :t0], y2[..., :t0])
    assert not torch.equal(y[..., t0], y2[..., t0])


@pytest.mark.parametrize("T", [1, 2, 13, 257, 4000])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "centred"])
def test_output_is_as_long_as_input(T, causal):
    model = TCN(in_channels=2, out_channels=3, n_blocks=3, channels=4, kernel_size=5,
                causal=causal)  # fmt: skip
    assert model(torch.randn(2, 2, T)).shape == (2, 3, T)


def test_conditioning_changes_output_and_gradients_reach_it():
    model = small_model(cond_dim=4, dtype=torch.float32)
    x = torch.randn(3, 2, 300)
    cond = torch.rand(3, 4, requires_grad=True)
    y = model(x, cond)
    y_other = model(x, torch.rand(3, 4)).detach()
    assert float((y.detach() - y_other).abs().max()) > 1e-2 * float(y.detach().abs().max())
    y.square().mean().backward()
    assert torch.isfinite(cond.grad).all() and bool((cond.grad != 0).all())
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_film_scale_and_shift_fold_into_the_convolution():
    # A FiLM MLP that outputs constants gamma, beta equals an unconditioned TCN whose dilated
    # convolutions have weights * (1 + gamma) and biases * (1 + gamma) + beta.
    conditioned = small_model(cond_dim=3, dtype=torch.float32)
    plain = TCN(**SMALL)
    plain.load_state_dict(
        {k: v for k, v in conditioned.state_dict().items() if not k.startswith("film.")}
    )
    gamma = torch.randn(SMALL["n_blocks"], SMALL["channels"]) * 0.5
    beta = torch.randn(SMALL["n_blocks"], SMALL["channels"])
    with torch.no_grad():
        last = conditioned.film[-1]
        last.weight.zero_()
        last.bias.copy_(torch.stack([gamma, beta], dim=1).flatten())
        for block, g, b in zip(plain.blocks, gamma, beta):
            block.conv.weight.mul_((1 + g)[:, None, None])
            block.conv.bias.mul_(1 + g).add_(b)
    x = torch.randn(2, 2, 400)
    torch.testing.assert_close(conditioned(x, torch.rand(2, 3)), plain(x), atol=1e-5, rtol=1e-5)


def test_each_item_alone_equals_the_batch():
    model = small_model(cond_dim=4, dtype=torch.float32).eval()
    x = torch.randn(4, 2, 500)
    cond = torch.rand(4, 4)
    y = model(x, cond)
    for b in range(4):
        torch.testing.assert_close(model(x[b : b + 1], cond[b : b + 1]), y[b : b + 1])


@pytest.mark.parametrize("config", [dict(), dict(n_blocks=10, dilation_growth=2, channels=16)],
                         ids=["default", "deep"])  # fmt: skip
def test_untrained_network_keeps_unit_variance_input_bounded(config):
    # The initialization keeps each block's mean square: unit-variance noise comes out with a
    # mean square of order one, however deep, and is never silenced.
    for seed in range(3):
        torch.manual_seed(seed)
        model = TCN(cond_dim=5, **config)
        with torch.no_grad():
            y = model(torch.randn(2, 1, model.receptive_field + 4000), torch.rand(2, 5))
        mean_square = float(y[..., model.receptive_field :].square().mean())
        assert 0.1 < mean_square < 5.0, (seed, mean_square)


@pytest.mark.parametrize(
    "x_shape, cond, message",
    [
        ((2, 300), None, r"x must be shaped \(batch, channels, samples\)"),
        ((2, 1, 300), None, r"x must be shaped \(batch, in_channels=2"),
        ((2, 2, 4, 300), None, r"x must be shaped \(batch, in_channels=2"),
        ((2, 2, 300), "missing", "cond is required"),
        ((2, 2, 300), (2, 3), r"cond must be shaped \(batch, cond_dim\) = \(2, 4\)"),
        ((2, 2, 300), (3, 4), r"cond must be shaped \(batch, cond_dim\) = \(2, 4\)"),
        ((2, 2, 300), (4,), r"cond must be shaped"),
    ],
)
def test_bad_inputs_are_named(x_shape, cond, message):
    model = small_model(cond_dim=4, dtype=torch.float32)
    c = None if cond == "missing" else (torch.rand(*cond) if cond else torch.rand(2, 4))
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*x_shape), c)


def test_non_finite_inputs_and_unexpected_cond_are_named():
    conditioned = small_model(cond_dim=4, dtype=torch.float32)
    x = torch.randn(2, 2, 100)
    bad = x.clone()
    bad[1, 0, 7] = float("nan")
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        conditioned(bad, torch.rand(2, 4))
    cond = torch.rand(2, 4)
    cond[0, 0] = float("inf")
    with pytest.raises(ValueError, match="cond contains 0 NaN and 1 Inf"):
        conditioned(x, cond)
    with pytest.raises(ValueError, match="cond was given but this TCN has cond_dim=0"):
        small_model(dtype=torch.float32)(x, torch.rand(2, 4))
    with pytest.raises(ValueError, match="n_blocks must be an integer >= 1"):
        TCN(n_blocks=0)


def test_gradients_match_finite_differences():
    model = small_model(cond_dim=2)
    x = torch.randn(1, 2, 60, dtype=torch.float64, requires_grad=True)
    cond = torch.rand(1, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x, cond))
