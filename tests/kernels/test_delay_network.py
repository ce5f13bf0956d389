"""The delay-network kernel against an independent float64 per-sample loop; gradients of every
order on both back ends; energy conservation of a lossless network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffx.kernels.delay_network import delay_network

BACKENDS = ("numba", "blocks")


def reference_loop(x, b, c, a, m, f, sos):
    """Per-sample float64 loop with explicit circular delay buffers and direct-form-I
    sections (written independently of the kernel's transposed form and block algorithm)."""
    x, b, c, a, f, sos = (np.asarray(t, dtype=np.float64) for t in (x, b, c, a, f, sos))
    m = np.asarray(m)
    R, T = x.shape
    N, P, K = b.shape[1], c.shape[1], sos.shape[2]
    y = np.zeros((R, P, T))
    for r in range(R):
        size = int(m[r].max()) + 2
        buf = np.zeros((N, size))  # buf[i, n % size] = v_i[n]
        hist_in = np.zeros((N, K, 2))  # section inputs at n-1, n-2
        hist_out = np.zeros((N, K, 2))
        for n in range(T):
            u = np.zeros(N)
            for i in range(N):
                d0 = n - m[r, i]
                tap0 = buf[i, d0 % size] if d0 >= 0 else 0.0
                tap1 = buf[i, (d0 - 1) % size] if d0 >= 1 else 0.0
                s = (1 - f[r, i]) * tap0 + f[r, i] * tap1
                for k in range(K):
                    b0, b1, b2, a1, a2 = sos[r, i, k]
                    out = (b0 * s + b1 * hist_in[i, k, 0] + b2 * hist_in[i, k, 1]
                           - a1 * hist_out[i, k, 0] - a2 * hist_out[i, k, 1])  # fmt: skip
                    hist_in[i, k] = (s, hist_in[i, k, 0])
                    hist_out[i, k] = (out, hist_out[i, k, 0])
                    s = out
                u[i] = s
            v = b[r] * x[r, n] + a[r] @ u
            for i in range(N):
                buf[i, n % size] = v[i]
            y[r, :, n] = c[r] @ u
    return y


def random_network(R=2, N=3, P=2, K=2, T=60, seed=0, dtype=torch.float64, low=3, high=8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(R, T, generator=gen, dtype=dtype)
    b = torch.randn(R, N, generator=gen, dtype=dtype)
    c = torch.randn(R, P, N, generator=gen, dtype=dtype)
    q = torch.linalg.qr(torch.randn(R, N, N, generator=gen, dtype=torch.float64))[0]
    a = (0.9 * q).to(dtype)
    m = torch.randint(low, high, (R, N), generator=gen)
    f = torch.rand(R, N, generator=gen, dtype=dtype)
    # Stable sections: poles of radius < 0.8 drawn at random angles, gains below 1.
    radius = 0.8 * torch.rand(R, N, K, generator=gen, dtype=torch.float64)
    angle = torch.pi * torch.rand(R, N, K, generator=gen, dtype=torch.float64)
    sos = torch.zeros(R, N, K, 5, dtype=torch.float64)
    sos[..., 0] = 0.3 + 0.3 * torch.rand(R, N, K, generator=gen, dtype=torch.float64)
    sos[..., 1] = 0.2 * torch.randn(R, N, K, generator=gen, dtype=torch.float64)
    sos[..., 2] = 0.1 * torch.randn(R, N, K, generator=gen, dtype=torch.float64)
    sos[..., 3] = -2 * radius * torch.cos(angle)
    sos[..., 4] = radius**2
    return x, b, c, a, m, f, sos.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_the_per_sample_loop(backend):
    x, b, c, a, m, f, sos = random_network(R=3, N=4, P=2, K=2, T=150)
    y = delay_network(x, b, c, a, m, f, sos, backend)
    ref = reference_loop(x, b, c, a, m, f, sos)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_sample_delays_and_uneven_blocks(backend):
    # m = 1 (the shortest loop) beside a long line: blocks of one sample.
    x, b, c, a, m, f, sos = random_network(R=2, N=3, P=1, K=1, T=40, low=1, high=2, seed=3)
    m[:, 0] = 9
    y = delay_network(x, b, c, a, m, f, sos, backend)
    ref = reference_loop(x, b, c, a, m, f, sos)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_blocks_with_the_gpu_filter_scan_match_the_loop():
    """The CUDA path (blocks + the parallel-scan IIR back end), run here on the CPU."""
    from diffx.kernels.delay_network import _forward_blocks

    x, b, c, a, m, f, sos = random_network(R=2, N=3, P=2, K=2, T=120, seed=4)
    y = _forward_blocks(x, b, c, a, m, f, sos, filter_backend="scan")
    ref = reference_loop(x, b, c, a, m, f, sos)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_float32_audio_close_to_float64():
    x, b, c, a, m, f, sos = random_network(T=300)
    y64 = delay_network(x, b, c, a, m, f, sos)
    y32 = delay_network(x.float(), b.float(), c.float(), a.float(), m, f.float(), sos)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, rtol=0, atol=1e-5 * float(y64.abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend):
    x, b, c, a, m, f, sos = random_network(R=2, N=3, P=2, K=2, T=25, seed=1)
    leaves = [t.clone().requires_grad_() for t in (x, b, c, a, f, sos)]

    def fn(x, b, c, a, f, sos):
        return delay_network(x, b, c, a, m, f, sos, backend)

    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("which", range(6))
def test_each_input_alone_requires_grad(which):
    """Gradients of one input at a time agree with the blocks back end's autograd."""
    args = list(random_network(R=2, N=3, P=1, K=1, T=30, seed=2))
    index = [0, 1, 2, 3, 5, 6][which]
    grads = []
    for backend in BACKENDS:
        leaf = args[index].clone().requires_grad_()
        call = args[:index] + [leaf] + args[index + 1 :]
        y = delay_network(*call, backend=backend)
        (g,) = torch.autograd.grad((y * torch.linspace(-1, 1, y.shape[-1])).sum(), leaf)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-12)


def test_lossless_network_conserves_state_energy():
    """Orthogonal mixing, no absorption, integer delays: after the input stops, the energy held
    in the delay lines (the last m_i writes of each line) is constant."""
    N, T = 4, 400
    q = torch.linalg.qr(torch.randn(N, N, generator=torch.Generator().manual_seed(5),
                                    dtype=torch.float64))[0]  # fmt: skip
    m = torch.tensor([[5, 7, 11, 13]])
    x = torch.zeros(1, T, dtype=torch.float64)
    x[0, :20] = torch.randn(20, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    sos = torch.tensor([1.0, 0, 0, 0, 0], dtype=torch.float64).expand(1, N, 1, 5)
    b = torch.ones(1, N, dtype=torch.float64)
    c = torch.eye(N, dtype=torch.float64)[None]  # output p = line p's read
    u = delay_network(x, b, c, q[None], m, torch.zeros(1, N, dtype=torch.float64), sos)[0]
    v = q @ u + x  # the writes (b = 1)
    energy = [
        sum(float(v[i, n - int(m[0, i]) + 1 : n + 1].square().sum()) for i in range(N))
        for n in range(20, T)
    ]
    assert energy[0] > 0.1
    np.testing.assert_allclose(energy, energy[0], rtol=1e-12)


def test_rejects_unknown_backend():
    x, b, c, a, m, f, sos = random_network()
    with pytest.raises(ValueError, match="backend"):
        delay_network(x, b, c, a, m, f, sos, backend="fft")
