"""Attack/release smoothing of a gain curve in dB (compressor ballistics) as an autograd Function.

This is the "smooth branching" peak detector of Giannoulis, Massberg & Reiss, "Digital Dynamic
Range Compressor Design - A Tutorial and Analysis", JAES 60(6), 2012 (eq. 17), applied to the
gain computer's output in dB (their "log domain" placement, Fig. 7(c)):

    alpha[n] = alpha_a   if g[n] < y[n-1]    (more gain reduction wanted: attack)
               alpha_r   otherwise           (release)
    y[n]     = alpha[n] y[n-1] + (1 - alpha[n]) g[n]

Initial state: ``y[-1] = 0 dB``, i.e. the compressor starts with no gain reduction, as a real
compressor that has been fed silence. A loud onset at ``n = 0`` is therefore attacked like any
other onset rather than being already compressed.

Gradients treat the branch choice as fixed (it is piecewise constant in the inputs, so this is
the derivative almost everywhere; torchcomp does the same). With the branch fixed the recursion
is a time-varying one-pole, whose adjoint with ``G = dL/dy`` is

    w[n]         = G[n] + alpha[n+1] w[n+1]           (w[T] = 0)
    dL/dg[n]     = (1 - alpha[n]) w[n]
    dL/dalpha[n] = w[n] (y[n-1] - g[n])

and ``dL/dalpha_a`` (``dL/dalpha_r``) sums ``dL/dalpha[n]`` over the attack (release) samples.
The branch mask is recomputed in the backward from the saved input and output, so the forward
stores nothing beyond its output.

Back ends: ``"numba"`` (CPU, rows in parallel, one forward pass and one fused reverse pass that
also accumulates the coefficient gradients), ``"cuda"`` (numba.cuda, one thread per row,
:mod:`diffx.kernels.cuda_kernels`, loaded on first use; falls back to the reference loop with a
warning if numba's CUDA support is missing; under numba's CUDA simulator it takes CPU tensors,
for the tests) and ``"torch"`` (the reference loop). Under ``create_graph=True`` the backward is
built from :func:`diffx.kernels.onepole.onepole` and tensor ops, so every order of derivative
works.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx.kernels.cuda_launch import CudaKernels
from diffx.kernels.onepole import (
    BACKENDS,  # noqa: F401  (re-exported: same back ends)
    _OnePole,
    resolve_backend,
)
from diffx.kernels.threads import run_rows

# --------------------------------------------------------------------------------------------
# numba CPU back end
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _numba_forward(first_row, end_row, g, alpha_a, alpha_r, y):  # pragma: no cover - compiled
    n_samples = g.shape[1]
    for r in range(first_row, end_row):
        aa = alpha_a[r]
        ar = alpha_r[r]
        state = 0.0
        for n in range(n_samples):
            target = g[r, n]
            alpha = aa if target < state else ar
            state = alpha * state + (1.0 - alpha) * target
            y[r, n] = state


@njit(cache=True, nogil=True)
def _numba_backward(
    first_row, end_row, grad_y, g, y, alpha_a, alpha_r, grad_g, grad_alpha
):  # pragma: no cover - compiled
    """grad_alpha (R, 2) receives [dL/dalpha_a, dL/dalpha_r], accumulated in float64."""
    n_samples = g.shape[1]
    for r in range(first_row, end_row):
        aa = alpha_a[r]
        ar = alpha_r[r]
        w = 0.0
        alpha_next = 0.0  # alpha[n+1]; zero past the end
        da = 0.0
        dr = 0.0
        for n in range(n_samples - 1, -1, -1):
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


def _forward_numba(g, alpha_a, alpha_r):
    g_np = g.detach().contiguous().numpy()
    y = np.empty_like(g_np)
    run_rows(
        _numba_forward,
        g_np.shape[0],
        g_np.size,
        g_np,
        alpha_a.detach().contiguous().numpy(),
        alpha_r.detach().contiguous().numpy(),
        y,
    )
    return torch.from_numpy(y)


def _backward_numba(grad_y, g, y, alpha_a, alpha_r):
    g_np = g.detach().contiguous().numpy()
    grad_g = np.empty_like(g_np)
    grad_alpha = np.empty((g_np.shape[0], 2), dtype=np.float64)
    run_rows(
        _numba_backward,
        g_np.shape[0],
        g_np.size,
        grad_y.detach().contiguous().numpy(),
        g_np,
        y.detach().contiguous().numpy(),
        alpha_a.detach().contiguous().numpy(),
        alpha_r.detach().contiguous().numpy(),
        grad_g,
        grad_alpha,
    )
    grad_alpha = torch.from_numpy(grad_alpha).to(g.dtype)
    return torch.from_numpy(grad_g), grad_alpha[:, 0], grad_alpha[:, 1]


# --------------------------------------------------------------------------------------------
# CUDA back end (numba.cuda, one thread per row), loaded on first use
# --------------------------------------------------------------------------------------------

# The kernels themselves are in diffx.kernels.cuda_kernels (BALLISTICS).
_CUDA = CudaKernels("BALLISTICS", "compressor ballistics")


def _forward_cuda(g, alpha_a, alpha_r):
    g = g.detach().contiguous()
    y = torch.empty_like(g)
    aa, ar = alpha_a.detach().contiguous(), alpha_r.detach().contiguous()
    if not _CUDA.launch(0, g.shape[0], g, aa, ar, y):
        return _forward_torch(g, alpha_a, alpha_r)
    return y


def _backward_cuda(grad_y, g, y, alpha_a, alpha_r):
    g = g.detach().contiguous()
    grad_g = torch.empty_like(g)
    # Per-row sums of up to millions of products are accumulated in float64, as on the CPU.
    # Only CUDA tensors (or CPU ones in the simulator) reach this back end, and both have
    # float64; devices without it never get here (resolve_backend).
    grad_alpha = torch.empty(g.shape[0], 2, dtype=torch.float64, device=g.device)
    launched = _CUDA.launch(
        1,
        g.shape[0],
        grad_y.detach().contiguous(),
        g,
        y.detach().contiguous(),
        alpha_a.detach().contiguous(),
        alpha_r.detach().contiguous(),
        grad_g,
        grad_alpha,
    )
    if not launched:
        return _backward_torch(grad_y, g, y, alpha_a, alpha_r)
    grad_alpha = grad_alpha.to(g.dtype)
    return grad_g, grad_alpha[:, 0], grad_alpha[:, 1]


# --------------------------------------------------------------------------------------------
# reference back end and the tensor-op backward
# --------------------------------------------------------------------------------------------


def _forward_torch(g, alpha_a, alpha_r):
    state = g.new_zeros(g.shape[0])
    out = []
    for n in range(g.shape[1]):
        target = g[:, n]
        alpha = torch.where(target < state, alpha_a, alpha_r)
        state = alpha * state + (1.0 - alpha) * target
        out.append(state)
    return torch.stack(out, dim=1)


def _shift_forward(u):
    """u[n-1] with a zero (the 0 dB initial state) before the start."""
    return torch.nn.functional.pad(u, (1, 0))[:, : u.shape[1]]


def _shift_back(u):
    """u[n+1] with a zero past the end."""
    return torch.nn.functional.pad(u, (0, 1))[:, 1:]


def _tensor_backward(grad_y, g, y, alpha_a, alpha_r, onepole_backend):
    """Adjoint from tensor ops and the one-pole Function (differentiable when grad is on)."""
    prev = _shift_forward(y)
    attack = (g < prev).detach()
    alpha = torch.where(attack, alpha_a[:, None], alpha_r[:, None])
    w = _OnePole.apply(
        grad_y.flip(-1).contiguous(), _shift_back(alpha).flip(-1).contiguous(), onepole_backend
    ).flip(-1)
    grad_g = (1.0 - alpha) * w
    d_alpha = w * (prev - g)
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    grad_a = torch.where(attack, d_alpha, zero).sum(-1)
    grad_r = torch.where(attack, zero, d_alpha).sum(-1)
    return grad_g, grad_a, grad_r


def _backward_torch(grad_y, g, y, alpha_a, alpha_r):
    return _tensor_backward(grad_y, g, y, alpha_a, alpha_r, "torch")


# --------------------------------------------------------------------------------------------
# dispatch and the autograd Function
# --------------------------------------------------------------------------------------------

_FORWARD = {"numba": _forward_numba, "cuda": _forward_cuda, "torch": _forward_torch}
_BACKWARD = {"numba": _backward_numba, "cuda": _backward_cuda, "torch": _backward_torch}


class _AttackRelease(torch.autograd.Function):
    """Smooth-branching ballistics over the last axis: g (R, T), alpha_a/alpha_r (R,)."""

    @staticmethod
    def forward(g, alpha_a, alpha_r, backend):
        with torch.no_grad():
            return _FORWARD[backend](g, alpha_a, alpha_r)

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, alpha_a, alpha_r, backend = inputs
        ctx.backend = backend
        ctx.save_for_backward(g, alpha_a, alpha_r, output)

    @staticmethod
    def backward(ctx, grad_y):
        g, alpha_a, alpha_r, y = ctx.saved_tensors
        need_g, need_a, need_r = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            grad_g, grad_a, grad_r = _tensor_backward(grad_y, g, y, alpha_a, alpha_r, ctx.backend)
        else:
            grad_g, grad_a, grad_r = _BACKWARD[ctx.backend](grad_y, g, y, alpha_a, alpha_r)
        return (
            grad_g if need_g else None,
            grad_a if need_a else None,
            grad_r if need_r else None,
            None,
        )


def attack_release(
    gain_db: torch.Tensor,
    alpha_attack: torch.Tensor,
    alpha_release: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """Smooth a gain curve in dB with separate attack and release one-pole coefficients.

    Attack (``alpha_attack``) applies while the target gain is below the smoothed gain (gain
    reduction increasing), release (``alpha_release``) otherwise. The smoothed gain starts at
    0 dB (no gain reduction). See the module docstring for the recursion and its gradient.

    Args:
        gain_db: ``(rows, samples)`` target gain in dB.
        alpha_attack: ``(rows,)`` attack pole in [0, 1) (0 = instant, near 1 = slow).
        alpha_release: ``(rows,)`` release pole in [0, 1).
        backend: ``"auto"`` (numba on CPU, numba.cuda on CUDA), ``"numba"``, ``"cuda"``,
            ``"torch"`` (reference loop).

    Returns:
        ``(rows, samples)`` smoothed gain in dB. Differentiable in all three tensors to any
        order (the attack/release branch is held fixed).
    """
    if gain_db.dim() != 2:
        raise ValueError(
            f"gain_db must be shaped (rows, samples), got shape {tuple(gain_db.shape)}"
        )
    rows = gain_db.shape[0]
    for name, alpha in (("alpha_attack", alpha_attack), ("alpha_release", alpha_release)):
        if alpha.shape != (rows,):
            raise ValueError(f"{name} must be shaped (rows,) = ({rows},), got {tuple(alpha.shape)}")
        if alpha.dtype != gain_db.dtype or alpha.device != gain_db.device:
            raise ValueError(
                f"{name} must have gain_db's dtype and device ({gain_db.dtype}, "
                f"{gain_db.device}), got ({alpha.dtype}, {alpha.device})"
            )
    backend = resolve_backend(backend, gain_db)
    return _AttackRelease.apply(
        gain_db.contiguous(), alpha_attack.contiguous(), alpha_release.contiguous(), backend
    )
