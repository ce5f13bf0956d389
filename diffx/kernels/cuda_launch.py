"""Launching the numba.cuda kernels of the recursions (:mod:`diffx.kernels.cuda_kernels`).

:class:`CudaKernels` names one recursion's ``(forward, backward)`` kernel pair, imports them on
first use (so ``numba.cuda`` is imported only when a CUDA back end runs) and
:meth:`CudaKernels.launch` runs one with one GPU thread per row. The same kernels serve two
targets:

- a GPU: arguments are torch CUDA tensors, handed to numba without a copy through
  ``__cuda_array_interface__`` and launched on torch's current stream of the tensors' device,
  so the kernel is ordered with the surrounding torch work without a host synchronization;
- numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is first imported): the
  kernels run as Python code on host arrays, so arguments are CPU tensors handed over as NumPy
  views (the kernel's writes land in the tensors). This is how the test suite checks the GPU
  kernels on a machine without a GPU (tests/kernels/test_cuda_simulator.py); it is slow, for
  short signals only.

numba 0.68's built-in ``numba.cuda`` provides the simulator; no extra package is needed for it.
On a real GPU numba.cuda also needs the CUDA toolkit's NVVM compiler, which PyTorch's wheels do
not ship; without it the first launch fails and the recursion falls back to its reference loop
with a warning (see ``docs/installing.md``).
"""

from __future__ import annotations

import importlib
import warnings

import torch

# Threads per block: each thread runs one row's whole recursion, so blocks only group rows; 64
# keeps several blocks (and so several multiprocessors) busy at the batch sizes of training
# (a few dozen to a few thousand rows).
THREADS_PER_BLOCK = 64


def simulator_enabled() -> bool:
    """Whether numba runs ``numba.cuda`` kernels in its simulator (``NUMBA_ENABLE_CUDASIM=1``,
    read when numba is first imported)."""
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def cuda_backend_available_for(x: torch.Tensor) -> bool:
    """Whether the ``"cuda"`` back end can take ``x``: a CUDA tensor, or under the simulator a
    CPU tensor (the simulator runs on host memory only)."""
    return x.device.type == "cuda" or (x.device.type == "cpu" and simulator_enabled())


class CudaKernels:
    """The numba.cuda kernels of one recursion, built on first use.

    Args:
        name: the kernel tuple's name in :mod:`diffx.kernels.cuda_kernels`, e.g. ``"ONEPOLE"``.
        what: the recursion's name for warnings, e.g. ``"the one-pole recursion"``.
        module: the module of :mod:`diffx.kernels` holding the kernel tuple (default
            ``"cuda_kernels"``; the time-varying filters keep theirs in ``"cuda_varying"``).
    """

    def __init__(self, name: str, what: str, module: str = "cuda_kernels"):
        self._name = name
        self._module = module
        self._what = what
        self._kernels: tuple | bool | None = None  # False once known to be unusable

    def _unusable(self, err: BaseException) -> None:
        warnings.warn(
            f"numba.cuda is unavailable ({err}); {self._what} falls back to the slow reference "
            "loop on CUDA tensors",
            RuntimeWarning,
            stacklevel=4,
        )
        self._kernels = False

    def get(self) -> tuple | bool:
        """The built kernels, or ``False`` when numba.cuda cannot run here (warned once)."""
        if self._kernels is None:
            try:
                from numba import cuda

                if not cuda.is_available():
                    raise RuntimeError("numba.cuda sees no device")
                kernels = importlib.import_module(f"diffx.kernels.{self._module}")
                self._kernels = getattr(kernels, self._name)
            except Exception as err:  # noqa: BLE001 - any failure means "no CUDA kernel"
                self._unusable(err)
        return self._kernels

    def launch(self, index: int, n_rows: int, *args) -> bool:
        """Run kernel ``index`` over ``n_rows`` rows, one thread per row, and return ``True``;
        ``False`` (nothing run, warned once) when numba.cuda cannot compile or run here.

        Args:
            index: 0 for the forward kernel, 1 for the backward one.
            n_rows: rows of the signals (the grid covers them).
            args: the kernel's arguments: contiguous tensors all on one device (CUDA, or CPU
                under the simulator; written in place) and Python scalars.
        """
        kernels = self.get()
        if not kernels:
            return False
        try:
            _launch(kernels[index], n_rows, *args)
        except ImportError as err:
            # numba's CudaSupportError / NvvmSupportError are ImportErrors: the driver or the
            # toolkit's compiler is missing, which only shows when the kernel is first compiled.
            self._unusable(err)
            return False
        return True


def _launch(kernel, n_rows: int, *args) -> None:
    from numba import cuda

    blocks = max(1, (n_rows + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK)
    tensors = [t for t in args if isinstance(t, torch.Tensor)]
    if simulator_enabled():
        if any(t.device.type != "cpu" for t in tensors):
            raise ValueError("numba's CUDA simulator runs on CPU tensors only")
        # Zero-copy NumPy views: the simulator writes its outputs straight into the tensors.
        kernel[blocks, THREADS_PER_BLOCK](
            *[t.numpy() if isinstance(t, torch.Tensor) else t for t in args]
        )
        return
    device = tensors[0].device
    with torch.cuda.device(device):
        # The context manager makes the tensors' device numba's current one too (numba attaches
        # to the context torch made current), so a tensor on cuda:1 is not launched on cuda:0.
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        # sync=False: the kernel runs on torch's current stream, which already orders it after
        # the work that produced its inputs; numba's default would block the host on that stream
        # once per argument.
        kernel[blocks, THREADS_PER_BLOCK, stream](
            *[cuda.as_cuda_array(t, sync=False) if isinstance(t, torch.Tensor) else t for t in args]
        )
