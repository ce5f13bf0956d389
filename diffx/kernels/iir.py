"""Cascades of second-order IIR sections as one autograd Function.

The recursion of section k, in direct form with a0 = 1,

    v[n] = b0 u[n] + b1 u[n-1] + b2 u[n-2] - a1 v[n-1] - a2 v[n-2],

has an adjoint that is the same all-pole recursion run backwards in time. With g = dL/dv and

    w[n] = g[n] - a1 w[n+1] - a2 w[n+2]            (w = 0 past the end),

the gradients are

    dL/du[n]  = b0 w[n] + b1 w[n+1] + b2 w[n+2]
    dL/db_i   =  sum_n w[n] u[n-i]
    dL/da_i   = -sum_n w[n] v[n-i]

(see e.g. Forgione & Piga, "dynoNet", 2021, and torchlpc's derivation for the all-pole part).
A cascade applies this section by section, last to first.

Three back ends compute the forward cascade and the first-order backward:

- ``"numba"``: compiled CPU loops, one fused pass per section forward and one fused reverse
  pass per section backward (recursion, input gradient and coefficient gradients together);
  rows run in parallel on at most ``torch.get_num_threads()`` threads
  (:mod:`diffx.kernels.threads`).
- ``"scan"``: exact chunked parallel evaluation in plain PyTorch tensor ops (no Python loop
  over samples): per chunk of ``L`` samples the zero-state response is a batched matrix
  product with the truncated impulse response (exact inside a chunk), and the state carried
  between chunks is a linear recurrence solved by a log-depth prefix scan with powers of the
  2x2 state matrix. This is the GPU back end; it also runs on the CPU so the tests check it.
- ``"torch"``: the reference, a plain Python loop over samples. Slow; used by the tests.

When the backward itself must be differentiable (``create_graph=True``, e.g. gradgradcheck or
a Hessian-vector product), the backward is built from this same Function applied to
time-reversed signals plus ordinary tensor ops, so every order of derivative works.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx._validation import wide_dtype
from diffx.kernels.threads import run_rows

BACKENDS = ("auto", "numba", "scan", "torch")

# Chunk length of the "scan" back end. Work per sample grows with L (a dense L x L matrix
# product per chunk) while the prefix scan over chunks shrinks with it; 64 balances the two
# on GPUs where the matrix product is nearly free.
_SCAN_CHUNK = 64  # must be >= 2: a chunk's final state holds its last two outputs


# --------------------------------------------------------------------------------------------
# numba back end
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=False)
def _numba_forward(first_row, end_row, x, sos, ys):  # pragma: no cover - compiled
    """x (R, T); sos (R, K, 5) = [b0, b1, b2, a1, a2]; ys (R, K, T) receives each output.
    Rows ``first_row .. end_row - 1`` only."""
    n_samples = x.shape[1]
    n_sections = sos.shape[1]
    for r in range(first_row, end_row):
        for k in range(n_sections):
            b0 = sos[r, k, 0]
            b1 = sos[r, k, 1]
            b2 = sos[r, k, 2]
            a1 = sos[r, k, 3]
            a2 = sos[r, k, 4]
            # Transposed direct form II, as scipy.signal.sosfilt.
            z1 = 0.0
            z2 = 0.0
            if k == 0:
                for n in range(n_samples):
                    u = x[r, n]
                    v = b0 * u + z1
                    z1 = b1 * u - a1 * v + z2
                    z2 = b2 * u - a2 * v
                    ys[r, k, n] = v
            else:
                for n in range(n_samples):
                    u = ys[r, k - 1, n]
                    v = b0 * u + z1
                    z1 = b1 * u - a1 * v + z2
                    z2 = b2 * u - a2 * v
                    ys[r, k, n] = v


@njit(cache=True, nogil=True, fastmath=False)
def _numba_backward(
    first_row, end_row, grad_y, x, sos, ys, grad_x, grad_sos, need_sos
):  # pragma: no cover - compiled
    """Reverse pass through the cascade, rows ``first_row .. end_row - 1``.

    grad_y (R, T) is dL/d(output); grad_x (R, T) receives dL/dx; grad_sos (R, K, 5) receives
    dL/d[b0, b1, b2, a1, a2]. Coefficient gradients are accumulated in float64.
    """
    n_samples = x.shape[1]
    n_sections = sos.shape[1]
    for r in range(first_row, end_row):
        g = grad_x[r]
        for n in range(n_samples):
            g[n] = grad_y[r, n]
        for k in range(n_sections - 1, -1, -1):
            b0 = sos[r, k, 0]
            b1 = sos[r, k, 1]
            b2 = sos[r, k, 2]
            a1 = sos[r, k, 3]
            a2 = sos[r, k, 4]
            u = x[r] if k == 0 else ys[r, k - 1]
            v = ys[r, k]
            w1 = 0.0  # w[n+1]
            w2 = 0.0  # w[n+2]
            db0 = 0.0
            db1 = 0.0
            db2 = 0.0
            da1 = 0.0
            da2 = 0.0
            for n in range(n_samples - 1, -1, -1):
                w = g[n] - a1 * w1 - a2 * w2
                # g[n] is consumed: overwrite it with dL/du[n] for the next section down.
                g[n] = b0 * w + b1 * w1 + b2 * w2
                if need_sos:
                    db0 += w * u[n]
                    if n >= 1:
                        db1 += w * u[n - 1]
                        da1 -= w * v[n - 1]
                    if n >= 2:
                        db2 += w * u[n - 2]
                        da2 -= w * v[n - 2]
                w2 = w1
                w1 = w
            grad_sos[r, k, 0] = db0
            grad_sos[r, k, 1] = db1
            grad_sos[r, k, 2] = db2
            grad_sos[r, k, 3] = da1
            grad_sos[r, k, 4] = da2


def _forward_numba(x: torch.Tensor, sos: torch.Tensor) -> torch.Tensor:
    x_np = x.detach().contiguous().numpy()
    sos_np = sos.detach().contiguous().numpy()
    ys = np.empty((x.shape[0], sos.shape[1], x.shape[1]), dtype=x_np.dtype)
    run_rows(_numba_forward, x_np.shape[0], x_np.size * sos_np.shape[1], x_np, sos_np, ys)
    return torch.from_numpy(ys)


def _backward_numba(grad_y, x, sos, ys, need_sos):
    grad_np = grad_y.detach().contiguous().numpy()
    x_np = x.detach().contiguous().numpy()
    sos_np = sos.detach().contiguous().numpy()
    ys_np = ys.detach().contiguous().numpy()
    grad_x = np.empty_like(x_np)
    grad_sos = np.zeros(sos_np.shape, dtype=np.float64)
    run_rows(
        _numba_backward,
        x_np.shape[0],
        x_np.size * sos_np.shape[1],
        grad_np,
        x_np,
        sos_np,
        ys_np,
        grad_x,
        grad_sos,
        bool(need_sos),
    )
    return torch.from_numpy(grad_x), torch.from_numpy(grad_sos).to(sos.dtype)


# --------------------------------------------------------------------------------------------
# reference back end (plain loop) and the "scan" back end, both built from one-section steps
# --------------------------------------------------------------------------------------------


def _fir(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b0 u[n] + b1 u[n-1] + b2 u[n-2]; u (R, T), b (R, 3)."""
    return b[:, 0:1] * u + b[:, 1:2] * _shift_forward(u, 1) + b[:, 2:3] * _shift_forward(u, 2)


def _allpole_loop(e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """y[n] = e[n] - a1 y[n-1] - a2 y[n-2], one sample at a time (reference)."""
    n_rows, n_samples = e.shape
    a1, a2 = a[:, 0], a[:, 1]
    y1 = e.new_zeros(n_rows)
    y2 = e.new_zeros(n_rows)
    out = []
    for n in range(n_samples):
        y0 = e[:, n] - a1 * y1 - a2 * y2
        out.append(y0)
        y2, y1 = y1, y0
    return torch.stack(out, dim=1)


def _matrix_powers(m: torch.Tensor, count: int) -> torch.Tensor:
    """[I, M, M^2, ..., M^(count-1)] for m (R, 2, 2), by repeated doubling: (R, count, 2, 2)."""
    eye = torch.eye(2, dtype=m.dtype, device=m.device).expand(m.shape[0], 1, 2, 2)
    powers = eye
    step = m  # M^(len(powers))
    while powers.shape[1] < count:
        powers = torch.cat([powers, step.unsqueeze(1) @ powers], dim=1)
        step = step @ step
    return powers[:, :count]


def _allpole_scan(e: torch.Tensor, a: torch.Tensor, chunk: int = _SCAN_CHUNK) -> torch.Tensor:
    """Exact all-pole recursion by chunked parallel evaluation (see module docstring)."""
    n_rows, n_samples = e.shape
    n_chunks = -(-n_samples // chunk)
    e = torch.nn.functional.pad(e, (0, n_chunks * chunk - n_samples)).reshape(
        n_rows, n_chunks, chunk
    )
    # State s[n] = (y[n], y[n-1]) evolves as s[n] = A s[n-1] + (e[n], 0).
    zero = torch.zeros_like(a[:, 0])
    one = torch.ones_like(a[:, 0])
    a_mat = torch.stack(
        [torch.stack([-a[:, 0], -a[:, 1]], -1), torch.stack([one, zero], -1)], dim=-2
    )
    powers = _matrix_powers(a_mat, chunk + 1)  # A^0 .. A^L
    # Impulse response h[j] = (A^j)[0, 0]; zero-state output of each chunk is a lower
    # triangular Toeplitz product.
    h = powers[:, :chunk, 0, 0]  # (R, L)
    idx = torch.arange(chunk, device=e.device)
    lag = idx[:, None] - idx[None, :]
    toeplitz = torch.where(lag >= 0, h[:, lag.clamp(min=0)], h.new_zeros(()))  # (R, L, L)
    zero_state = e @ toeplitz.transpose(1, 2)  # (R, C, L)
    # Final state of each chunk from zero initial state, then carry states across chunks:
    # S_c = A^L S_{c-1} + Z_c, solved by a Hillis-Steele prefix scan.
    final = torch.stack([zero_state[..., -1], zero_state[..., -2]], dim=-1)  # (R, C, 2)
    step = powers[:, chunk]  # A^L (R, 2, 2)
    carried = final
    shift = 1
    while shift < n_chunks:
        moved = torch.nn.functional.pad(carried[:, :-shift], (0, 0, shift, 0))
        carried = carried + (step.unsqueeze(1) @ moved.unsqueeze(-1)).squeeze(-1)
        step = step @ step
        shift *= 2
    initial = torch.nn.functional.pad(carried[:, :-1], (0, 0, 1, 0))  # state entering chunk c
    # Homogeneous response inside a chunk to initial state s: y[j] = (A^(j+1) s)[0].
    basis = powers[:, 1 : chunk + 1, 0, :]  # (R, L, 2)
    y = zero_state + initial @ basis.transpose(1, 2)
    return y.reshape(n_rows, n_chunks * chunk)[:, :n_samples]


def _forward_sections(x: torch.Tensor, sos: torch.Tensor, allpole) -> torch.Tensor:
    outs = []
    u = x
    for k in range(sos.shape[1]):
        u = allpole(_fir(u, sos[:, k, :3]), sos[:, k, 3:])
        outs.append(u)
    return torch.stack(outs, dim=1)


def _shift_back(w: torch.Tensor, lag: int) -> torch.Tensor:
    """w[n + lag] with zeros past the end (any length, including shorter than lag)."""
    return torch.nn.functional.pad(w, (0, lag))[:, lag:]


def _shift_forward(u: torch.Tensor, lag: int) -> torch.Tensor:
    """u[n - lag] with zeros before the start (any length, including shorter than lag)."""
    return torch.nn.functional.pad(u, (lag, 0))[:, : u.shape[1]]


def _backward_sections(grad_y, x, sos, ys, need_sos, reverse_allpole):
    """Adjoint of the cascade with tensor ops; ``reverse_allpole(g, a)`` runs w backwards."""
    g = grad_y
    grads = []
    for k in range(sos.shape[1] - 1, -1, -1):
        u = x if k == 0 else ys[:, k - 1]
        v = ys[:, k]
        b = sos[:, k, :3]
        w = reverse_allpole(g, sos[:, k, 3:])
        w1 = _shift_back(w, 1)
        w2 = _shift_back(w, 2)
        if need_sos:
            grads.append(
                torch.stack(
                    [
                        (w * u).sum(-1),
                        (w * _shift_forward(u, 1)).sum(-1),
                        (w * _shift_forward(u, 2)).sum(-1),
                        -(w * _shift_forward(v, 1)).sum(-1),
                        -(w * _shift_forward(v, 2)).sum(-1),
                    ],
                    dim=-1,
                )
            )
        g = b[:, 0:1] * w + b[:, 1:2] * w1 + b[:, 2:3] * w2
    grad_sos = torch.stack(grads[::-1], dim=1) if need_sos else None
    return g, grad_sos


# --------------------------------------------------------------------------------------------
# dispatch and the autograd Function
# --------------------------------------------------------------------------------------------


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Pick the back end: numba for CPU tensors, the parallel scan elsewhere (CUDA)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "numba" if x.device.type == "cpu" else "scan"
    if backend == "numba" and x.device.type != "cpu":
        raise ValueError("backend='numba' runs on CPU tensors only; use 'scan' or 'auto'")
    return backend


def _forward(x, sos, backend):
    if backend == "numba":
        return _forward_numba(x, sos)
    allpole = _allpole_loop if backend == "torch" else _allpole_scan
    # The tensor back ends compute in float64: in float32 the chunk states of the scan lose
    # all accuracy for poles near z = 1 (low shelves, low-frequency resonances), where the
    # state (y[n], y[n-1]) is large and nearly degenerate.
    wide = wide_dtype(x.device, f"the {backend!r} IIR back end's filter states")
    return _forward_sections(x.to(wide), sos.to(wide), allpole).to(x.dtype)


class _SosCascade(torch.autograd.Function):
    """Cascade of sections: x (R, T), sos (R, K, 5) -> output of the last section (R, T)."""

    @staticmethod
    def forward(ctx, x, sos, backend):
        with torch.no_grad():
            ys = _forward(x, sos, backend)
        ctx.backend = backend
        # Intermediate section outputs are needed by the coefficient gradients. They are
        # kept on ctx (not returned), and the output is a copy so in-place edits by the
        # caller cannot corrupt them.
        ctx.ys = ys
        ctx.save_for_backward(x, sos)
        return ys[:, -1].clone()

    @staticmethod
    def backward(ctx, grad_y):
        x, sos = ctx.saved_tensors
        ys = ctx.ys
        need_x, need_sos = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            grad_x, grad_sos = _differentiable_backward(grad_y, x, sos, need_sos, ctx.backend)
        elif ctx.backend == "numba":
            grad_x, grad_sos = _backward_numba(grad_y, x, sos, ys, need_sos)
        else:
            allpole = _allpole_loop if ctx.backend == "torch" else _allpole_scan

            def reverse(g, a):
                return allpole(g.flip(-1), a).flip(-1)

            wide = wide_dtype(x.device, f"the {ctx.backend!r} IIR back end's filter states")
            grad_x, grad_sos = _backward_sections(
                grad_y.to(wide), x.to(wide), sos.to(wide), ys.to(wide), need_sos, reverse
            )
            grad_x = grad_x.to(x.dtype)
            grad_sos = grad_sos.to(sos.dtype) if need_sos else None
        return (grad_x if need_x else None), (grad_sos if need_sos else None), None


def _differentiable_backward(grad_y, x, sos, need_sos, backend):
    """Backward from differentiable pieces (this Function and tensor ops), for create_graph."""
    # One dtype throughout (the numba path may hold float64 coefficients for float32 audio).
    sos = sos.to(x.dtype)
    impulse_b = torch.zeros_like(sos[:, :1, :3])
    impulse_b[..., 0] = 1.0

    def reverse(g, a):
        allpole_sos = torch.cat([impulse_b, a.unsqueeze(1)], dim=-1)
        return _SosCascade.apply(g.flip(-1).contiguous(), allpole_sos, backend).flip(-1)

    # Recompute each section's output through the Function, so the values used by the
    # coefficient gradients carry the graph back to x and sos.
    inputs = [x]
    for k in range(sos.shape[1]):
        inputs.append(_SosCascade.apply(inputs[-1], sos[:, k : k + 1].contiguous(), backend))
    g = grad_y
    grads = []
    for k in range(sos.shape[1] - 1, -1, -1):
        g, gs = _backward_sections(
            g, inputs[k], sos[:, k : k + 1], inputs[k + 1].unsqueeze(1), need_sos, reverse
        )
        grads.append(gs)
    grad_sos = torch.cat(grads[::-1], dim=1) if need_sos else None
    return g, grad_sos


def sos_cascade(x: torch.Tensor, sos: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Filter rows of ``x`` through a cascade of normalized second-order sections.

    Args:
        x: ``(rows, samples)`` signal.
        sos: ``(rows, n_sections, 5)`` coefficients ``[b0, b1, b2, a1, a2]`` with a0 = 1; the
            ``numba`` back end also takes float64 coefficients with float32 ``x`` (it computes
            in float64 and stores float32).
        backend: ``"auto"`` (numba on CPU, scan on CUDA), ``"numba"``, ``"scan"``, ``"torch"``.

    Returns:
        ``(rows, samples)`` output of the last section. Differentiable in ``x`` and ``sos`` to
        any order.
    """
    backend = resolve_backend(backend, x)
    return _SosCascade.apply(x, sos, backend)
