"""diffx.nn.GRU against torch.nn.GRU (the oracle): same outputs, final state and gradients for
every input, parameter and the initial state; second derivatives; checkpoints interchange."""

from __future__ import annotations

import pytest
import torch

from diffx.nn import GRU


def _pair(input_size=5, hidden=7, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ours = GRU(input_size, hidden).to(dtype)
    ref = torch.nn.GRU(input_size, hidden, batch_first=True).to(dtype)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_outputs_and_gradients_equal_torch_gru(with_h0, dtype, tol):
    ours, ref = _pair(dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 40, 5, dtype=dtype, generator=gen)
    h0 = torch.randn(1, 3, 7, dtype=dtype, generator=gen) if with_h0 else None
    grads = []
    for net in (ours, ref):
        xx = x.clone().requires_grad_()
        hh = h0.clone().requires_grad_() if with_h0 else None
        out, h_n = net(xx, hh)
        weight = torch.randn(out.shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
        ((out * weight).sum() + h_n.square().sum()).backward()
        grads.append([out, h_n, xx.grad, *(p.grad for p in net.parameters())]
                     + ([hh.grad] if with_h0 else []))  # fmt: skip
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_gradcheck_and_gradgradcheck_float64():
    ours, _ = _pair(input_size=3, hidden=4)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    names = [name for name, _ in ours.named_parameters()]

    def fn(x, h0, *weights):
        out, h_n = torch.func.functional_call(ours, dict(zip(names, weights)), (x, h0))
        return out, h_n

    weights = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    assert torch.autograd.gradcheck(fn, (x, h0, *weights))
    assert torch.autograd.gradgradcheck(fn, (x, h0, *weights))


def test_checkpoints_interchange_with_torch_gru():
    ours, ref = _pair()
    assert list(ours.state_dict()) == list(ref.state_dict())
    fresh = GRU(5, 7).double()
    fresh.load_state_dict(ref.state_dict())
    x = torch.randn(2, 9, 5, dtype=torch.float64)
    torch.testing.assert_close(fresh(x)[0], ref(x)[0], rtol=1e-12, atol=1e-12)


def test_wrong_shapes_are_named():
    ours, _ = _pair()
    with pytest.raises(ValueError, match="5 features"):
        ours(torch.randn(2, 9, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="initial state"):
        ours(torch.randn(2, 9, 5, dtype=torch.float64), torch.zeros(1, 3, 7, dtype=torch.float64))
