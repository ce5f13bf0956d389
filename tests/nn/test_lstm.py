"""LSTMAmp against plain torch.nn recurrent layers + Linear holding the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffx.nn.lstm import LSTMAmp

TORCH_RNN = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


def _reference(model: LSTMAmp, x: torch.Tensor) -> torch.Tensor:
    """Plain torch recurrent layer + Linear (+ skip) with the model's weights, computed apart."""
    rec = TORCH_RNN[model.unit_type](
        model.input_size, model.hidden_size, model.num_layers, batch_first=False
    ).to(x.dtype)
    lin = nn.Linear(model.hidden_size, 1, bias=model.bias).to(x.dtype)
    rec.load_state_dict({k[4:]: v for k, v in model.state_dict().items() if k.startswith("rec.")})
    lin.load_state_dict({k[4:]: v for k, v in model.state_dict().items() if k.startswith("lin.")})
    # Sequence-first layout here (the model uses batch_first), so a layout slip would show.
    seq = x.permute(2, 0, 1)  # (samples, batch, channels)
    out, _ = rec(seq)
    y = lin(out)
    if model.skip:
        y = y + seq[..., :1]
    return y.permute(1, 2, 0)


def _model(dtype=torch.float32, **kwargs) -> LSTMAmp:
    torch.manual_seed(0)
    return LSTMAmp(**kwargs).to(dtype)


@pytest.mark.parametrize("unit_type", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"skip": False},
        {"input_size": 3, "hidden_size": 8},
        {"num_layers": 2, "hidden_size": 6, "bias": False},
    ],
)
def test_matches_torch_reference(unit_type, kwargs, dtype):
    model = _model(dtype, unit_type=unit_type, **kwargs)
    x = 0.5 * torch.randn(
        3, model.input_size, 200, dtype=dtype, generator=torch.Generator().manual_seed(1)
    )
    y = model(x)
    assert y.shape == (3, 1, 200) and y.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(y, _reference(model, x), atol=tol, rtol=tol)


def test_default_is_wright_lstm40():
    model = LSTMAmp()
    assert model.unit_type == "LSTM" and model.hidden_size == 40 and model.num_layers == 1
    assert model.input_size == 1 and model.skip and model.bias and model.sample_rate is None
    # 4 gates x 40 units x (1 input + 40 recurrent + 2 biases) + 40 + 1 output weights
    assert sum(p.numel() for p in model.parameters()) == 4 * 40 * (1 + 40 + 2) + 41


def test_skip_adds_the_input():
    model = _model(hidden_size=5)
    x = torch.randn(2, 1, 50)
    model.skip = False
    y_noskip = model(x)
    model.skip = True
    torch.testing.assert_close(model(x), y_noskip + x, atol=0, rtol=0)


def test_skip_adds_only_the_audio_channel_of_a_conditioned_model():
    model = _model(input_size=3, hidden_size=5)
    x = torch.randn(2, 3, 40)
    model.skip = False
    y_noskip = model(x)
    model.skip = True
    torch.testing.assert_close(model(x), y_noskip + x[:, :1], atol=0, rtol=0)


def test_cond_equals_knob_channels():
    model = _model(input_size=3, hidden_size=6)
    audio = torch.randn(2, 1, 64)
    knobs = torch.tensor([[0.2, 0.9], [0.7, 0.1]])
    full = torch.cat([audio, knobs[:, :, None].expand(2, 2, 64)], dim=1)
    expected = model(full)
    torch.testing.assert_close(model(audio, cond=knobs), expected, atol=0, rtol=0)
    torch.testing.assert_close(model(audio, cond=full[:, 1:]), expected, atol=0, rtol=0)
    # One set of knobs shared by the whole batch.
    shared = model(audio, cond=knobs[:1])
    torch.testing.assert_close(shared[:1], expected[:1], atol=0, rtol=0)


@pytest.mark.parametrize("unit_type", ["LSTM", "GRU"])
def test_streaming_in_blocks_equals_whole(unit_type, dtype):
    model = _model(dtype, unit_type=unit_type, hidden_size=12, num_layers=2)
    x = torch.randn(2, 1, 1000, dtype=dtype)
    whole = model(x)
    model.stateful = True
    model.reset_state()
    bounds = [0, 1, 64, 300, 301, 777, 1000]  # uneven blocks, one of a single sample
    blocks = [model(x[..., a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(torch.cat(blocks, dim=-1), whole, atol=tol, rtol=tol)


def test_stateless_calls_do_not_keep_state():
    model = _model(hidden_size=8)
    x = torch.randn(1, 1, 100)
    first = model(x)
    torch.testing.assert_close(model(x), first, atol=0, rtol=0)
    assert model.state is None


def test_reset_state_restarts_from_silence():
    model = _model(hidden_size=8, stateful=True)
    x = torch.randn(1, 1, 100)
    first = model(x)
    second = model(x)  # continues from the state the first call left
    assert not torch.allclose(first, second)
    model.reset_state()
    torch.testing.assert_close(model(x), first, atol=0, rtol=0)


def test_detach_state_cuts_gradient_between_frames():
    model = _model(hidden_size=8, stateful=True)
    x = torch.randn(2, 1, 200, requires_grad=True)

    def second_frame_grad(detach: bool) -> torch.Tensor:
        x.grad = None
        model.reset_state()
        model(x[..., :100])
        if detach:
            model.detach_state()
        model(x[..., 100:]).square().sum().backward()
        return x.grad

    grad = second_frame_grad(detach=False)
    assert grad[..., :100].abs().max() > 0  # without detach, frame 2 reaches back into frame 1
    grad = second_frame_grad(detach=True)
    assert torch.all(grad[..., :100] == 0)
    assert grad[..., 100:].abs().max() > 0
    # The state keeps its value: output after detach equals the undetached continuation.
    model.reset_state()
    model(x[..., :100])
    model.detach_state()
    detached = model(x[..., 100:])
    model.reset_state()
    torch.testing.assert_close(detached, model(x)[..., 100:], atol=1e-6, rtol=1e-6)


def test_tbptt_loop_as_documented_trains():
    """The warm-up / frame / detach loop from the module docstring runs and lowers the loss."""
    torch.manual_seed(0)
    model = LSTMAmp(hidden_size=8, stateful=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 1100) * 0.5
    target = torch.tanh(3 * x)
    warmup, frame = 100, 250

    def epoch() -> float:
        model.reset_state()
        with torch.no_grad():
            model(x[..., :warmup])
        total = 0.0
        for start in range(warmup, x.shape[-1], frame):
            loss = model(x[..., start : start + frame]) - target[..., start : start + frame]
            loss = loss.square().mean()
            loss.backward()
            opt.step()
            opt.zero_grad()
            model.detach_state()
            total += float(loss.detach())
        return total

    first = epoch()
    for _ in range(20):
        last = epoch()
    assert last < 0.5 * first


def test_silence_gives_finite_output_and_gradient():
    model = _model(hidden_size=8)
    x = torch.zeros(1, 1, 64, requires_grad=True)
    y = model(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("unit_type", ["LSTM", "GRU"])
def test_gradcheck(unit_type):
    model = _model(torch.float64, unit_type=unit_type, hidden_size=3, input_size=2)
    x = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def fn(x, *params):
        return torch.func.functional_call(model, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unit_type": "Transformer"}, "unit_type"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 1.5}, "num_layers"),
        ({"input_size": 0}, "input_size"),
        ({"sample_rate": -44100}, "sample_rate"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTMAmp(**kwargs)


def test_bad_inputs():
    model = _model(hidden_size=4)
    with pytest.raises(ValueError, match="x must be shaped"):
        model(torch.randn(1, 100))
    with pytest.raises(ValueError, match="1 channel"):
        model(torch.randn(1, 2, 100))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 1, 10), float("nan")))
    with pytest.raises(ValueError, match="floating"):
        model(torch.ones(1, 1, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="cond"):
        model(torch.randn(1, 1, 10), cond=torch.rand(1, 1))
    cond_model = _model(input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match="3 channel"):
        cond_model(torch.randn(1, 1, 10))
    with pytest.raises(ValueError, match="cond must be shaped"):
        cond_model(torch.randn(1, 1, 10), cond=torch.rand(1, 3))
    with pytest.raises(ValueError, match="cond must be shaped"):
        cond_model(torch.randn(1, 1, 10), cond=torch.rand(1, 2, 9))
    with pytest.raises(ValueError, match="cond"):
        cond_model(torch.randn(1, 1, 10), cond=torch.tensor([[float("inf"), 0.0]]))


def test_batch_change_while_stateful_is_refused():
    model = _model(hidden_size=4, stateful=True)
    model(torch.randn(2, 1, 10))
    with pytest.raises(ValueError, match="reset_state"):
        model(torch.randn(3, 1, 10))
    model.reset_state()
    assert model(torch.randn(3, 1, 10)).shape == (3, 1, 10)
