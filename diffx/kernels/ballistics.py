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


# ============================================================================================
# Ballistics with hold (noise gates)
# ============================================================================================
#
# The recursion of attack_release, with one more state: a counter of samples since ``open`` was
# last true. Release (the branch ``g[n] >= y[n-1]``) is replaced by a hold, ``y[n] = y[n-1]``,
# while that counter is at most ``hold`` samples:
#
#     since[n] = 0 if open[n] else since[n-1] + 1          (since[-1] = hold + 1: no hold yet)
#     attack   if g[n] <  y[n-1]:                 y[n] = alpha_a y[n-1] + (1 - alpha_a) g[n]
#     hold     if g[n] >= y[n-1], since[n] <= hold:  y[n] = y[n-1]
#     release  otherwise:                         y[n] = alpha_r y[n-1] + (1 - alpha_r) g[n]
#
# The forward also writes the branch taken at each sample (BRANCH_* codes, int8). Gradients hold
# the branch pattern fixed, as attack_release does, so the recursion is a time-varying one-pole
# with alpha[n] = alpha_a, alpha_r or 1 (hold) and the same adjoint,
#
#     w[n] = G[n] + alpha[n+1] w[n+1],   dL/dg[n] = (1 - alpha[n]) w[n],
#     dL/dalpha_a = sum over attack samples of w[n] (y[n-1] - g[n]), likewise alpha_r;
#
# held samples pass w through unchanged and contribute to neither pole. ``hold`` and ``open``
# are discrete and get no gradient (a hold time moves the output only by whole samples).

BRANCH_RELEASE = 0
BRANCH_ATTACK = 1
BRANCH_HOLD = 2


@njit(cache=True, nogil=True)
def _numba_hold_forward(
    first_row, end_row, g, is_open, alpha_a, alpha_r, hold, y, branch
):  # pragma: no cover - compiled
    n_samples = g.shape[1]
    for r in range(first_row, end_row):
        aa = alpha_a[r]
        ar = alpha_r[r]
        h = hold[r]
        since = h + 1
        state = 0.0
        for n in range(n_samples):
            since = 0 if is_open[r, n] else min(since + 1, h + 1)
            target = g[r, n]
            if target < state:
                state = target + aa * (state - target)
                branch[r, n] = BRANCH_ATTACK
            elif since <= h:
                branch[r, n] = BRANCH_HOLD
            else:
                state = target + ar * (state - target)
                branch[r, n] = BRANCH_RELEASE
            y[r, n] = state


@njit(cache=True, nogil=True)
def _numba_hold_backward(
    first_row, end_row, grad_y, g, y, branch, alpha_a, alpha_r, grad_g, grad_alpha
):  # pragma: no cover - compiled
    """grad_alpha (R, 2) receives [dL/dalpha_a, dL/dalpha_r], accumulated in float64."""
    n_samples = g.shape[1]
    for r in range(first_row, end_row):
        aa = alpha_a[r]
        ar = alpha_r[r]
        w = 0.0
        alpha_next = 0.0
        da = 0.0
        dr = 0.0
        for n in range(n_samples - 1, -1, -1):
            w = grad_y[r, n] + alpha_next * w
            code = branch[r, n]
            if code == BRANCH_HOLD:
                grad_g[r, n] = 0.0
                alpha_next = 1.0
                continue
            prev = y[r, n - 1] if n > 0 else 0.0
            alpha = aa if code == BRANCH_ATTACK else ar
            grad_g[r, n] = (1.0 - alpha) * w
            if code == BRANCH_ATTACK:
                da += w * (prev - g[r, n])
            else:
                dr += w * (prev - g[r, n])
            alpha_next = alpha
        grad_alpha[r, 0] = da
        grad_alpha[r, 1] = dr


def _hold_forward_numba(g, is_open, alpha_a, alpha_r, hold):
    g_np = g.detach().contiguous().numpy()
    y = np.empty_like(g_np)
    branch = np.empty(g_np.shape, dtype=np.int8)
    run_rows(
        _numba_hold_forward, g_np.shape[0], g_np.size, g_np,
        is_open.contiguous().numpy(), alpha_a.detach().contiguous().numpy(),
        alpha_r.detach().contiguous().numpy(), hold.contiguous().numpy(), y, branch,
    )  # fmt: skip
    return torch.from_numpy(y), torch.from_numpy(branch)


def _hold_backward_numba(grad_y, g, y, branch, alpha_a, alpha_r):
    g_np = g.detach().contiguous().numpy()
    grad_g = np.empty_like(g_np)
    grad_alpha = np.empty((g_np.shape[0], 2), dtype=np.float64)
    run_rows(
        _numba_hold_backward, g_np.shape[0], g_np.size, grad_y.detach().contiguous().numpy(),
        g_np, y.detach().contiguous().numpy(), branch.contiguous().numpy(),
        alpha_a.detach().contiguous().numpy(), alpha_r.detach().contiguous().numpy(),
        grad_g, grad_alpha,
    )  # fmt: skip
    grad_alpha = torch.from_numpy(grad_alpha).to(g.dtype)
    return torch.from_numpy(grad_g), grad_alpha[:, 0], grad_alpha[:, 1]


def _hold_forward_torch(g, is_open, alpha_a, alpha_r, hold):
    """Reference loop, vectorised over rows; runs on any device (CUDA included)."""
    state = g.new_zeros(g.shape[0])
    since = hold + 1
    out, codes = [], []
    for n in range(g.shape[1]):
        since = torch.where(is_open[:, n], 0, torch.minimum(since + 1, hold + 1))
        target = g[:, n]
        attack = target < state
        held = ~attack & (since <= hold)
        alpha = torch.where(attack, alpha_a, alpha_r)
        state = torch.where(held, state, alpha * state + (1.0 - alpha) * target)
        out.append(state)
        codes.append(
            torch.where(attack, BRANCH_ATTACK, torch.where(held, BRANCH_HOLD, BRANCH_RELEASE))
        )
    return torch.stack(out, dim=1), torch.stack(codes, dim=1).to(torch.int8)


def _branch_alpha(branch, alpha_a, alpha_r):
    """alpha[n] of the fixed branch pattern: alpha_a, alpha_r, or 1 where held."""
    one = torch.ones((), dtype=alpha_a.dtype, device=alpha_a.device)
    alpha = torch.where(branch == BRANCH_ATTACK, alpha_a[:, None], alpha_r[:, None])
    return torch.where(branch == BRANCH_HOLD, one, alpha)


def _hold_tensor_backward(grad_y, g, y, branch, alpha_a, alpha_r, onepole_backend):
    """Adjoint from tensor ops and the one-pole Function (differentiable when grad is on)."""
    prev = _shift_forward(y)
    alpha = _branch_alpha(branch, alpha_a, alpha_r)
    w = _OnePole.apply(
        grad_y.flip(-1).contiguous(), _shift_back(alpha).flip(-1).contiguous(), onepole_backend
    ).flip(-1)
    grad_g = (1.0 - alpha) * w
    d_alpha = w * (prev - g)
    zero = torch.zeros((), dtype=g.dtype, device=g.device)
    grad_a = torch.where(branch == BRANCH_ATTACK, d_alpha, zero).sum(-1)
    grad_r = torch.where(branch == BRANCH_RELEASE, d_alpha, zero).sum(-1)
    return grad_g, grad_a, grad_r


class _HoldAttackRelease(torch.autograd.Function):
    """Ballistics with hold: g (R, T), is_open (R, T) bool, alphas (R,), hold (R,) int64.

    Returns the smoothed gain and the int8 branch codes (non-differentiable)."""

    @staticmethod
    def forward(g, is_open, alpha_a, alpha_r, hold, backend):
        with torch.no_grad():
            if backend == "numba":
                return _hold_forward_numba(g, is_open, alpha_a, alpha_r, hold)
            return _hold_forward_torch(g, is_open, alpha_a, alpha_r, hold)

    @staticmethod
    def setup_context(ctx, inputs, output):
        g, _, alpha_a, alpha_r, _, backend = inputs
        ctx.backend = backend
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(g, alpha_a, alpha_r, *output)

    @staticmethod
    def backward(ctx, grad_y, _grad_branch):
        g, alpha_a, alpha_r, y, branch = ctx.saved_tensors
        need_g, _, need_a, need_r = ctx.needs_input_grad[:4]
        if grad_y is None:
            return (None,) * 6
        if torch.is_grad_enabled() or ctx.backend != "numba":
            be = "numba" if ctx.backend == "numba" else "cuda" if g.is_cuda else "torch"
            grads = _hold_tensor_backward(grad_y, g, y, branch, alpha_a, alpha_r, be)
        else:
            grads = _hold_backward_numba(grad_y, g, y, branch, alpha_a, alpha_r)
        grad_g, grad_a, grad_r = grads
        return (
            grad_g if need_g else None,
            None,
            grad_a if need_a else None,
            grad_r if need_r else None,
            None,
            None,
        )


def hold_attack_release(
    gain_db: torch.Tensor,
    is_open: torch.Tensor,
    alpha_attack: torch.Tensor,
    alpha_release: torch.Tensor,
    hold_samples: torch.Tensor,
    backend: str = "auto",
    return_branches: bool = False,
):
    """:func:`attack_release` whose release waits ``hold_samples`` after ``is_open`` was true.

    Attack applies while the target is below the smoothed gain, as in :func:`attack_release`.
    Otherwise the smoothed gain is held (kept at its last value) on the samples that are at most
    ``hold_samples`` after the last sample where ``is_open`` is true, and released after that.
    Each new ``is_open`` sample restarts the hold. See the section comment above for the
    recursion and its adjoint.

    Args:
        gain_db: ``(rows, samples)`` target gain in dB.
        is_open: ``(rows, samples)`` bool, where the hold restarts (e.g. level >= threshold).
        alpha_attack: ``(rows,)`` attack pole in [0, 1).
        alpha_release: ``(rows,)`` release pole in [0, 1).
        hold_samples: ``(rows,)`` integer hold length in samples (>= 0).
        backend: ``"auto"`` (numba on CPU, the reference loop elsewhere), ``"numba"``,
            ``"cuda"`` (the reference loop on the CUDA tensors: no dedicated kernel yet), or
            ``"torch"``.
        return_branches: also return the ``(rows, samples)`` int8 branch codes
            (``BRANCH_RELEASE``, ``BRANCH_ATTACK``, ``BRANCH_HOLD``).

    Returns:
        ``(rows, samples)`` smoothed gain in dB, differentiable in ``gain_db`` and both poles to
        any order (the branch pattern held fixed; ``is_open`` and ``hold_samples`` get none).
    """
    if gain_db.dim() != 2:
        raise ValueError(
            f"gain_db must be shaped (rows, samples), got shape {tuple(gain_db.shape)}"
        )
    rows = gain_db.shape[0]
    if is_open.shape != gain_db.shape or is_open.dtype != torch.bool:
        raise ValueError(
            f"is_open must be a bool tensor shaped {tuple(gain_db.shape)}, got "
            f"{is_open.dtype} {tuple(is_open.shape)}"
        )
    for name, alpha in (("alpha_attack", alpha_attack), ("alpha_release", alpha_release)):
        if alpha.shape != (rows,):
            raise ValueError(f"{name} must be shaped (rows,) = ({rows},), got {tuple(alpha.shape)}")
        if alpha.dtype != gain_db.dtype or alpha.device != gain_db.device:
            raise ValueError(
                f"{name} must have gain_db's dtype and device ({gain_db.dtype}, "
                f"{gain_db.device}), got ({alpha.dtype}, {alpha.device})"
            )
    if hold_samples.shape != (rows,) or hold_samples.dtype != torch.int64:
        raise ValueError(
            f"hold_samples must be an int64 tensor shaped ({rows},), got "
            f"{hold_samples.dtype} {tuple(hold_samples.shape)}"
        )
    backend = resolve_backend(backend, gain_db)
    backend = "numba" if backend == "numba" else "torch"
    y, branch = _HoldAttackRelease.apply(
        gain_db.contiguous(), is_open.to(gain_db.device).contiguous(),
        alpha_attack.contiguous(), alpha_release.contiguous(),
        hold_samples.to(gain_db.device).contiguous(), backend,
    )  # fmt: skip
    return (y, branch) if return_branches else y
