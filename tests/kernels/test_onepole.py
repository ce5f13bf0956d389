"""Tests for the time-varying one-pole kernel against scipy and a plain numpy loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.kernels.onepole import onepole
from tests.conftest import requires_cuda

CPU_BACKENDS = ["numba", "torch"]


def _numpy_onepole(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Independent oracle: the recursion written out sample by sample in float64."""
    a = np.broadcast_to(a, x.shape)
    y = np.zeros(x.shape, dtype=np.float64)
    for r in range(x.shape[0]):
        prev = 0.0
        for n in range(x.shape[1]):
            prev = x[r, n] + a[r, n] * prev
            y[r, n] = prev
    return y


def _random(rows=3, samples=40, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, samples, generator=gen, dtype=dtype)
    # Poles inside the unit circle, both signs.
    a = (torch.rand(rows, samples, generator=gen, dtype=dtype) * 1.9 - 0.95).to(dtype)
    return x, a


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fixed_pole_matches_scipy_lfilter(backend):
    x, _ = _random()
    poles = torch.tensor([[0.5], [-0.9], [0.99]], dtype=torch.float64)
    y = onepole(x, poles, backend=backend)
    for r in range(3):
        expected = scipy.signal.lfilter([1.0], [1.0, -float(poles[r, 0])], x[r].numpy())
        np.testing.assert_allclose(y[r].numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_time_varying_matches_numpy_loop(backend, dtype):
    x, a = _random(dtype=dtype)
    y = onepole(x, a, backend=backend)
    assert y.dtype == dtype
    expected = _numpy_onepole(x.double().numpy(), a.double().numpy())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("fixed_pole", [False, True], ids=["varying", "fixed"])
@pytest.mark.parametrize(
    "needs", [c for c in itertools.product([False, True], repeat=2) if any(c)], ids=str
)
def test_gradcheck_every_combination(backend, fixed_pole, needs):
    x, a = _random(rows=2, samples=16)
    if fixed_pole:
        a = a[:, :1].clone()
    x.requires_grad_(needs[0])
    a.requires_grad_(needs[1])

    def fn(x, a):
        return onepole(x, a, backend=backend)

    assert gradcheck(fn, (x, a))
    assert gradgradcheck(fn, (x, a))


def test_backends_agree_values_and_gradients():
    x, a = _random(rows=4, samples=64)
    outs = {}
    for backend in CPU_BACKENDS:
        xb = x.clone().requires_grad_()
        ab = a.clone().requires_grad_()
        y = onepole(xb, ab, backend=backend)
        (y * torch.linspace(-1, 1, 64, dtype=y.dtype)).sum().backward()
        outs[backend] = (y.detach(), xb.grad, ab.grad)
    for ref, got in zip(outs["torch"], outs["numba"]):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_adjoint_identity():
    """<onepole(x), g> == <x, dL/dx> for linear maps: an oracle for the backward in x."""
    x, a = _random(rows=2, samples=50)
    x.requires_grad_()
    g = torch.randn(2, 50, dtype=torch.float64)
    y = onepole(x, a)
    (grad_x,) = torch.autograd.grad(y, x, g)
    assert torch.allclose((y * g).sum(), (x * grad_x).sum(), rtol=1e-12)


def test_bad_inputs():
    x, a = _random()
    with pytest.raises(ValueError, match="x must be shaped"):
        onepole(x[0], a[0])
    with pytest.raises(ValueError, match="a must be shaped"):
        onepole(x, a[:, :5])
    with pytest.raises(ValueError, match="a must have"):
        onepole(x, a.float())
    with pytest.raises(ValueError, match="backend"):
        onepole(x, a, backend="triton")
    with pytest.raises(ValueError, match="cuda"):
        onepole(x, a, backend="cuda")


@requires_cuda
def test_cuda_matches_numba():
    x, a = _random(rows=5, samples=300)
    xc = x.cuda().requires_grad_()
    ac = a.cuda().requires_grad_()
    yc = onepole(xc, ac)
    yc.square().sum().backward()
    xn = x.clone().requires_grad_()
    an = a.clone().requires_grad_()
    yn = onepole(xn, an, backend="numba")
    yn.square().sum().backward()
    torch.testing.assert_close(yc.detach().cpu(), yn.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(xc.grad.cpu(), xn.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ac.grad.cpu(), an.grad, rtol=1e-10, atol=1e-10)
    assert gradgradcheck(onepole, (xc[:, :12].detach().requires_grad_(), ac[:, :12].detach()))
