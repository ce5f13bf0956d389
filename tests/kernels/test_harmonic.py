"""The fused harmonic-sum kernel against its tensor-op reference in float64 (the oracle), for
every frame layout, with gradients, second derivatives and any thread count."""

from __future__ import annotations

import math

import pytest
import torch

from diffx.kernels.harmonic import harmonic_sum, harmonic_sum_reference
from diffx.kernels.threads import MIN_SAMPLES_PER_THREAD


def _grid(n_frames, n_samples):
    if n_frames in (1, n_samples):
        left = torch.arange(n_samples) * (n_frames > 1)
        return left, torch.zeros(n_samples, dtype=torch.float64)
    pos = torch.linspace(0.0, n_frames - 1.0, n_samples, dtype=torch.float64)
    left = pos.floor().clamp(max=n_frames - 2).long()
    return left, pos - left


def _inputs(batch, n_frames, n_samples, n_harmonics, seed=0):
    gen = torch.Generator().manual_seed(seed)
    phase = torch.rand(batch, n_samples, generator=gen, dtype=torch.float64) * 2 * math.pi
    dist = torch.rand(batch, n_frames, n_harmonics, generator=gen, dtype=torch.float64)
    return phase, dist, *_grid(n_frames, n_samples)


@pytest.mark.parametrize(
    "n_frames,n_samples,n_harmonics",
    [(11, 640, 100), (7, 500, 3), (1, 64, 5), (64, 64, 4), (2, 3, 1), (300, 301, 20)],
)
def test_kernel_equals_reference_values_and_gradients(n_frames, n_samples, n_harmonics):
    phase, dist, left, w = _inputs(3, n_frames, n_samples, n_harmonics)
    results = []
    for backend in ("numba", "torch"):
        p = phase.clone().requires_grad_()
        d = dist.clone().requires_grad_()
        h = harmonic_sum(p, d, left, w, backend=backend)
        g = torch.randn(h.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        (h * g).sum().backward()
        results.append((h.detach(), p.grad, d.grad))
    for ours, ref in zip(*results):
        scale = ref.abs().max().item() + 1e-30
        assert (ours - ref).abs().max().item() <= 1e-11 * max(scale, 1.0), (ours - ref).abs().max()


def test_float32_inputs_are_summed_in_float64():
    phase, dist, left, w = _inputs(2, 9, 512, 100)
    exact = harmonic_sum_reference(phase, dist, left, w)
    ours = harmonic_sum(phase, dist.float(), left, w)  # float64 phase, float32 weights
    assert ours.dtype == torch.float64
    ref32 = harmonic_sum_reference(phase.float(), dist.float(), left, w.float())
    # The kernel's only rounding is the weights' own float32 rounding; the float32 reference
    # loses more in k * phase (k up to 100).
    err_ours = (ours - exact).abs().max().item()
    err_ref32 = (ref32.double() - exact).abs().max().item()
    assert err_ours < 1e-6 and err_ours < err_ref32


def test_gradcheck_and_gradgradcheck():
    phase, dist, left, w = _inputs(2, 4, 21, 6)
    phase.requires_grad_()
    dist.requires_grad_()
    fn = lambda p, d: harmonic_sum(p, d, left, w, backend="numba")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (phase, dist))
    assert torch.autograd.gradgradcheck(fn, (phase, dist))


def test_threaded_equals_single_thread():
    phase, dist, left, w = _inputs(4, 51, 2 * MIN_SAMPLES_PER_THREAD, 8)
    before = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            p = phase.clone().requires_grad_()
            d = dist.clone().requires_grad_()
            h = harmonic_sum(p, d, left, w)
            h.sum().backward()
            outs.append((h.detach(), p.grad, d.grad))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unknown_backend_is_refused():
    phase, dist, left, w = _inputs(1, 2, 8, 1)
    with pytest.raises(ValueError, match="backend"):
        harmonic_sum(phase, dist, left, w, backend="cuda")
