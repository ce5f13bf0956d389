"""The numba.cuda kernels of the recursions, one GPU thread per row.

Each kernel is the numba CPU body of its recursion (:mod:`diffx.kernels.onepole`,
:mod:`diffx.kernels.ballistics`, whose docstrings give the maths) with the loop over rows
replaced by the thread index; they are compiled per argument dtype on first launch and launched
by :mod:`diffx.kernels.cuda_launch`.

This module imports ``numba.cuda`` at its top and is itself imported only when a CUDA back end is
first used. The kernels must live at module level beside that import: numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, how the tests run these kernels without a GPU) replaces the global
name ``cuda`` of a kernel's module with its fake thread-index module while the kernel runs, and
a ``cuda`` reached through a closure would not be replaced.

Accumulators start as the float literal ``0.0``, so numba types them float64 and, as the CPU
kernels, the recursions carry their state in float64 whatever the arrays' dtype.
"""

from __future__ import annotations

from numba import cuda

# --------------------------------------------------------------------------------------------
# time-varying one-pole: y[n] = x[n] + a[n] y[n-1]
# --------------------------------------------------------------------------------------------


@cuda.jit
def onepole_forward(x, a, y):  # pragma: no cover - runs on a GPU or in the simulator's threads
    """x, a, y ``(rows, samples)``; y receives the recursion."""
    r = cuda.grid(1)
    if r < x.shape[0]:
        acc = 0.0
        for n in range(x.shape[1]):
            acc = x[r, n] + a[r, n] * acc
            y[r, n] = acc


@cuda.jit
def onepole_backward(grad_y, a, y, grad_x, grad_a, need_a):  # pragma: no cover - as above
    """The adjoint run backwards in time; grad_a is written only when ``need_a``."""
    r = cuda.grid(1)
    if r < grad_y.shape[0]:
        w = 0.0
        a_next = 0.0  # a[n+1]; zero past the end
        for i in range(grad_y.shape[1]):
            n = grad_y.shape[1] - 1 - i
            w = grad_y[r, n] + a_next * w
            grad_x[r, n] = w
            if need_a:
                grad_a[r, n] = w * y[r, n - 1] if n > 0 else 0.0
            a_next = a[r, n]


ONEPOLE = (onepole_forward, onepole_backward)

# --------------------------------------------------------------------------------------------
# compressor ballistics (smooth branching attack/release one-pole on a gain curve in dB)
# --------------------------------------------------------------------------------------------


@cuda.jit
def ballistics_forward(g, alpha_a, alpha_r, y):  # pragma: no cover - as above
    """g, y ``(rows, samples)``; alpha_a, alpha_r ``(rows,)``; state starts at 0 dB."""
    r = cuda.grid(1)
    if r < g.shape[0]:
        aa = alpha_a[r]
        ar = alpha_r[r]
        state = 0.0
        for n in range(g.shape[1]):
            target = g[r, n]
            alpha = aa if target < state else ar
            state = alpha * state + (1.0 - alpha) * target
            y[r, n] = state


@cuda.jit
def ballistics_backward(grad_y, g, y, alpha_a, alpha_r, grad_g, grad_alpha):  # pragma: no cover
    """grad_alpha ``(rows, 2)`` float64 receives [dL/dalpha_a, dL/dalpha_r] per row."""
    r = cuda.grid(1)
    if r < g.shape[0]:
        aa = alpha_a[r]
        ar = alpha_r[r]
        w = 0.0
        alpha_next = 0.0  # alpha[n+1]; zero past the end
        da = 0.0
        dr = 0.0
        for i in range(g.shape[1]):
            n = g.shape[1] - 1 - i
            prev = y[r, n - 1] if n > 0 else 0.0
            target = g[r, n]
            attack = target < prev
            alpha = aa if attack else ar
            w = grad_y[r, n] + alpha_next * w
            grad_g[r, n] = (1.0 - alpha) * w
            d_alpha = w * (prev - target)
            if attack:
                da += d_alpha
            else:
                dr += d_alpha
            alpha_next = alpha
        grad_alpha[r, 0] = da
        grad_alpha[r, 1] = dr


BALLISTICS = (ballistics_forward, ballistics_backward)
