"""The harmonic oscillator bank's inner sum as one autograd Function with a fused CPU kernel.

For each row ``b`` and sample ``n``

    h[b, n] = sum_{k=1..K} d_k[b, n] sin(k phi[b, n]),
    d_k[b, n] = D[b, l_n, k] + w_n (D[b, l_n + 1, k] - D[b, l_n, k]),

i.e. frame-rate harmonic weights ``D (B, F, K)`` interpolated linearly to audio rate (frame
``l_n`` and weight ``w_n`` of sample ``n``, shared by all rows) times the harmonics of a phase
``phi (B, T)``. Built from tensors this needs several ``(B, T, K)`` intermediates (the
upsampled weights, the phases ``k phi``, their sines): 400 MB each for DDSP's 16 x 4 s x 100
harmonics, and most of the synthesizer's time. The kernel instead walks each frame segment
once and makes the harmonics by the Chebyshev recurrence

    sin(k phi) = 2 cos(phi) sin((k - 1) phi) - sin((k - 2) phi)

(likewise ``cos(k phi)`` for the backward), in float64, vectorised over the segment's samples,
so only ``(B, T)`` arrays are ever made. Its adjoint, with ``g = dL/dh``:

    dL/dphi[b, n]     = g[b, n] sum_k d_k[b, n] k cos(k phi[b, n])
    dL/dD[b, f, k]    = sum_{n: l_n = f} g (1 - w_n) sin(k phi)
                        + sum_{n: l_n = f - 1} g w_n sin(k phi)

The recurrence's rounding error grows about like ``k^2`` machine epsilons (1e-12 for 100
harmonics in float64), far below float32 resolution. ``"torch"`` is the reference built from
tensor ops (also used on other devices, and for second derivatives).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx.kernels.threads import run_rows

BACKENDS = ("auto", "numba", "torch")


@njit(cache=True, nogil=True)
def _segments(left):  # pragma: no cover - compiled
    """Start indices of the runs of equal ``left`` (plus the end), and the longest run."""
    n = left.shape[0]
    starts = np.empty(n + 1, dtype=np.int64)
    count = 0
    longest = 0
    i = 0
    while i < n:
        j = i + 1
        while j < n and left[j] == left[i]:
            j += 1
        starts[count] = i
        count += 1
        longest = max(longest, j - i)
        i = j
    starts[count] = n
    return starts[: count + 1], longest


@njit(cache=True, nogil=True)
def _forward_kernel(first, end, phase, dist, left, w, starts, longest, out):  # pragma: no cover
    """Rows ``first .. end - 1``: out (B, T) float64 receives h; see the module docstring."""
    n_frames, n_harmonics = dist.shape[1], dist.shape[2]
    two_cos = np.empty(longest)
    s_prev = np.empty(longest)
    s_cur = np.empty(longest)
    acc = np.empty(longest)
    for b in range(first, end):
        for seg in range(starts.shape[0] - 1):
            n0 = starts[seg]
            m = starts[seg + 1] - n0
            lo = left[n0]
            hi = min(lo + 1, n_frames - 1)
            for j in range(m):
                p = phase[b, n0 + j]
                two_cos[j] = 2.0 * np.cos(p)
                s_prev[j] = 0.0  # sin(0 phi)
                s_cur[j] = np.sin(p)  # sin(1 phi)
                acc[j] = 0.0
            for k in range(n_harmonics):
                d_lo = dist[b, lo, k]
                d_step = dist[b, hi, k] - d_lo
                for j in range(m):
                    s = s_cur[j]
                    acc[j] += (d_lo + w[n0 + j] * d_step) * s
                    s_cur[j] = two_cos[j] * s - s_prev[j]
                    s_prev[j] = s
            for j in range(m):
                out[b, n0 + j] = acc[j]


@njit(cache=True, nogil=True)
def _backward_kernel(
    first, end, grad, phase, dist, left, w, starts, longest, grad_phase, grad_dist
):  # pragma: no cover - compiled
    """Rows ``first .. end - 1``: grad_phase (B, T) and grad_dist (B, F, K) (zeroed by the
    caller) receive the gradients of the module docstring, in float64. The per-harmonic sums
    over a segment are taken in sample order (no fastmath reassociation: a vectorised sum's
    order depends on the scratch arrays' alignment, so results would vary from call to call)."""
    n_frames, n_harmonics = dist.shape[1], dist.shape[2]
    two_cos = np.empty(longest)
    s_prev = np.empty(longest)
    s_cur = np.empty(longest)
    c_prev = np.empty(longest)
    c_cur = np.empty(longest)
    g_lo = np.empty(longest)
    g_hi = np.empty(longest)
    d_phi = np.empty(longest)
    for b in range(first, end):
        for seg in range(starts.shape[0] - 1):
            n0 = starts[seg]
            m = starts[seg + 1] - n0
            lo = left[n0]
            hi = min(lo + 1, n_frames - 1)
            for j in range(m):
                p = phase[b, n0 + j]
                c = np.cos(p)
                two_cos[j] = 2.0 * c
                s_prev[j] = 0.0
                s_cur[j] = np.sin(p)
                c_prev[j] = 1.0  # cos(0 phi)
                c_cur[j] = c
                g = grad[b, n0 + j]
                g_hi[j] = g * w[n0 + j]
                g_lo[j] = g - g_hi[j]
                d_phi[j] = 0.0
            for k in range(n_harmonics):
                d_lo = dist[b, lo, k]
                d_step = dist[b, hi, k] - d_lo
                kk = k + 1.0
                sum_lo = 0.0
                sum_hi = 0.0
                for j in range(m):
                    s = s_cur[j]
                    c = c_cur[j]
                    d_phi[j] += (d_lo + w[n0 + j] * d_step) * kk * c
                    sum_lo += g_lo[j] * s
                    sum_hi += g_hi[j] * s
                    s_cur[j] = two_cos[j] * s - s_prev[j]
                    s_prev[j] = s
                    c_cur[j] = two_cos[j] * c - c_prev[j]
                    c_prev[j] = c
                grad_dist[b, lo, k] += sum_lo
                grad_dist[b, hi, k] += sum_hi
            for j in range(m):
                grad_phase[b, n0 + j] = grad[b, n0 + j] * d_phi[j]


def harmonic_sum_reference(phase, dist, left, w):
    """The same sum from tensor ops, in ``promote(phase, dist)`` precision: ``(B, T)``."""
    dtype = torch.promote_types(phase.dtype, dist.dtype)
    n_frames = dist.shape[1]
    lo = dist.to(dtype).index_select(1, left)
    hi = dist.to(dtype).index_select(1, (left + 1).clamp(max=n_frames - 1))
    weights = torch.addcmul(lo, w.to(dtype)[None, :, None], hi - lo)  # (B, T, K)
    k = torch.arange(1, dist.shape[2] + 1, dtype=dtype, device=dist.device)
    return (weights * torch.sin(phase.to(dtype)[..., None] * k)).sum(dim=-1)


def _host_arrays(phase, dist, left, w):
    """The kernels' float64 NumPy inputs and the frame segments of ``left``."""
    left_np = left.contiguous().numpy()
    return (
        phase.detach().to(torch.float64).contiguous().numpy(),
        dist.detach().to(torch.float64).contiguous().numpy(),
        left_np,
        w.detach().to(torch.float64).contiguous().numpy(),
        *_segments(left_np),
    )


class _HarmonicSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, phase, dist, left, w):
        phase64, dist64, left_np, w64, starts, longest = _host_arrays(phase, dist, left, w)
        out = np.empty_like(phase64)
        B, T = phase64.shape
        # Work in recursion-sample equivalents for the thread split: a vectorised harmonic
        # costs about a quarter of a serial recursion step.
        run_rows(_forward_kernel, B, B * T * dist64.shape[2] // 4,
                 phase64, dist64, left_np, w64, starts, longest, out)  # fmt: skip
        ctx.save_for_backward(phase, dist, left, w)
        return torch.from_numpy(out).to(torch.promote_types(phase.dtype, dist.dtype))

    @staticmethod
    def backward(ctx, grad):
        phase, dist, left, w = ctx.saved_tensors
        need_phase, need_dist = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph: differentiate the reference instead
            wanted = [t for t, need in ((phase, need_phase), (dist, need_dist)) if need]
            out = harmonic_sum_reference(phase, dist, left, w)
            grads = list(torch.autograd.grad(out, wanted, grad, create_graph=True))
            grad_phase = grads.pop(0) if need_phase else None
            grad_dist = grads.pop(0) if need_dist else None
            return grad_phase, grad_dist, None, None
        phase64, dist64, left_np, w64, starts, longest = _host_arrays(phase, dist, left, w)
        grad64 = grad.detach().to(torch.float64).contiguous().numpy()
        grad_phase = np.empty_like(phase64)
        grad_dist = np.zeros_like(dist64)
        B, T = phase64.shape
        run_rows(_backward_kernel, B, B * T * dist64.shape[2] // 4, grad64, phase64, dist64,
                 left_np, w64, starts, longest, grad_phase, grad_dist)  # fmt: skip
        return (
            torch.from_numpy(grad_phase).to(phase.dtype) if need_phase else None,
            torch.from_numpy(grad_dist).to(dist.dtype) if need_dist else None,
            None,
            None,
        )


def harmonic_sum(
    phase: torch.Tensor,
    dist: torch.Tensor,
    left: torch.Tensor,
    w: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """``h[b, n] = sum_k (D[b, l_n, k] + w_n (D[b, l_n + 1, k] - D[b, l_n, k])) sin(k phi[b, n])``.

    Args:
        phase: ``(batch, samples)`` phase ``phi`` in radians (float64 keeps ``k phi`` exact).
        dist: ``(batch, frames, harmonics)`` harmonic weights at frame rate.
        left: ``(samples,)`` int64 frame index ``l_n`` of each sample, non-decreasing, in
            ``[0, frames - 1]`` (frame ``l_n + 1`` is clamped to the last one).
        w: ``(samples,)`` interpolation weight ``w_n`` in [0, 1] towards frame ``l_n + 1``.
        backend: ``"auto"`` (the fused kernel for CPU tensors, tensor ops elsewhere),
            ``"numba"`` or ``"torch"``.

    Returns:
        ``(batch, samples)`` in ``promote(phase.dtype, dist.dtype)``; the kernel computes in
        float64 whatever the dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cpu = phase.device.type == "cpu" and dist.device.type == "cpu"
    if backend == "numba" and not on_cpu:
        raise ValueError("backend='numba' runs on CPU tensors only; use 'auto' or 'torch'")
    if backend == "torch" or not on_cpu:
        return harmonic_sum_reference(phase, dist, left, w)
    return _HarmonicSum.apply(phase, dist, left, w)
