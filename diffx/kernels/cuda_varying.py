"""The numba.cuda kernels of the time-varying filters (:mod:`diffx.kernels.varying`, whose
docstring gives the maths), one GPU thread per (item, channel) row.

Each kernel is the numba CPU body with the loops over items and channels replaced by the
thread index; they are launched by :class:`diffx.kernels.cuda_launch.CudaKernels` and imported
only when a CUDA back end is first used. As in :mod:`diffx.kernels.cuda_kernels`, ``cuda`` is
imported at module level so that numba's CUDA simulator can run them in the tests. Gradients
of the coefficients, which the channels of an item share, are summed with float64 atomic adds.
"""

from __future__ import annotations

from numba import cuda

from diffx.kernels.varying import svf_adjoint_step, svf_step

# --------------------------------------------------------------------------------------------
# DF-I cascade
# --------------------------------------------------------------------------------------------


@cuda.jit
def sos_forward(x, coef, ys):  # pragma: no cover - runs on a GPU or in the simulator's threads
    """x (B, C, T); coef (B, K, 5, T); ys (B, C, K, T) receives each section's output."""
    r = cuda.grid(1)
    n_channels, n_samples = x.shape[1], x.shape[2]
    if r < x.shape[0] * n_channels:
        b = r // n_channels
        c = r - b * n_channels
        for k in range(coef.shape[1]):
            u1 = 0.0
            u2 = 0.0
            v1 = 0.0
            v2 = 0.0
            for n in range(n_samples):
                u = x[b, c, n] if k == 0 else ys[b, c, k - 1, n]
                v = (coef[b, k, 0, n] * u + coef[b, k, 1, n] * u1 + coef[b, k, 2, n] * u2
                     - coef[b, k, 3, n] * v1 - coef[b, k, 4, n] * v2)  # fmt: skip
                ys[b, c, k, n] = v
                u2 = u1
                u1 = u
                v2 = v1
                v1 = v


@cuda.jit
def sos_backward(
    grad_y, x, coef, ys, g, grad_x, grad_coef, need_coef
):  # pragma: no cover - as above
    """The fused adjoint; g (B, C, T) float64 scratch, grad_coef (B, K, 5, T) float64 zeroed."""
    r = cuda.grid(1)
    n_channels, n_samples = x.shape[1], x.shape[2]
    if r < x.shape[0] * n_channels:
        b = r // n_channels
        c = r - b * n_channels
        for n in range(n_samples):
            g[b, c, n] = grad_y[b, c, n]
        for kk in range(coef.shape[1]):
            k = coef.shape[1] - 1 - kk
            w1 = 0.0
            w2 = 0.0
            a1_next = 0.0
            a2_next = 0.0
            a2_next1 = 0.0
            b1_next = 0.0
            b2_next = 0.0
            b2_next1 = 0.0
            for i in range(n_samples):
                n = n_samples - 1 - i
                w = g[b, c, n] - a1_next * w1 - a2_next * w2
                g[b, c, n] = coef[b, k, 0, n] * w + b1_next * w1 + b2_next * w2
                if need_coef:
                    u0 = x[b, c, n] if k == 0 else ys[b, c, k - 1, n]
                    cuda.atomic.add(grad_coef, (b, k, 0, n), w * u0)
                    if n >= 1:
                        u1 = x[b, c, n - 1] if k == 0 else ys[b, c, k - 1, n - 1]
                        cuda.atomic.add(grad_coef, (b, k, 1, n), w * u1)
                        cuda.atomic.add(grad_coef, (b, k, 3, n), -w * ys[b, c, k, n - 1])
                    if n >= 2:
                        u2 = x[b, c, n - 2] if k == 0 else ys[b, c, k - 1, n - 2]
                        cuda.atomic.add(grad_coef, (b, k, 2, n), w * u2)
                        cuda.atomic.add(grad_coef, (b, k, 4, n), -w * ys[b, c, k, n - 2])
                w2 = w1
                w1 = w
                a1_next = coef[b, k, 3, n]
                a2_next = a2_next1
                a2_next1 = coef[b, k, 4, n]
                b1_next = coef[b, k, 1, n]
                b2_next = b2_next1
                b2_next1 = coef[b, k, 2, n]
        for n in range(n_samples):
            grad_x[b, c, n] = g[b, c, n]


SOS = (sos_forward, sos_backward)

# --------------------------------------------------------------------------------------------
# two-state state-space system (the SVF's reference adjoint and create_graph path)
# --------------------------------------------------------------------------------------------


@cuda.jit
def ss_forward(x, coef, y):  # pragma: no cover - as above
    """x, y (B, C, T); coef (B, 9, T) = [A11, A12, A21, A22, B1, B2, C1, C2, D]."""
    r = cuda.grid(1)
    n_channels, n_samples = x.shape[1], x.shape[2]
    if r < x.shape[0] * n_channels:
        b = r // n_channels
        c = r - b * n_channels
        s1 = 0.0
        s2 = 0.0
        for n in range(n_samples):
            u = x[b, c, n]
            y[b, c, n] = coef[b, 6, n] * s1 + coef[b, 7, n] * s2 + coef[b, 8, n] * u
            t1 = coef[b, 0, n] * s1 + coef[b, 1, n] * s2 + coef[b, 4, n] * u
            s2 = coef[b, 2, n] * s1 + coef[b, 3, n] * s2 + coef[b, 5, n] * u
            s1 = t1


STATE_SPACE = (ss_forward, None)

# --------------------------------------------------------------------------------------------
# TPT state-variable filter
# --------------------------------------------------------------------------------------------


_svf_step = cuda.jit(device=True)(svf_step)
_svf_adjoint_step = cuda.jit(device=True)(svf_adjoint_step)


@cuda.jit
def svf_forward(x, g, k, mode, y, states):  # pragma: no cover - as above
    """x, y (B, C, T); g, k (B, T); states (B, C, 2, T) receive s[n] before sample n."""
    r = cuda.grid(1)
    n_channels, n_samples = x.shape[1], x.shape[2]
    if r < x.shape[0] * n_channels:
        b = r // n_channels
        c = r - b * n_channels
        s1 = 0.0
        s2 = 0.0
        for n in range(n_samples):
            states[b, c, 0, n] = s1
            states[b, c, 1, n] = s2
            y[b, c, n], s1, s2 = _svf_step(x[b, c, n], g[b, n], k[b, n], s1, s2, mode)


@cuda.jit
def svf_backward(
    grad_y, x, g, k, mode, states, grad_x, grad_g, grad_k, need_gk
):  # pragma: no cover - as above
    """The fused state-space adjoint; grad_g, grad_k (B, T) float64 zeroed, summed over the
    channels with atomic adds."""
    r = cuda.grid(1)
    n_channels, n_samples = x.shape[1], x.shape[2]
    if r < x.shape[0] * n_channels:
        b = r // n_channels
        c = r - b * n_channels
        l1 = 0.0
        l2 = 0.0
        for i in range(n_samples):
            n = n_samples - 1 - i
            grad_x[b, c, n], acc_g, acc_k, l1, l2 = _svf_adjoint_step(
                grad_y[b, c, n], x[b, c, n], g[b, n], k[b, n], states[b, c, 0, n],
                states[b, c, 1, n], l1, l2, mode, need_gk,
            )  # fmt: skip
            if need_gk:
                cuda.atomic.add(grad_g, (b, n), acc_g)
                cuda.atomic.add(grad_k, (b, n), acc_k)


SVF = (svf_forward, svf_backward)
