"""Time-varying recursive filters as autograd Functions: a cascade of second-order sections with
per-sample coefficients, and the topology-preserving (TPT) state-variable filter.

Both take audio ``x (batch, channels, samples)`` and coefficient trajectories shared by the
channels of a batch item, so a stereo signal does not copy its item's trajectory.

**Time-varying biquad cascade, direct form I.** Section k maps its input u to

    v[n] = b0[n] u[n] + b1[n] u[n-1] + b2[n] u[n-2] - a1[n] v[n-1] - a2[n] v[n-2].

Direct form I is the one form whose coefficients at sample n act only at sample n: its states
are past inputs and outputs, which do not depend on the coefficients that produced them. In the
direct form II or transposed forms the states hold sums already weighted by earlier
coefficients, so a change of coefficients also rescales what is stored and the output depends
on the path of the trajectory in a form-specific way (a zipper or a burst on fast changes).
With constant coefficients every form computes the same filter; this one is checked against
``scipy.signal.sosfilt`` in the tests. With g = dL/dv, the adjoint is again a time-varying
all-pole recursion run backwards, with each coefficient read where it acted:

    w[n]       = g[n] - a1[n+1] w[n+1] - a2[n+2] w[n+2]          (w = 0 past the end)
    dL/du[n]   = b0[n] w[n] + b1[n+1] w[n+1] + b2[n+2] w[n+2]
    dL/db_i[n] =  w[n] u[n-i]
    dL/da_i[n] = -w[n] v[n-i]

(v[n] enters v[n+1] through -a1[n+1] and v[n+2] through -a2[n+2]; u[n] enters v[n+i] through
b_i[n+i].) A cascade applies it section by section, last to first.

**TPT state-variable filter** (V. Zavalishin, "The Art of VA Filter Design", rev. 2.1.2, 2020,
ch. 4): two trapezoidal integrators with states s1, s2, prewarped gain g = tan(pi fc / fs) and
damping k = 2R = 1/Q. The zero-delay feedback loop solved per sample gives

    hp = (x - (k + g) s1 - s2) / (1 + k g + g^2)
    bp = g hp + s1,   s1 <- bp + g hp
    lp = g bp + s2,   s2 <- lp + g bp

and is computed exactly so, with g[n] and k[n] read at each sample: the integrator states keep
their meaning when the cutoff moves, which is why this topology is the one to modulate. (A DF-I
biquad with the same frozen-time coefficients is a different time-varying filter.) Written as a
time-varying state-space system s[n+1] = A[n] s[n] + B[n] x[n], y[n] = C[n] s[n] + D[n] x[n],
with d = 1 / (1 + k g + g^2),

    A = [[2d - 1, -2dg], [2dg, 2d(1 + kg) - 1]],   B = [2dg, 2dg^2],
    (C, D) = ([-d(k+g), -d], d) high pass,  ([d, -dg], dg) band pass,  ([dg, d(1+kg)], dg^2)
    low pass,

its adjoint with G = dL/dy and lambda[n] = dL/ds[n] (lambda[T] = 0) is

    lambda[n] = C[n]^T G[n] + A[n]^T lambda[n+1]
    dL/dx[n]  = D[n] G[n] + B[n] . lambda[n+1]
    dL/dA[n]  = lambda[n+1] s[n]^T,  dL/dB[n] = lambda[n+1] x[n],
    dL/dC[n]  = G[n] s[n],           dL/dD[n] = G[n] x[n],

and dL/dg[n], dL/dk[n] follow by the chain rule through the coefficient formulas.

Back ends: ``"numba"`` (CPU; items in parallel on at most ``torch.get_num_threads()`` threads,
:mod:`diffx.kernels.threads`; one fused reverse pass computes the input and coefficient
gradients, filter states and accumulators in float64), ``"cuda"`` (numba.cuda kernels, one
thread per item and channel, :mod:`diffx.kernels.cuda_varying`, loaded on first use; the
reference loop runs instead, with a warning, where numba.cuda cannot; under numba's CUDA
simulator it takes CPU tensors, which is how the tests check it) and ``"torch"`` (the
reference: plain Python loops over samples in float64, slow; the back end on other devices).
The SVF's reference backward runs the state-space adjoint above through a generic
two-state time-varying state-space Function, independent of the fused numba adjoint, so the
tests compare two derivations. When the backward must itself be differentiable
(``create_graph=True``), it is built from these same Functions on time-reversed signals plus
tensor ops, so every order of derivative works. Memory is linear in length: the forward keeps
each section's output (the SVF: its two states) for the backward.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx._validation import wide_dtype
from diffx.kernels.cuda_launch import CudaKernels

# The one-pole kernel's back ends and choice: numba on the CPU, numba.cuda on CUDA, the
# reference loop elsewhere.
from diffx.kernels.onepole import BACKENDS, resolve_backend  # noqa: F401 (BACKENDS re-exported)
from diffx.kernels.threads import run_rows

SVF_MODES = ("lowpass", "bandpass", "highpass")
_MODE_INDEX = {mode: i for i, mode in enumerate(SVF_MODES)}


# The numba.cuda kernels (diffx.kernels.cuda_varying), built on first use.
_CUDA_SOS = CudaKernels("SOS", "the time-varying SOS cascade", module="cuda_varying")
_CUDA_SS = CudaKernels("STATE_SPACE", "the state-space recursion", module="cuda_varying")
_CUDA_SVF = CudaKernels("SVF", "the state-variable filter", module="cuda_varying")


def _shift_forward(u: torch.Tensor, lag: int) -> torch.Tensor:
    """u[n - lag] along the last axis, zeros before the start (any length)."""
    return torch.nn.functional.pad(u, (lag, 0))[..., : u.shape[-1]]


def _shift_back(w: torch.Tensor, lag: int) -> torch.Tensor:
    """w[n + lag] along the last axis, zeros past the end (any length)."""
    return torch.nn.functional.pad(w, (0, lag))[..., lag:]


# ============================================================================================
# Time-varying SOS cascade (direct form I)
# ============================================================================================


@njit(cache=True, nogil=True, fastmath=False)
def _sos_forward(first, end, x, coef, ys):  # pragma: no cover - compiled
    """x (B, C, T); coef (B, K, 5, T) = [b0, b1, b2, a1, a2]; ys (B, C, K, T) section outputs."""
    n_channels, n_samples = x.shape[1], x.shape[2]
    n_sections = coef.shape[1]
    for b in range(first, end):
        for c in range(n_channels):
            for k in range(n_sections):
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


@njit(cache=True, nogil=True, fastmath=False)
def _sos_backward(
    first, end, grad_y, x, coef, ys, grad_x, grad_coef, need_coef
):  # pragma: no cover - compiled
    """Fused adjoint (module docstring), items ``first .. end - 1``.

    grad_x (B, C, T) receives dL/dx; grad_coef (B, K, 5, T), zeroed by the caller, receives
    dL/dcoef summed over the channels. ``g`` holds dL/d(section output) as float64 and is
    overwritten in place by dL/d(section input) on the way down the cascade.
    """
    n_channels, n_samples = x.shape[1], x.shape[2]
    n_sections = coef.shape[1]
    g = np.empty(n_samples, dtype=np.float64)
    for b in range(first, end):
        for c in range(n_channels):
            for n in range(n_samples):
                g[n] = grad_y[b, c, n]
            for k in range(n_sections - 1, -1, -1):
                w1 = 0.0  # w[n+1]
                w2 = 0.0  # w[n+2]
                a1_next = 0.0  # a1[n+1]
                a2_next = 0.0  # a2[n+2]
                a2_next1 = 0.0  # a2[n+1], becomes a2[n+2] one step down
                b1_next = 0.0  # b1[n+1]
                b2_next = 0.0  # b2[n+2]
                b2_next1 = 0.0
                for n in range(n_samples - 1, -1, -1):
                    w = g[n] - a1_next * w1 - a2_next * w2
                    b0 = coef[b, k, 0, n]
                    g[n] = b0 * w + b1_next * w1 + b2_next * w2
                    if need_coef:
                        u0 = x[b, c, n] if k == 0 else ys[b, c, k - 1, n]
                        grad_coef[b, k, 0, n] += w * u0
                        if n >= 1:
                            u1 = x[b, c, n - 1] if k == 0 else ys[b, c, k - 1, n - 1]
                            grad_coef[b, k, 1, n] += w * u1
                            grad_coef[b, k, 3, n] -= w * ys[b, c, k, n - 1]
                        if n >= 2:
                            u2 = x[b, c, n - 2] if k == 0 else ys[b, c, k - 1, n - 2]
                            grad_coef[b, k, 2, n] += w * u2
                            grad_coef[b, k, 4, n] -= w * ys[b, c, k, n - 2]
                    w2 = w1
                    w1 = w
                    a1_next = coef[b, k, 3, n]
                    a2_next = a2_next1
                    a2_next1 = coef[b, k, 4, n]
                    b1_next = coef[b, k, 1, n]
                    b2_next = b2_next1
                    b2_next1 = coef[b, k, 2, n]
            for n in range(n_samples):
                grad_x[b, c, n] = g[n]


def _fir_varying(u: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b0[n] u[n] + b1[n] u[n-1] + b2[n] u[n-2]; u (B, C, T), b (B, 3, T)."""
    b = b.unsqueeze(1)
    return (b[:, :, 0] * u + b[:, :, 1] * _shift_forward(u, 1)
            + b[:, :, 2] * _shift_forward(u, 2))  # fmt: skip


def _allpole_loop(e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """y[n] = e[n] - a1[n] y[n-1] - a2[n] y[n-2], one sample at a time; e (B, C, T), a (B, 2, T)."""
    y1 = e.new_zeros(e.shape[:2])
    y2 = e.new_zeros(e.shape[:2])
    out = []
    for n in range(e.shape[-1]):
        y0 = e[..., n] - a[:, 0:1, n] * y1 - a[:, 1:2, n] * y2
        out.append(y0)
        y2, y1 = y1, y0
    return torch.stack(out, dim=-1)


def _sos_forward_torch(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    outs = []
    u = x
    for k in range(coef.shape[1]):
        u = _allpole_loop(_fir_varying(u, coef[:, k, :3]), coef[:, k, 3:])
        outs.append(u)
    return torch.stack(outs, dim=2)  # (B, C, K, T)


def _reverse_allpole_coef(a: torch.Tensor) -> torch.Tensor:
    """Coefficients (B, 2, T) of the time-reversed adjoint recursion: a1[n+1], a2[n+2] flipped."""
    return torch.stack([_shift_back(a[:, 0], 1), _shift_back(a[:, 1], 2)], dim=1).flip(-1)


def _sos_backward_sections(grad_y, x, coef, ys, need_coef, reverse_allpole):
    """Adjoint of the cascade with tensor ops; ``reverse_allpole(g, a)`` gives w.

    ys (B, C, K, T) are the section outputs. Returns dL/dx and dL/dcoef (B, K, 5, T).
    """
    g = grad_y
    grads = []
    for k in range(coef.shape[1] - 1, -1, -1):
        u = x if k == 0 else ys[:, :, k - 1]
        v = ys[:, :, k]
        w = reverse_allpole(g, coef[:, k, 3:])
        if need_coef:
            grads.append(torch.stack([
                (w * u).sum(1),
                (w * _shift_forward(u, 1)).sum(1),
                (w * _shift_forward(u, 2)).sum(1),
                -(w * _shift_forward(v, 1)).sum(1),
                -(w * _shift_forward(v, 2)).sum(1),
            ], dim=1))  # fmt: skip
        b = coef[:, k, :3].unsqueeze(1)
        g = b[:, :, 0] * w + _shift_back(b[:, :, 1] * w, 1) + _shift_back(b[:, :, 2] * w, 2)
    grad_coef = torch.stack(grads[::-1], dim=1) if need_coef else None
    return g, grad_coef


def _sos_forward_any(x, coef, backend):
    if backend == "numba":
        x_np = x.detach().contiguous().numpy()
        coef_np = coef.detach().contiguous().numpy()
        B, C, T = x_np.shape
        ys = np.empty((B, C, coef_np.shape[1], T), dtype=x_np.dtype)
        run_rows(_sos_forward, B, x_np.size * coef_np.shape[1], x_np, coef_np, ys)
        return torch.from_numpy(ys)
    if backend == "cuda":
        B, C, T = x.shape
        ys = x.new_empty(B, C, coef.shape[1], T)
        if _CUDA_SOS.launch(0, B * C, x.detach().contiguous(), coef.detach().contiguous(), ys):
            return ys
    wide = wide_dtype(x.device, "the time-varying filter's states")
    return _sos_forward_torch(x.to(wide), coef.to(wide)).to(x.dtype)


class _VaryingSos(torch.autograd.Function):
    """x (B, C, T), coef (B, K, 5, T) -> output of the last section (B, C, T)."""

    @staticmethod
    def forward(ctx, x, coef, backend):
        with torch.no_grad():
            ys = _sos_forward_any(x, coef, backend)
        ctx.backend = backend
        ctx.ys = ys  # kept on ctx, not returned: the output below is a copy
        ctx.save_for_backward(x, coef)
        return ys[:, :, -1].clone()

    @staticmethod
    def backward(ctx, grad_y):
        x, coef = ctx.saved_tensors
        need_x, need_coef = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            grad_x, grad_coef = _sos_differentiable_backward(grad_y, x, coef, need_coef,
                                                             ctx.backend)  # fmt: skip
        elif ctx.backend == "numba":
            x_np = x.detach().contiguous().numpy()
            coef_np = coef.detach().contiguous().numpy()
            grad_x = np.empty_like(x_np)
            grad_coef = np.zeros(coef_np.shape if need_coef else (1, 1, 1, 1), dtype=np.float64)
            run_rows(_sos_backward, x_np.shape[0], x_np.size * coef_np.shape[1],
                     grad_y.detach().contiguous().numpy(), x_np, coef_np,
                     ctx.ys.numpy(), grad_x, grad_coef, bool(need_coef))  # fmt: skip
            grad_x = torch.from_numpy(grad_x)
            grad_coef = torch.from_numpy(grad_coef).to(coef.dtype) if need_coef else None
        elif ctx.backend == "cuda" and (result := _sos_backward_cuda(grad_y, x, coef, ctx.ys,
                                                                     need_coef)):  # fmt: skip
            grad_x, grad_coef = result
        else:
            wide = wide_dtype(x.device, "the time-varying filter's states")

            def reverse(g, a):
                return _allpole_loop(g.flip(-1), _reverse_allpole_coef(a)).flip(-1)

            grad_x, grad_coef = _sos_backward_sections(
                grad_y.to(wide), x.to(wide), coef.to(wide), ctx.ys.to(wide), need_coef, reverse
            )
            grad_x = grad_x.to(x.dtype)
            grad_coef = grad_coef.to(coef.dtype) if need_coef else None
        return (grad_x if need_x else None), (grad_coef if need_coef else None), None


def _sos_backward_cuda(grad_y, x, coef, ys, need_coef):
    """The fused adjoint kernel on the GPU; ``None`` when numba.cuda cannot run (warned)."""
    x, coef = x.detach().contiguous(), coef.detach().contiguous()
    scratch = torch.empty(x.shape, dtype=torch.float64, device=x.device)
    grad_x = torch.empty_like(x)
    grad_coef = torch.zeros(coef.shape if need_coef else (1, 1, 1, 1), dtype=torch.float64,
                            device=x.device)  # fmt: skip
    if not _CUDA_SOS.launch(1, x.shape[0] * x.shape[1], grad_y.detach().contiguous(), x, coef,
                            ys, scratch, grad_x, grad_coef, bool(need_coef)):  # fmt: skip
        return None
    return grad_x, (grad_coef.to(coef.dtype) if need_coef else None)


def _sos_differentiable_backward(grad_y, x, coef, need_coef, backend):
    """The backward from this Function and tensor ops, for create_graph."""
    coef = coef.to(x.dtype)
    B, _, T = x.shape
    impulse = torch.zeros_like(coef[:, :1, :3])
    impulse[:, :, 0] = 1.0

    def reverse(g, a):
        allpole = torch.cat([impulse, _reverse_allpole_coef(a).unsqueeze(1)], dim=2)
        return _VaryingSos.apply(g.flip(-1).contiguous(), allpole.contiguous(), backend).flip(-1)

    # Section outputs recomputed through the Function carry the graph back to x and coef.
    outputs = [x]
    for k in range(coef.shape[1]):
        outputs.append(_VaryingSos.apply(outputs[-1], coef[:, k : k + 1].contiguous(), backend))
    g = grad_y
    grads = []
    for k in range(coef.shape[1] - 1, -1, -1):
        g, gc = _sos_backward_sections(g, outputs[k], coef[:, k : k + 1],
                                       outputs[k + 1].unsqueeze(2), need_coef, reverse)  # fmt: skip
        grads.append(gc)
    return g, (torch.cat(grads[::-1], dim=1) if need_coef else None)


def sos_cascade_varying(x: torch.Tensor, coef: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Filter audio through a cascade of sections whose coefficients change every sample.

    Args:
        x: ``(batch, channels, samples)`` signal.
        coef: ``(batch, n_sections, 5, samples)`` normalized coefficients ``[b0, b1, b2, a1,
            a2]`` (a0 = 1) per sample, shared by the channels of an item; its dtype may be
            wider than ``x``'s (the recursion runs in float64 either way).
        backend: ``"auto"`` (numba on CPU, numba.cuda on CUDA), ``"numba"``, ``"cuda"``,
            ``"torch"`` (reference loop).

    Returns:
        ``(batch, channels, samples)`` output of the last section, zero initial state, in
        ``x``'s dtype. Differentiable in ``x`` and ``coef`` to any order. Stability is not
        checked here (no device sync).
    """
    if x.dim() != 3:
        raise ValueError(f"x must be shaped (batch, channels, samples), got {tuple(x.shape)}")
    B, C, T = x.shape  # batch, channels, samples
    if coef.dim() != 4 or coef.shape[0] != B or coef.shape[2] != 5 or coef.shape[3] != T:
        raise ValueError(
            f"coef must be shaped (batch, n_sections, 5, samples) = ({B}, K, 5, {T}), got "
            f"{tuple(coef.shape)}"
        )
    if coef.shape[1] == 0:
        raise ValueError("coef has no sections")
    backend = resolve_backend(backend, x)
    return _VaryingSos.apply(x.contiguous(), coef.contiguous(), backend)


# ============================================================================================
# Generic two-state time-varying state-space system (the SVF's reference adjoint)
# ============================================================================================
# coef (B, 9, T) = [A11, A12, A21, A22, B1, B2, C1, C2, D]; s[0] = 0;
# y[n] = C[n] . s[n] + D[n] x[n];  s[n+1] = A[n] s[n] + B[n] x[n].


@njit(cache=True, nogil=True, fastmath=False)
def _ss_forward(first, end, x, coef, y):  # pragma: no cover - compiled
    n_channels, n_samples = x.shape[1], x.shape[2]
    for b in range(first, end):
        for c in range(n_channels):
            s1 = 0.0
            s2 = 0.0
            for n in range(n_samples):
                u = x[b, c, n]
                y[b, c, n] = coef[b, 6, n] * s1 + coef[b, 7, n] * s2 + coef[b, 8, n] * u
                t1 = coef[b, 0, n] * s1 + coef[b, 1, n] * s2 + coef[b, 4, n] * u
                s2 = coef[b, 2, n] * s1 + coef[b, 3, n] * s2 + coef[b, 5, n] * u
                s1 = t1


def _ss_forward_torch(x: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    s1 = x.new_zeros(x.shape[:2])
    s2 = x.new_zeros(x.shape[:2])
    out = []
    for n in range(x.shape[-1]):
        k = coef[:, :, n : n + 1]  # (B, 9, 1), broadcast over channels
        u = x[..., n]
        out.append(k[:, 6] * s1 + k[:, 7] * s2 + k[:, 8] * u)
        s1, s2 = (k[:, 0] * s1 + k[:, 1] * s2 + k[:, 4] * u,
                  k[:, 2] * s1 + k[:, 3] * s2 + k[:, 5] * u)  # fmt: skip
    return torch.stack(out, dim=-1)


def _readout(coef: torch.Tensor, i: int) -> torch.Tensor:
    """The same system with output state i (C = e_i, D = 0)."""
    read = torch.zeros_like(coef[:, 6:])
    read[:, i] = 1.0
    return torch.cat([coef[:, :6], read], dim=1)


def _ss_adjoint_coef(coef: torch.Tensor) -> torch.Tensor:
    """The adjoint system, time-reversed: A^T, B <- C, C <- B, D."""
    a11, a12, a21, a22, b1, b2, c1, c2, d = coef.unbind(1)
    return torch.stack([a11, a21, a12, a22, c1, c2, b1, b2, d], dim=1).flip(-1)


class _StateSpace2(torch.autograd.Function):
    """x (B, C, T), coef (B, 9, T) -> y (B, C, T); the backward is built from itself."""

    @staticmethod
    def forward(ctx, x, coef, backend):
        with torch.no_grad():
            if backend == "numba":
                x_np = x.detach().contiguous().numpy()
                y = np.empty_like(x_np)
                run_rows(_ss_forward, x_np.shape[0], x_np.size, x_np,
                         coef.detach().contiguous().numpy(), y)  # fmt: skip
                y = torch.from_numpy(y)
            else:
                y = None
                if backend == "cuda":
                    y = torch.empty_like(x)
                    if not _CUDA_SS.launch(0, x.shape[0] * x.shape[1], x.detach().contiguous(),
                                           coef.detach().contiguous(), y):  # fmt: skip
                        y = None
                if y is None:
                    wide = wide_dtype(x.device, "the state-variable filter's states")
                    y = _ss_forward_torch(x.to(wide), coef.to(wide)).to(x.dtype)
        ctx.backend = backend
        ctx.save_for_backward(x, coef)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, coef = ctx.saved_tensors
        need_x, need_coef = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x, grad_coef = _ss_backward(grad_y, x, coef, need_coef, ctx.backend)
        grad_coef = grad_coef.to(coef.dtype) if need_coef else None
        return (grad_x if need_x else None), grad_coef, None


def _ss_backward(grad_y, x, coef, need_coef, backend):
    """dL/dx and dL/dcoef (B, 9, T) of the state-space system, from its own Function.

    Computed in the wider of the two dtypes (float64 coefficients keep float32 audio's
    gradients exact to float32), cast back by autograd.
    """
    dtype = x.dtype
    wide = torch.promote_types(x.dtype, coef.dtype)
    x, grad_y, coef = x.to(wide), grad_y.to(wide), coef.to(wide)
    adjoint = _ss_adjoint_coef(coef)
    g_rev = grad_y.flip(-1).contiguous()
    grad_x = _StateSpace2.apply(g_rev, adjoint.contiguous(), backend).flip(-1)
    if not need_coef:
        return grad_x.to(dtype), None
    # lambda[n+1] from the adjoint system's states; s[n] from the forward system's.
    lam = [_StateSpace2.apply(g_rev, _readout(adjoint, i).contiguous(), backend).flip(-1)
           for i in (0, 1)]  # fmt: skip
    s = [_StateSpace2.apply(x, _readout(coef, i).contiguous(), backend) for i in (0, 1)]
    grad_coef = torch.stack([
        (lam[0] * s[0]).sum(1), (lam[0] * s[1]).sum(1),
        (lam[1] * s[0]).sum(1), (lam[1] * s[1]).sum(1),
        (lam[0] * x).sum(1), (lam[1] * x).sum(1),
        (grad_y * s[0]).sum(1), (grad_y * s[1]).sum(1), (grad_y * x).sum(1),
    ], dim=1)  # fmt: skip
    return grad_x.to(dtype), grad_coef


def state_space2(x: torch.Tensor, coef: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Two-state time-varying state-space system (zero initial state).

    ``y[n] = C[n] . s[n] + D[n] x[n]``, ``s[n+1] = A[n] s[n] + B[n] x[n]``.

    Args:
        x: ``(batch, channels, samples)``.
        coef: ``(batch, 9, samples)`` ``[A11, A12, A21, A22, B1, B2, C1, C2, D]`` per sample,
            shared by the channels of an item.
        backend: ``"auto"``, ``"numba"``, ``"cuda"``, ``"torch"``.

    Returns:
        ``(batch, channels, samples)``, differentiable in both inputs to any order.
    """
    if x.dim() != 3 or coef.dim() != 3 or coef.shape != (x.shape[0], 9, x.shape[2]):
        raise ValueError(
            f"x must be (batch, channels, samples) and coef (batch, 9, samples); got "
            f"{tuple(x.shape)} and {tuple(coef.shape)}"
        )
    backend = resolve_backend(backend, x)
    return _StateSpace2.apply(x.contiguous(), coef.contiguous(), backend)


# ============================================================================================
# TPT state-variable filter
# ============================================================================================


def svf_step(u, gn, kn, s1, s2, mode):  # pragma: no cover - compiled (CPU and CUDA)
    """One sample of the TPT topology: input ``u``, ``g``, ``k`` and states ``s1``, ``s2``
    before the sample; returns ``(output, s1, s2)`` with the states after it. Plain Python,
    compiled for the CPU here and as a device function in :mod:`diffx.kernels.cuda_varying`."""
    hp = (u - (kn + gn) * s1 - s2) / (1.0 + gn * (kn + gn))
    v1 = gn * hp
    bp = v1 + s1
    v2 = gn * bp
    lp = v2 + s2
    out = lp if mode == 0 else (bp if mode == 1 else hp)
    return out, bp + v1, lp + v2


def svf_adjoint_step(gy, u, gn, kn, s1, s2, l1, l2, mode, need_gk):  # pragma: no cover
    """One reverse step of the SVF's state-space adjoint (module docstring) at sample ``n``.

    ``gy`` = dL/dy[n], ``u`` = x[n], ``s1, s2`` the states before sample n, ``l1, l2`` =
    lambda[n+1]. Returns ``(dL/dx[n], dL/dg[n], dL/dk[n], lambda[n] (two values))``; the
    coefficient gradients are 0 unless ``need_gk``. Shared by the CPU and CUDA kernels as
    :func:`svf_step`.
    """
    d = 1.0 / (1.0 + gn * (kn + gn))
    if mode == 0:
        c1 = d * gn
        c2 = d * (1.0 + kn * gn)
        dd = d * gn * gn
    elif mode == 1:
        c1 = d
        c2 = -d * gn
        dd = d * gn
    else:
        c1 = -d * (kn + gn)
        c2 = -d
        dd = d
    a11 = 2.0 * d - 1.0
    a12 = -2.0 * d * gn
    a21 = 2.0 * d * gn
    a22 = 2.0 * d * (1.0 + kn * gn) - 1.0
    b1 = 2.0 * d * gn
    b2 = 2.0 * d * gn * gn
    grad_x = dd * gy + b1 * l1 + b2 * l2
    acc_g = 0.0
    acc_k = 0.0
    if need_gk:
        # Gradients of the nine coefficients at n ...
        ga11 = l1 * s1
        ga12 = l1 * s2
        ga21 = l2 * s1
        ga22 = l2 * s2
        gb1 = l1 * u
        gb2 = l2 * u
        gc1 = gy * s1
        gc2 = gy * s2
        gd = gy * u
        # ... chained through d = 1 / (1 + k g + g^2) and the formulas above.
        d_g = -d * d * (kn + 2.0 * gn)
        d_k = -d * d * gn
        acc_g = (2.0 * d_g * ga11 - 2.0 * (d_g * gn + d) * ga12
                 + 2.0 * (d_g * gn + d) * (ga21 + gb1)
                 + (2.0 * d_g * (1.0 + kn * gn) + 2.0 * d * kn) * ga22
                 + (2.0 * d_g * gn * gn + 4.0 * d * gn) * gb2)  # fmt: skip
        acc_k = (2.0 * d_k * ga11 - 2.0 * d_k * gn * ga12
                 + 2.0 * d_k * gn * (ga21 + gb1)
                 + (2.0 * d_k * (1.0 + kn * gn) + 2.0 * d * gn) * ga22
                 + 2.0 * d_k * gn * gn * gb2)  # fmt: skip
        if mode == 0:
            acc_g += ((d_g * gn + d) * gc1 + (d_g * (1.0 + kn * gn) + d * kn) * gc2
                      + (d_g * gn * gn + 2.0 * d * gn) * gd)  # fmt: skip
            acc_k += d_k * gn * gc1 + (d_k * (1.0 + kn * gn) + d * gn) * gc2
            acc_k += d_k * gn * gn * gd
        elif mode == 1:
            acc_g += d_g * gc1 - (d_g * gn + d) * gc2 + (d_g * gn + d) * gd
            acc_k += d_k * gc1 - d_k * gn * gc2 + d_k * gn * gd
        else:
            acc_g += -(d_g * (kn + gn) + d) * gc1 - d_g * gc2 + d_g * gd
            acc_k += -(d_k * (kn + gn) + d) * gc1 - d_k * gc2 + d_k * gd
    new_l1 = c1 * gy + a11 * l1 + a21 * l2
    new_l2 = c2 * gy + a12 * l1 + a22 * l2
    return grad_x, acc_g, acc_k, new_l1, new_l2


_svf_step = njit(inline="always", cache=True)(svf_step)
_svf_adjoint_step = njit(inline="always", cache=True)(svf_adjoint_step)


@njit(cache=True, nogil=True, fastmath=False)
def _svf_forward(first, end, x, g, k, mode, y, states):  # pragma: no cover - compiled
    """The TPT topology sample by sample; states (B, C, 2, T) receive s[n] (before sample n)."""
    n_channels, n_samples = x.shape[1], x.shape[2]
    for b in range(first, end):
        for c in range(n_channels):
            s1 = 0.0
            s2 = 0.0
            for n in range(n_samples):
                states[b, c, 0, n] = s1
                states[b, c, 1, n] = s2
                y[b, c, n], s1, s2 = _svf_step(x[b, c, n], g[b, n], k[b, n], s1, s2, mode)


@njit(cache=True, nogil=True, fastmath=False)
def _svf_backward(
    first, end, grad_y, x, g, k, mode, states, grad_x, grad_g, grad_k, need_gk
):  # pragma: no cover - compiled
    """Fused state-space adjoint of the SVF (module docstring); grad_g/grad_k zeroed by the
    caller receive the sums over channels."""
    n_channels, n_samples = x.shape[1], x.shape[2]
    for b in range(first, end):
        for c in range(n_channels):
            l1 = 0.0  # lambda[n+1]
            l2 = 0.0
            for n in range(n_samples - 1, -1, -1):
                grad_x[b, c, n], acc_g, acc_k, l1, l2 = _svf_adjoint_step(
                    grad_y[b, c, n], x[b, c, n], g[b, n], k[b, n], states[b, c, 0, n],
                    states[b, c, 1, n], l1, l2, mode, need_gk,
                )  # fmt: skip
                if need_gk:
                    grad_g[b, n] += acc_g
                    grad_k[b, n] += acc_k


def _svf_forward_torch(x, g, k, mode):
    """Reference loop of the TPT topology (float64 by the caller)."""
    s1 = x.new_zeros(x.shape[:2])
    s2 = x.new_zeros(x.shape[:2])
    out = []
    for n in range(x.shape[-1]):
        gn, kn = g[:, n : n + 1], k[:, n : n + 1]
        hp = (x[..., n] - (kn + gn) * s1 - s2) / (1 + gn * (kn + gn))
        v1 = gn * hp
        bp = v1 + s1
        s1 = bp + v1
        v2 = gn * bp
        lp = v2 + s2
        s2 = lp + v2
        out.append((lp, bp, hp)[mode])
    return torch.stack(out, dim=-1)


def svf_state_space(g: torch.Tensor, k: torch.Tensor, mode: int) -> torch.Tensor:
    """The SVF's state-space coefficients ``(batch, 9, samples)`` (module docstring) from
    ``g``, ``k`` ``(batch, samples)``; differentiable."""
    d = 1.0 / (1.0 + g * (k + g))
    dg = d * g
    readout = (
        [dg, d * (1 + k * g), dg * g],
        [d, -dg, dg],
        [-d * (k + g), -d, d],
    )[mode]
    return torch.stack(
        [2 * d - 1, -2 * dg, 2 * dg, 2 * d * (1 + k * g) - 1, 2 * dg, 2 * dg * g, *readout], dim=1
    )


class _Svf(torch.autograd.Function):
    """x (B, C, T), g (B, T), k (B, T) -> the selected SVF output (B, C, T)."""

    @staticmethod
    def forward(ctx, x, g, k, mode, backend):
        with torch.no_grad():
            if backend == "numba":
                x_np = x.detach().contiguous().numpy()
                y = np.empty_like(x_np)
                states = np.empty(x_np.shape[:2] + (2,) + x_np.shape[2:], dtype=x_np.dtype)
                run_rows(_svf_forward, x_np.shape[0], x_np.size, x_np,
                         g.detach().contiguous().numpy(), k.detach().contiguous().numpy(),
                         mode, y, states)  # fmt: skip
                y = torch.from_numpy(y)
                ctx.states = torch.from_numpy(states)
            else:
                y = None
                if backend == "cuda":
                    x_c = x.detach().contiguous()
                    y = torch.empty_like(x_c)
                    states = x_c.new_empty(x.shape[0], x.shape[1], 2, x.shape[2])
                    if _CUDA_SVF.launch(0, x.shape[0] * x.shape[1], x_c, g.detach().contiguous(),
                                        k.detach().contiguous(), mode, y, states):  # fmt: skip
                        ctx.states = states
                    else:
                        y, backend = None, "torch"
                if y is None:
                    wide = wide_dtype(x.device, "the state-variable filter's states")
                    y = _svf_forward_torch(x.to(wide), g.to(wide), k.to(wide), mode).to(x.dtype)
        ctx.mode, ctx.backend = mode, backend
        ctx.save_for_backward(x, g, k)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, g, k = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_gk = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        if ctx.backend == "numba" and not torch.is_grad_enabled():
            x_np = x.detach().contiguous().numpy()
            g_np = g.detach().contiguous().numpy()
            grad_x = np.empty_like(x_np)
            shape = g_np.shape if need_gk else (1, 1)
            grad_g = np.zeros(shape, dtype=np.float64)
            grad_k = np.zeros(shape, dtype=np.float64)
            run_rows(_svf_backward, x_np.shape[0], x_np.size,
                     grad_y.detach().contiguous().numpy(), x_np, g_np,
                     k.detach().contiguous().numpy(), ctx.mode, ctx.states.numpy(), grad_x,
                     grad_g, grad_k, bool(need_gk))  # fmt: skip
            grad_x = torch.from_numpy(grad_x)
            grad_g = torch.from_numpy(grad_g).to(g.dtype) if need_gk else None
            grad_k = torch.from_numpy(grad_k).to(k.dtype) if need_gk else None
        elif ctx.backend == "cuda" and not torch.is_grad_enabled():
            x_c = x.detach().contiguous()
            grad_x = torch.empty_like(x_c)
            shape = g.shape if need_gk else (1, 1)
            grad_g = torch.zeros(shape, dtype=torch.float64, device=x.device)
            grad_k = torch.zeros(shape, dtype=torch.float64, device=x.device)
            # The forward ran the kernel (else it set the back end to "torch"), so this runs.
            _CUDA_SVF.launch(1, x.shape[0] * x.shape[1], grad_y.detach().contiguous(), x_c,
                             g.detach().contiguous(), k.detach().contiguous(), ctx.mode,
                             ctx.states, grad_x, grad_g, grad_k, bool(need_gk))  # fmt: skip
            grad_g = grad_g.to(g.dtype) if need_gk else None
            grad_k = grad_k.to(k.dtype) if need_gk else None
        else:
            # The reference (and, under create_graph, every back end): the state-space adjoint
            # through _StateSpace2, chained to g and k through the coefficient formulas.
            differentiable = torch.is_grad_enabled()
            coef = svf_state_space(g, k, ctx.mode) if differentiable else (
                svf_state_space(g.detach(), k.detach(), ctx.mode))  # fmt: skip
            grad_x, grad_coef = _ss_backward(grad_y, x, coef, need_gk, ctx.backend)
            grad_g = grad_k = None
            if need_gk:
                grad_g, grad_k = _chain_to_gk(g, k, ctx.mode, grad_coef.to(coef.dtype),
                                              differentiable)  # fmt: skip
        return ((grad_x if need_x else None), grad_g if ctx.needs_input_grad[1] else None,
                grad_k if ctx.needs_input_grad[2] else None, None, None)  # fmt: skip


def _chain_to_gk(g, k, mode, grad_coef, differentiable):
    """dL/dg and dL/dk from dL/dcoef (B, 9, T): a vector-Jacobian product of the formulas,
    itself differentiable when ``differentiable`` (the backward under create_graph)."""
    with torch.enable_grad():
        if differentiable:
            gd = g if g.requires_grad else g.detach().requires_grad_()
            kd = k if k.requires_grad else k.detach().requires_grad_()
        else:
            gd, kd = g.detach().requires_grad_(), k.detach().requires_grad_()
        coef = svf_state_space(gd, kd, mode)
        return torch.autograd.grad(coef, (gd, kd), grad_coef, create_graph=differentiable)


def svf(
    x: torch.Tensor, g: torch.Tensor, k: torch.Tensor, mode: str, backend: str = "auto"
) -> torch.Tensor:
    """TPT state-variable filter with per-sample prewarped gain and damping.

    Args:
        x: ``(batch, channels, samples)``.
        g: ``(batch, samples)`` ``tan(pi fc / fs) > 0`` per sample, shared by an item's channels.
        k: ``(batch, samples)`` damping ``1 / Q > 0`` per sample.
        mode: one of ``SVF_MODES``.
        backend: ``"auto"`` (numba on CPU, numba.cuda on CUDA), ``"numba"``, ``"cuda"``,
            ``"torch"`` (reference loop).

    Returns:
        ``(batch, channels, samples)`` in ``x``'s dtype, zero initial state; differentiable in
        ``x``, ``g`` and ``k`` to any order.
    """
    if mode not in _MODE_INDEX:
        raise ValueError(f"mode must be one of {SVF_MODES}, got {mode!r}")
    if x.dim() != 3:
        raise ValueError(f"x must be shaped (batch, channels, samples), got {tuple(x.shape)}")
    B, _, T = x.shape
    for name, t in (("g", g), ("k", k)):
        if t.shape != (B, T):
            raise ValueError(f"{name} must be shaped (batch, samples) = ({B}, {T}), got "
                             f"{tuple(t.shape)}")  # fmt: skip
    backend = resolve_backend(backend, x)
    return _Svf.apply(x.contiguous(), g.contiguous(), k.contiguous(), _MODE_INDEX[mode], backend)
