"""Time-varying one-pole recursion as one autograd Function.

The recursion over the last axis of ``(rows, samples)`` tensors

    y[n] = x[n] + a[n] y[n-1],        y[-1] = 0,

is linear in ``x`` with a time-varying pole ``a[n]``. With ``g = dL/dy`` its adjoint is the
same recursion run backwards in time with the pole sequence shifted by one sample:

    w[n] = g[n] + a[n+1] w[n+1]        (w[T] = 0, a[T] taken as 0)
    dL/dx[n] = w[n]
    dL/da[n] = w[n] y[n-1]             (y[-1] = 0)

(torchlpc derives the same adjoint for its time-varying all-pole filter.) Back ends:

- ``"numba"``: compiled CPU loops, rows in parallel on at most ``torch.get_num_threads()``
  threads (:mod:`diffx.kernels.threads`); one pass forward, one fused reverse pass backward
  (input and pole gradients together).
- ``"cuda"``: a numba.cuda kernel with one thread per row (:mod:`diffx.kernels.cuda_kernels`),
  imported only when a CUDA tensor arrives. If numba's CUDA support is missing the reference
  loop runs instead, with a warning. Under numba's CUDA simulator it also takes CPU tensors,
  which is how the tests check it without a GPU.
- ``"torch"``: the reference, a plain Python loop over samples. Slow; used by the tests.

When the backward must itself be differentiable (``create_graph=True``), it is built from this
same Function applied to time-reversed gradients plus ordinary tensor ops, so every order of
derivative works on every back end.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx.kernels.cuda_launch import CudaKernels, cuda_backend_available_for
from diffx.kernels.threads import run_rows

BACKENDS = ("auto", "numba", "cuda", "torch")


# --------------------------------------------------------------------------------------------
# numba CPU back end
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _numba_forward(first_row, end_row, x, a, y):  # pragma: no cover - compiled
    n_samples = x.shape[1]
    for r in range(first_row, end_row):
        acc = 0.0
        for n in range(n_samples):
            acc = x[r, n] + a[r, n] * acc
            y[r, n] = acc


@njit(cache=True, nogil=True)
def _numba_backward(
    first_row, end_row, grad_y, a, y, grad_x, grad_a, need_a
):  # pragma: no cover - compiled
    n_samples = grad_y.shape[1]
    for r in range(first_row, end_row):
        w = 0.0
        a_next = 0.0  # a[n+1]; zero past the end
        for n in range(n_samples - 1, -1, -1):
            w = grad_y[r, n] + a_next * w
            grad_x[r, n] = w
            if need_a:
                grad_a[r, n] = w * y[r, n - 1] if n > 0 else 0.0
            a_next = a[r, n]


def _forward_numba(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    x_np = x.detach().contiguous().numpy()
    a_np = a.detach().contiguous().numpy()
    y = np.empty_like(x_np)
    run_rows(_numba_forward, x_np.shape[0], x_np.size, x_np, a_np, y)
    return torch.from_numpy(y)


def _backward_numba(grad_y, a, y, need_a):
    g_np = grad_y.detach().contiguous().numpy()
    a_np = a.detach().contiguous().numpy()
    y_np = y.detach().contiguous().numpy()
    grad_x = np.empty_like(g_np)
    grad_a = np.empty_like(g_np) if need_a else np.empty((1, 1), dtype=g_np.dtype)
    run_rows(
        _numba_backward, g_np.shape[0], g_np.size, g_np, a_np, y_np, grad_x, grad_a, bool(need_a)
    )
    return torch.from_numpy(grad_x), (torch.from_numpy(grad_a) if need_a else None)


# --------------------------------------------------------------------------------------------
# CUDA back end (numba.cuda, one thread per row), loaded on first use
# --------------------------------------------------------------------------------------------

# The kernels themselves are in diffx.kernels.cuda_kernels (ONEPOLE).
_CUDA = CudaKernels("ONEPOLE", "the one-pole recursion")


def _forward_cuda(x, a):
    x = x.detach().contiguous()
    y = torch.empty_like(x)
    if not _CUDA.launch(0, x.shape[0], x, a.detach().contiguous(), y):
        return _forward_torch(x, a)
    return y


def _backward_cuda(grad_y, a, y, need_a):
    grad_y = grad_y.detach().contiguous()
    grad_x = torch.empty_like(grad_y)
    grad_a = torch.empty_like(grad_y) if need_a else grad_y.new_empty(1, 1)
    launched = _CUDA.launch(
        1,
        grad_y.shape[0],
        grad_y,
        a.detach().contiguous(),
        y.detach().contiguous(),
        grad_x,
        grad_a,
        bool(need_a),
    )
    if not launched:
        return _backward_torch(grad_y, a, y, need_a)
    return grad_x, (grad_a if need_a else None)


# --------------------------------------------------------------------------------------------
# reference back end
# --------------------------------------------------------------------------------------------


def _forward_torch(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    acc = x.new_zeros(x.shape[0])
    out = []
    for n in range(x.shape[1]):
        acc = x[:, n] + a[:, n] * acc
        out.append(acc)
    return torch.stack(out, dim=1)


def _shift_forward(u: torch.Tensor) -> torch.Tensor:
    """u[n-1] with a zero before the start."""
    return torch.nn.functional.pad(u, (1, 0))[:, : u.shape[1]]


def _shift_back(u: torch.Tensor) -> torch.Tensor:
    """u[n+1] with a zero past the end."""
    return torch.nn.functional.pad(u, (0, 1))[:, 1:]


def _backward_torch(grad_y, a, y, need_a):
    w = _forward_torch(grad_y.flip(-1), _shift_back(a).flip(-1)).flip(-1)
    return w, (w * _shift_forward(y) if need_a else None)


# --------------------------------------------------------------------------------------------
# dispatch and the autograd Function
# --------------------------------------------------------------------------------------------

_FORWARD = {"numba": _forward_numba, "cuda": _forward_cuda, "torch": _forward_torch}
_BACKWARD = {"numba": _backward_numba, "cuda": _backward_cuda, "torch": _backward_torch}


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """Pick the back end: numba for CPU tensors, the numba.cuda kernel for CUDA tensors."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "cuda" if x.device.type == "cuda" else "numba" if x.device.type == "cpu" else "torch"
    if backend == "numba" and x.device.type != "cpu":
        raise ValueError("backend='numba' runs on CPU tensors only; use 'cuda' or 'auto'")
    if backend == "cuda" and not cuda_backend_available_for(x):
        # CPU tensors are accepted under numba's CUDA simulator only, which is how the tests
        # run the GPU kernels without a GPU (diffx.kernels.cuda_launch).
        raise ValueError(
            "backend='cuda' runs on CUDA tensors only (and on CPU tensors under numba's CUDA "
            "simulator, NUMBA_ENABLE_CUDASIM=1); use 'numba' or 'auto'"
        )
    return backend


class _OnePole(torch.autograd.Function):
    """y[n] = x[n] + a[n] y[n-1] over the last axis of (R, T) tensors."""

    @staticmethod
    def forward(x, a, backend):
        with torch.no_grad():
            return _FORWARD[backend](x, a)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, a, backend = inputs
        ctx.backend = backend
        # The output is saved as an output, so under create_graph its use in the backward is
        # itself differentiable (through this Function's own backward).
        ctx.save_for_backward(a, output)

    @staticmethod
    def backward(ctx, grad_y):
        a, y = ctx.saved_tensors
        need_x, need_a = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():
            w = _OnePole.apply(
                grad_y.flip(-1).contiguous(), _shift_back(a).flip(-1).contiguous(), ctx.backend
            ).flip(-1)
            grad_a = w * _shift_forward(y) if need_a else None
        else:
            w, grad_a = _BACKWARD[ctx.backend](grad_y, a, y, need_a)
        return (w if need_x else None), grad_a, None


def onepole(x: torch.Tensor, a: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Time-varying one-pole recursion ``y[n] = x[n] + a[n] y[n-1]`` with ``y[-1] = 0``.

    Args:
        x: ``(rows, samples)`` input.
        a: ``(rows, samples)`` pole per sample, or ``(rows, 1)`` for a fixed pole per row. The
            recursion is stable where ``|a| < 1``; it is not checked (no device sync).
        backend: ``"auto"`` (numba on CPU, numba.cuda on CUDA), ``"numba"``, ``"cuda"``,
            ``"torch"`` (reference loop).

    Returns:
        ``(rows, samples)`` output with ``x``'s dtype. Differentiable in ``x`` and ``a`` to any
        order.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be shaped (rows, samples), got shape {tuple(x.shape)}")
    if a.dim() != 2 or a.shape[0] != x.shape[0] or a.shape[1] not in (1, x.shape[1]):
        raise ValueError(
            f"a must be shaped (rows, samples) = {tuple(x.shape)} or (rows, 1), got shape "
            f"{tuple(a.shape)}"
        )
    if a.dtype != x.dtype or a.device != x.device:
        raise ValueError(
            f"a must have x's dtype and device ({x.dtype}, {x.device}), got ({a.dtype}, {a.device})"
        )
    backend = resolve_backend(backend, x)
    # expand() keeps autograd summing the gradient of a fixed pole over time.
    return _OnePole.apply(x.contiguous(), a.expand_as(x).contiguous(), backend)
