"""The SOS cascade kernel: every back end against scipy and against each other."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
import torch
from torch.autograd import gradcheck, gradgradcheck

from diffx.kernels.iir import sos_cascade
from tests.conftest import requires_cuda

BACKENDS = ["numba", "scan", "torch"]


def random_sections(rows: int, n_sections: int, seed: int = 0) -> np.ndarray:
    """Random stable sections [b0, b1, b2, a1, a2]: complex or real pole pairs inside |z|<1."""
    rng = np.random.default_rng(seed)
    out = np.empty((rows, n_sections, 5))
    for r, k in itertools.product(range(rows), range(n_sections)):
        if rng.random() < 0.7:
            radius, angle = rng.uniform(0.2, 0.995), rng.uniform(0.0, np.pi)
            a1, a2 = -2 * radius * np.cos(angle), radius**2
        else:
            p1, p2 = rng.uniform(-0.99, 0.99, size=2)
            a1, a2 = -(p1 + p2), p1 * p2
        out[r, k] = [*rng.normal(size=3), a1, a2]
    return out


def scipy_cascade(x: np.ndarray, sections: np.ndarray) -> np.ndarray:
    sos = np.concatenate(
        [sections[..., :3], np.ones(sections.shape[:-1] + (1,)), sections[..., 3:]], -1
    )
    return np.stack([scipy.signal.sosfilt(sos[r], x[r]) for r in range(x.shape[0])])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_sections", [1, 3])
def test_matches_scipy_float64(backend, n_sections):
    sections = random_sections(3, n_sections, seed=n_sections)
    x = np.random.default_rng(1).normal(size=(3, 700))
    y = sos_cascade(torch.from_numpy(x), torch.from_numpy(sections), backend)
    np.testing.assert_allclose(y.numpy(), scipy_cascade(x, sections), atol=1e-9, rtol=0)


@pytest.mark.parametrize("backend", ["numba", "scan"])
def test_matches_scipy_float32_relative(backend):
    sections = random_sections(4, 4, seed=3)
    x = np.random.default_rng(2).normal(size=(4, 5000))
    ref = scipy_cascade(x, sections)
    y = sos_cascade(torch.from_numpy(x).float(), torch.from_numpy(sections).float(), backend)
    err = np.abs(y.double().numpy() - ref).max() / np.abs(ref).max()
    assert err < 1e-4


@pytest.mark.parametrize("length", [1, 2, 63, 64, 65, 130])
def test_scan_chunk_boundaries(length):
    """Lengths around the chunk size (64) exercise padding and the carried state."""
    sections = random_sections(2, 2, seed=length)
    x = np.random.default_rng(length).normal(size=(2, length))
    y = sos_cascade(torch.from_numpy(x), torch.from_numpy(sections), "scan")
    np.testing.assert_allclose(y.numpy(), scipy_cascade(x, sections), atol=1e-10)


def test_backends_agree_on_gradients():
    sections = torch.from_numpy(random_sections(2, 3, seed=7))
    x = torch.randn(2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weight = torch.randn(2, 300, dtype=torch.float64)
    grads = {}
    for backend in BACKENDS:
        xs, ss = x.clone().requires_grad_(), sections.clone().requires_grad_()
        (sos_cascade(xs, ss, backend) * weight).sum().backward()
        grads[backend] = (xs.grad, ss.grad)
    for backend in ("scan", "torch"):
        torch.testing.assert_close(grads[backend][0], grads["numba"][0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(grads[backend][1], grads["numba"][1], rtol=1e-9, atol=1e-9)


def test_input_gradient_is_time_reversed_filter():
    """Analytic adjoint: for an LTI filter h, dL/dx = h reversed-correlated with dL/dy."""
    sections = random_sections(1, 2, seed=11)
    x = torch.zeros(1, 200, dtype=torch.float64, requires_grad=True)
    grad_y = torch.zeros(1, 200, dtype=torch.float64)
    grad_y[0, 150] = 1.0  # dL/dx[n] = h[150 - n]
    (sos_cascade(x, torch.from_numpy(sections)) * grad_y).sum().backward()
    impulse = np.zeros((1, 200))
    impulse[0, 0] = 1
    h = scipy_cascade(impulse, sections)[0]
    expected = np.zeros(200)
    expected[:151] = h[:151][::-1]
    np.testing.assert_allclose(x.grad[0].numpy(), expected, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_gradcheck_and_gradgradcheck(backend, needs):
    sections = torch.from_numpy(random_sections(2, 2, seed=5)).requires_grad_(needs[1])
    x = torch.randn(2, 24, dtype=torch.float64).requires_grad_(needs[0])

    def fn(a, b):
        return sos_cascade(a, b, backend)

    assert gradcheck(fn, (x, sections))
    assert gradgradcheck(fn, (x, sections))


def test_output_can_be_edited_in_place_without_corrupting_gradients():
    sections = torch.from_numpy(random_sections(1, 2, seed=2)).requires_grad_()
    x = torch.randn(1, 50, dtype=torch.float64)
    y = sos_cascade(x, sections)
    (y.sum()).backward()
    expected = sections.grad.clone()
    sections.grad = None
    y = sos_cascade(x, sections)
    loss = y.sum()
    y.mul_(0.0)  # in-place edit after the loss was formed
    loss.backward()
    torch.testing.assert_close(sections.grad, expected)


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        sos_cascade(torch.zeros(1, 4), torch.zeros(1, 1, 5), "fast")


@requires_cuda
def test_cuda_scan_matches_cpu():
    sections = torch.from_numpy(random_sections(8, 4, seed=9))
    x = torch.randn(8, 20000, dtype=torch.float64)
    weight = torch.randn_like(x)
    results = []
    for device in ("cpu", "cuda"):
        xs = x.to(device).requires_grad_()
        ss = sections.to(device).requires_grad_()
        y = sos_cascade(xs, ss)
        (y * weight.to(device)).sum().backward()
        results.append((y.cpu(), xs.grad.cpu(), ss.grad.cpu()))
    for cpu, gpu in zip(*results):
        torch.testing.assert_close(gpu, cpu, rtol=1e-8, atol=1e-8)
