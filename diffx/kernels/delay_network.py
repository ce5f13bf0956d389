"""Feedback delay networks (FDN) as one autograd Function: exact time-domain recursion.

A network of ``N`` delay lines, computed per row (one row = one mono signal):

    s_i[n] = (1 - f_i) v_i[n - m_i] + f_i v_i[n - m_i - 1]      read of line i (m_i >= 1)
    u_i[n] = H_i(s_i)[n]                                          loop filter of line i
    v_i[n] = b_i x[n] + sum_j A_ij u_j[n]                         write into line i
    y_p[n] = sum_i c_pi u_i[n]                                    output channel p

with ``H_i`` a cascade of second-order sections. The read interpolates linearly between two
taps, so a line's delay ``m_i + f_i`` is fractional and differentiable in ``f_i``; its
magnitude response ``|(1 - f) + f e^{-jw}|`` never exceeds 1, so a loop whose filters and
mixing matrix have gain at most 1 stays stable for every fraction. A one-line network is an
echo (feedback delay); with ``A`` orthogonal and ``H_i`` the absorption filters of Jot &
Chaigne (1991) it is an FDN reverb. The network is linear and time-invariant; ``y`` is exact
(no truncated impulse response).

The adjoint is the same network run backwards in time with transposed connections. Going from
the last sample to the first, with ``gv_i[n]`` the gradient reaching the write ``v_i[n]``
(complete at step ``n`` because every read of ``v_i[n]`` happens later, ``m_i >= 1``):

    gu_j[n] = sum_p c_pj gy_p[n] + sum_i A_ij gv_i[n]
    gs_j[n] = adjoint of H_j's cascade at n (the reversed recursion of
              :mod:`diffx.kernels.iir`, one sample at a time)
    gv_j[n - m_j] += (1 - f_j) gs_j[n],   gv_j[n - m_j - 1] += f_j gs_j[n]
    dL/dx[n] = sum_i b_i gv_i[n],  dL/db_i += gv_i x,  dL/dA_ij += gv_i u_j,
    dL/dc_pj += gy_p u_j,  dL/df_j += gs_j (v_j[n - m_j - 1] - v_j[n - m_j])

plus the coefficient gradients of each section as in ``iir.py``.

Two back ends:

- ``"numba"``: one compiled forward loop and one fused reverse loop per row, rows in parallel
  (:func:`diffx.kernels.threads.run_rows`). CPU only.
- ``"blocks"``: plain PyTorch tensor ops, differentiable by autograd, for CUDA and for
  derivatives of second order. The signal is cut into blocks no longer than the shortest
  delay, so every read a block makes was written by earlier blocks; a block's loop filters
  run through :func:`diffx.kernels.iir.sos_cascade` (numba on CPU, its parallel scan on CUDA)
  with the filter state carried across blocks as an injected input (direct form I: the
  previous block's last two section inputs and outputs).

When the backward itself must be differentiable (``create_graph=True``), the numba Function
recomputes the forward with the ``"blocks"`` back end and differentiates that, so every order
of derivative works.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx._validation import wide_dtype
from diffx.kernels.iir import sos_cascade
from diffx.kernels.threads import run_rows

BACKENDS = ("auto", "numba", "blocks")


# --------------------------------------------------------------------------------------------
# numba back end
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, fastmath=False)
def _read(v, r, i, n, m, f):  # pragma: no cover - compiled
    """The interpolated read s_i[n] of line i (zero before the line has been written)."""
    j0 = n - m[r, i]
    s = 0.0
    if j0 >= 0:
        s += (1.0 - f[r, i]) * v[r, i, j0]
    if j0 >= 1:
        s += f[r, i] * v[r, i, j0 - 1]
    return s


@njit(cache=True, nogil=True, fastmath=False)
def _numba_forward(first_row, end_row, x, b, c, a, m, f, sos, v, ys, y):  # pragma: no cover
    """x (R, T); b (R, N); c (R, P, N); a (R, N, N); m (R, N) int64; f (R, N);
    sos (R, N, K, 5). Writes v (R, N, T), ys (R, N, K, T) (section outputs), y (R, P, T)."""
    n_samples = x.shape[1]
    n_lines = b.shape[1]
    n_out = c.shape[1]
    n_sections = sos.shape[2]
    for r in range(first_row, end_row):
        z1 = np.zeros((n_lines, n_sections))
        z2 = np.zeros((n_lines, n_sections))
        u = np.zeros(n_lines)
        for n in range(n_samples):
            for i in range(n_lines):
                s = _read(v, r, i, n, m, f)
                for k in range(n_sections):
                    # Transposed direct form II, as scipy.signal.sosfilt.
                    out = sos[r, i, k, 0] * s + z1[i, k]
                    z1[i, k] = sos[r, i, k, 1] * s - sos[r, i, k, 3] * out + z2[i, k]
                    z2[i, k] = sos[r, i, k, 2] * s - sos[r, i, k, 4] * out
                    ys[r, i, k, n] = out
                    s = out
                u[i] = s
            xn = x[r, n]
            for i in range(n_lines):
                acc = b[r, i] * xn
                for j in range(n_lines):
                    acc += a[r, i, j] * u[j]
                v[r, i, n] = acc
            for p in range(n_out):
                acc = 0.0
                for i in range(n_lines):
                    acc += c[r, p, i] * u[i]
                y[r, p, n] = acc


@njit(cache=True, nogil=True, fastmath=False)
def _numba_backward(
    first_row, end_row, gy, x, b, c, a, m, f, sos, v, ys, gx, gb, gc, ga, gf, gsos
):  # pragma: no cover - compiled
    """Reverse pass (see the module docstring); gradients of the parameters in float64."""
    n_samples = x.shape[1]
    n_lines = b.shape[1]
    n_out = c.shape[1]
    n_sections = sos.shape[2]
    last = n_sections - 1
    for r in range(first_row, end_row):
        gv = np.zeros((n_lines, n_samples))
        w1 = np.zeros((n_lines, n_sections))  # adjoint state w[n+1] of each section
        w2 = np.zeros((n_lines, n_sections))  # w[n+2]
        # The reads s_j[n], s_j[n-1], s_j[n-2] (the first section's inputs), rolled down one
        # sample per step so that each read is interpolated once.
        rd0 = np.zeros(n_lines)
        rd1 = np.zeros(n_lines)
        rd2 = np.zeros(n_lines)
        # Parameter gradients of this row, accumulated locally and stored once at the end.
        lgb = np.zeros(n_lines)
        lgc = np.zeros((n_out, n_lines))
        lga = np.zeros((n_lines, n_lines))
        lgf = np.zeros(n_lines)
        lgs = np.zeros((n_lines, n_sections, 5))
        end = n_samples - 1
        for j in range(n_lines):
            rd0[j] = _read(v, r, j, end, m, f)
            rd1[j] = _read(v, r, j, end - 1, m, f) if end >= 1 else 0.0
            rd2[j] = _read(v, r, j, end - 2, m, f) if end >= 2 else 0.0
        for n in range(n_samples - 1, -1, -1):
            xn = x[r, n]
            acc = 0.0
            for i in range(n_lines):
                acc += b[r, i] * gv[i, n]
                lgb[i] += gv[i, n] * xn
            gx[r, n] = acc
            for j in range(n_lines):
                uj = ys[r, j, last, n]
                g = 0.0
                for p in range(n_out):
                    g += c[r, p, j] * gy[r, p, n]
                    lgc[p, j] += gy[r, p, n] * uj
                for i in range(n_lines):
                    g += a[r, i, j] * gv[i, n]
                    lga[i, j] += gv[i, n] * uj
                for k in range(last, -1, -1):
                    b0 = sos[r, j, k, 0]
                    b1 = sos[r, j, k, 1]
                    b2 = sos[r, j, k, 2]
                    a1 = sos[r, j, k, 3]
                    a2 = sos[r, j, k, 4]
                    w = g - a1 * w1[j, k] - a2 * w2[j, k]
                    g = b0 * w + b1 * w1[j, k] + b2 * w2[j, k]
                    # Section input at n, n-1, n-2 and output at n-1, n-2.
                    if k == 0:
                        in0 = rd0[j]
                        in1 = rd1[j]
                        in2 = rd2[j]
                    else:
                        in0 = ys[r, j, k - 1, n]
                        in1 = ys[r, j, k - 1, n - 1] if n >= 1 else 0.0
                        in2 = ys[r, j, k - 1, n - 2] if n >= 2 else 0.0
                    out1 = ys[r, j, k, n - 1] if n >= 1 else 0.0
                    out2 = ys[r, j, k, n - 2] if n >= 2 else 0.0
                    lgs[j, k, 0] += w * in0
                    lgs[j, k, 1] += w * in1
                    lgs[j, k, 2] += w * in2
                    lgs[j, k, 3] -= w * out1
                    lgs[j, k, 4] -= w * out2
                    w2[j, k] = w1[j, k]
                    w1[j, k] = w
                # g is now dL/ds_j[n]: spread it onto the two taps that were read.
                j0 = n - m[r, j]
                tap0 = 0.0
                tap1 = 0.0
                if j0 >= 0:
                    gv[j, j0] += (1.0 - f[r, j]) * g
                    tap0 = v[r, j, j0]
                if j0 >= 1:
                    gv[j, j0 - 1] += f[r, j] * g
                    tap1 = v[r, j, j0 - 1]
                lgf[j] += g * (tap1 - tap0)
                rd0[j] = rd1[j]
                rd1[j] = rd2[j]
                rd2[j] = _read(v, r, j, n - 3, m, f) if n >= 3 else 0.0
        gb[r] = lgb
        gc[r] = lgc
        ga[r] = lga
        gf[r] = lgf
        gsos[r] = lgs


def _np(t: torch.Tensor, dtype=None) -> np.ndarray:
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.contiguous().numpy()


def _forward_numba(x, b, c, a, m, f, sos):
    """Run the compiled forward; returns (y, v, ys) as tensors of x's dtype."""
    R, T = x.shape
    N, P, K = b.shape[1], c.shape[1], sos.shape[2]
    x_np = _np(x)
    v = np.empty((R, N, T), dtype=x_np.dtype)
    ys = np.empty((R, N, K, T), dtype=x_np.dtype)
    y = np.empty((R, P, T), dtype=x_np.dtype)
    f64 = torch.float64
    run_rows(_numba_forward, R, R * T * N, x_np, _np(b, f64), _np(c, f64), _np(a, f64),
             _np(m), _np(f, f64), _np(sos, f64), v, ys, y)  # fmt: skip
    return torch.from_numpy(y), torch.from_numpy(v), torch.from_numpy(ys)


def _backward_numba(gy, x, b, c, a, m, f, sos, v, ys):
    R, T = x.shape
    f64 = torch.float64
    x_np = _np(x)
    gx = np.empty_like(x_np)
    grads = [np.zeros(tuple(t.shape), dtype=np.float64) for t in (b, c, a, f, sos)]
    run_rows(_numba_backward, R, R * T * b.shape[1], _np(gy, x.dtype), x_np, _np(b, f64),
             _np(c, f64), _np(a, f64), _np(m), _np(f, f64), _np(sos, f64), _np(v), _np(ys),
             gx, *grads)  # fmt: skip
    gb, gc, ga, gf, gsos = (torch.from_numpy(g) for g in grads)
    return torch.from_numpy(gx), gb, gc, ga, gf, gsos


# --------------------------------------------------------------------------------------------
# "blocks" back end: tensor ops, differentiable by autograd
# --------------------------------------------------------------------------------------------


def _forward_blocks(x, b, c, a, m, f, sos, filter_backend=None):
    """The network block by block (see the module docstring); differentiable by autograd.

    ``filter_backend``: the :func:`sos_cascade` back end of the loop filters (default numba
    on the CPU, the parallel scan elsewhere; the tests run the scan on the CPU too)."""
    R, T = x.shape
    N, K = b.shape[1], sos.shape[2]
    dtype = x.dtype
    # Work in float64 (states of filters with poles near z = 1), output in x's dtype.
    wide = wide_dtype(x.device, "the delay network's 'blocks' back end")
    x, b, c, a, f, sos = (t.to(wide) for t in (x, b, c, a, f, sos))
    m_cpu = m.detach().cpu()
    block = int(m_cpu.min())  # every read of a block lies before the block
    history = int(m_cpu.max()) + 1  # samples of v a block may read, counting back from it
    flat_sos = sos.reshape(R * N, K, 5)
    # All-pole sections [1, 0, 0, a1, a2]: the numerator is applied as an FIR with history.
    allpole = torch.cat([torch.ones_like(flat_sos[..., :1]), torch.zeros_like(flat_sos[..., :2]),
                         flat_sos[..., 3:]], dim=-1)  # fmt: skip
    num = flat_sos[..., :3]
    a1, a2 = flat_sos[..., 3], flat_sos[..., 4]
    backend = filter_backend or ("numba" if x.device.type == "cpu" else "scan")
    zeros2 = x.new_zeros(R * N, 2)
    # Per section: its last two inputs and outputs, oldest first.
    in_tail = [zeros2] * K
    out_tail = [zeros2] * K
    v_past = x.new_zeros(R, N, history + 1)  # v at times start-history-1 .. start-1
    outs = []
    for start in range(0, T, block):
        length = min(block, T - start)
        # Read s[n] = (1 - f) v[n - m] + f v[n - m - 1] for n in [start, start + length).
        pos = torch.arange(length, device=x.device)
        idx0 = (history + 1 + pos)[None, None, :] - m[:, :, None]  # index of v[n - m]
        tap0 = v_past.gather(2, idx0)
        tap1 = v_past.gather(2, idx0 - 1)
        s = (1.0 - f)[..., None] * tap0 + f[..., None] * tap1  # (R, N, length)
        u = s.reshape(R * N, length)
        for k in range(K):
            ext = torch.cat([in_tail[k], u], dim=-1)  # inputs from n - 2
            e = (num[:, k, 0:1] * ext[:, 2:] + num[:, k, 1:2] * ext[:, 1:-1]
                 + num[:, k, 2:3] * ext[:, :-2])  # fmt: skip
            # Initial conditions y[-1], y[-2] of the all-pole recursion as injected input.
            y1, y2 = out_tail[k][:, 1], out_tail[k][:, 0]
            inject = torch.stack([-a1[:, k] * y1 - a2[:, k] * y2, -a2[:, k] * y1], dim=-1)
            inject = inject[:, : min(2, length)]
            e = torch.cat([e[:, : inject.shape[1]] + inject, e[:, inject.shape[1]:]], dim=-1)
            out = sos_cascade(e.contiguous(), allpole[:, k : k + 1].contiguous(), backend)
            in_tail[k] = ext[:, -2:]
            out_tail[k] = torch.cat([out_tail[k], out], dim=-1)[:, -2:]
            u = out
        u = u.reshape(R, N, length)
        v_block = b[..., None] * x[:, None, start : start + length] + a @ u
        v_past = torch.cat([v_past, v_block], dim=-1)[:, :, -(history + 1):]
        outs.append(c @ u)
    return torch.cat(outs, dim=-1).to(dtype)


# --------------------------------------------------------------------------------------------
# dispatch and the autograd Function
# --------------------------------------------------------------------------------------------


class _DelayNetwork(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, c, a, m, f, sos):
        y, v, ys = _forward_numba(x, b, c, a, m, f, sos)
        ctx.save_for_backward(x, b, c, a, m, f, sos)
        ctx.v, ctx.ys = v, ys
        return y

    @staticmethod
    def backward(ctx, gy):
        x, b, c, a, m, f, sos = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph: differentiate a recomputation by the differentiable back end.
            inputs = {0: x, 1: b, 2: c, 3: a, 5: f, 6: sos}
            wanted = [i for i in inputs if needs[i]]
            with torch.enable_grad():
                y = _forward_blocks(x, b, c, a, m, f, sos)
                grads = torch.autograd.grad(
                    y, [inputs[i] for i in wanted], gy, create_graph=True, allow_unused=True
                )
            out = [None] * 7
            for i, g in zip(wanted, grads):
                out[i] = torch.zeros_like(inputs[i]) if g is None else g
            return tuple(out)
        gx, gb, gc, ga, gf, gsos = _backward_numba(gy, x, b, c, a, m, f, sos, ctx.v, ctx.ys)
        result = (gx, gb.to(b.dtype), gc.to(c.dtype), ga.to(a.dtype), None, gf.to(f.dtype),
                  gsos.to(sos.dtype))  # fmt: skip
        return tuple(g if need else None for g, need in zip(result, needs))


def delay_network(
    x: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    a: torch.Tensor,
    delays: torch.Tensor,
    frac: torch.Tensor,
    sos: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Run rows of ``x`` through feedback delay networks (see the module docstring).

    Args:
        x: ``(rows, samples)`` input.
        b: ``(rows, N)`` input gains.
        c: ``(rows, P, N)`` output gains of ``P`` output channels.
        a: ``(rows, N, N)`` feedback (mixing) matrix.
        delays: ``(rows, N)`` integer parts ``m_i >= 1`` of the delays (samples, int64).
        frac: ``(rows, N)`` fractional parts ``f_i`` in [0, 1).
        sos: ``(rows, N, K, 5)`` loop filter of each line, ``K >= 1`` sections
            ``[b0, b1, b2, a1, a2]`` (a0 = 1).
        backend: ``"auto"`` (numba on CPU, blocks elsewhere), ``"numba"`` or ``"blocks"``.

    Returns:
        ``(rows, P, samples)`` outputs, zero initial state, in ``x``'s dtype. Differentiable
        in ``x``, ``b``, ``c``, ``a``, ``frac`` and ``sos`` (any order); not in ``delays``.
        The caller guarantees the shapes and ``delays >= 1``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "numba" if x.device.type == "cpu" else "blocks"
    if backend == "numba" and x.device.type != "cpu":
        raise ValueError("backend='numba' runs on CPU tensors only; use 'blocks' or 'auto'")
    # The parameters keep their dtype (the kernel computes in float64 whatever it is; filter
    # designs near z = 1 must not be rounded to float32 first).
    return (_forward_blocks if backend == "blocks" else _DelayNetwork.apply)(
        x, b, c, a, delays.to(torch.int64), frac, sos
    )
