"""Tests for the attack/release ballistics kernel against a numpy loop and closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.kernels.ballistics import attack_release
from tests.conftest import requires_cuda

CPU_BACKENDS = ["numba", "torch"]


def _numpy_ballistics(g: np.ndarray, aa: np.ndarray, ar: np.ndarray) -> np.ndarray:
    """Independent oracle: Giannoulis et al. (2012) eq. 17, starting from 0 dB."""
    y = np.zeros(g.shape, dtype=np.float64)
    for r in range(g.shape[0]):
        prev = 0.0
        for n in range(g.shape[1]):
            alpha = aa[r] if g[r, n] < prev else ar[r]
            prev = alpha * prev + (1 - alpha) * g[r, n]
            y[r, n] = prev
    return y


def _random(rows=3, samples=48, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = (-30 * torch.rand(rows, samples, generator=gen, dtype=torch.float64)).to(dtype)
    aa = torch.linspace(0.2, 0.7, rows, dtype=dtype)
    ar = torch.linspace(0.8, 0.97, rows, dtype=dtype)
    return g, aa, ar


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_numpy_loop(backend, dtype):
    g, aa, ar = _random(dtype=dtype)
    y = attack_release(g, aa, ar, backend=backend)
    assert y.dtype == dtype
    expected = _numpy_ballistics(g.double().numpy(), aa.double().numpy(), ar.double().numpy())
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_step_responses_closed_form(backend):
    """A step down is attacked, the step back up released, each a geometric approach."""
    n_on, n_off = 30, 40
    g = torch.cat([torch.full((n_on,), -12.0), torch.zeros(n_off)]).double()[None]
    aa = torch.tensor([0.8], dtype=torch.float64)
    ar = torch.tensor([0.95], dtype=torch.float64)
    y = attack_release(g, aa, ar, backend=backend)[0]
    k = torch.arange(n_on, dtype=torch.float64)
    torch.testing.assert_close(y[:n_on], -12.0 * (1 - 0.8 ** (k + 1)), rtol=1e-12, atol=1e-12)
    peak = -12.0 * (1 - 0.8**n_on)
    k = torch.arange(n_off, dtype=torch.float64)
    torch.testing.assert_close(y[n_on:], peak * 0.95 ** (k + 1), rtol=1e-12, atol=1e-12)


def test_starts_at_zero_db():
    """A constant 0 dB target (no gain reduction) stays exactly at 0 dB."""
    g = torch.zeros(2, 20)
    y = attack_release(g, torch.tensor([0.5, 0.9]), torch.tensor([0.9, 0.99]))
    assert torch.equal(y, g)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    "needs", [c for c in itertools.product([False, True], repeat=3) if any(c)], ids=str
)
def test_gradcheck_every_combination(backend, needs):
    g, aa, ar = _random(rows=2, samples=20)
    g.requires_grad_(needs[0])
    aa.requires_grad_(needs[1])
    ar.requires_grad_(needs[2])

    def fn(g, aa, ar):
        return attack_release(g, aa, ar, backend=backend)

    assert gradcheck(fn, (g, aa, ar))
    assert gradgradcheck(fn, (g, aa, ar))


def test_backends_agree_values_and_gradients(dtype):
    g, aa, ar = _random(rows=4, samples=200, dtype=dtype)
    outs = {}
    for backend in CPU_BACKENDS:
        inputs = [t.clone().requires_grad_() for t in (g, aa, ar)]
        y = attack_release(*inputs, backend=backend)
        (y * torch.linspace(-1, 1, 200, dtype=dtype)).sum().backward()
        outs[backend] = (y.detach(), *(t.grad for t in inputs))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for ref, got in zip(outs["torch"], outs["numba"]):
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol)


def test_batch_consistency():
    g, aa, ar = _random(rows=3)
    y = attack_release(g, aa, ar)
    for r in range(3):
        torch.testing.assert_close(
            attack_release(g[r : r + 1], aa[r : r + 1], ar[r : r + 1]), y[r : r + 1]
        )


def test_bad_inputs():
    g, aa, ar = _random()
    with pytest.raises(ValueError, match="gain_db"):
        attack_release(g[0], aa, ar)
    with pytest.raises(ValueError, match="alpha_attack"):
        attack_release(g, aa[:2], ar)
    with pytest.raises(ValueError, match="alpha_release"):
        attack_release(g, aa, ar.float())
    with pytest.raises(ValueError, match="backend"):
        attack_release(g, aa, ar, backend="jax")


@requires_cuda
def test_cuda_matches_numba():
    g, aa, ar = _random(rows=5, samples=500)
    cuda_in = [t.cuda().requires_grad_() for t in (g, aa, ar)]
    cpu_in = [t.clone().requires_grad_() for t in (g, aa, ar)]
    yc = attack_release(*cuda_in)
    yn = attack_release(*cpu_in, backend="numba")
    yc.square().sum().backward()
    yn.square().sum().backward()
    torch.testing.assert_close(yc.detach().cpu(), yn.detach(), rtol=1e-10, atol=1e-10)
    for tc, tn in zip(cuda_in, cpu_in):
        torch.testing.assert_close(tc.grad.cpu(), tn.grad, rtol=1e-10, atol=1e-9)
    small = [t[:, :16].detach().requires_grad_() if t.dim() == 2 else t for t in cuda_in]
    assert gradgradcheck(attack_release, tuple(small))
