"""How diffx's CPU kernels use threads: at most ``torch.get_num_threads()``, and no spinning.

The numba kernels run their rows (batch x channel signals) in parallel. They used to do that
with numba's own ``prange`` thread pool, which has two problems where users train:

- its size is fixed when numba starts (``NUMBA_NUM_THREADS``, all cores by default), whatever
  ``torch.set_num_threads`` says, so in DDP with several processes per node, beside DataLoader
  workers or on a shared machine, torch's threads and numba's fight over the same cores;
- its OpenMP back end keeps its threads spinning after every parallel region, burning the time
  slices that torch and the other processes need. With two competing single-thread processes on
  two cores, a style-transfer training step ran 5x slower than with ``NUMBA_NUM_THREADS=1``.

So the kernels are compiled serially over a range of rows (``nogil=True``) and launched here:
the calling thread and ``n - 1`` threads of a small pool claim the rows a few at a time until
none are left. Waiting threads block on a queue (the operating system wakes them), so nothing
spins, and ``n`` is

    n = min(torch.get_num_threads(), rows, samples // MIN_SAMPLES_PER_THREAD)   (at least 1)

which follows whatever the user, Lightning (it sets ``cores // processes`` under DDP unless
``OMP_NUM_THREADS`` is set) or a DataLoader worker (one thread) has set, and stays serial where
the work is too small to split (a thread hand-off costs tens of microseconds). To give the
kernels fewer threads than torch, call :func:`set_max_threads`.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

# Below this many samples per thread the hand-off costs more than it saves (gradcheck calls,
# short signals): about 30 us of thread wake-up against about 1 ns per sample of recursion.
MIN_SAMPLES_PER_THREAD = 1 << 15

_max_threads: int | None = None  # user cap below torch.get_num_threads(); None = no cap
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None  # a forked child (DataLoader worker) must not reuse the parent's
_pool_lock = threading.Lock()


def set_max_threads(n: int | None) -> None:
    """Cap the threads of diffx's CPU kernels at ``n`` (``None``: follow torch's setting only).

    Raises:
        ValueError: when ``n`` is not a positive integer or ``None``.
    """
    global _max_threads
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"max threads must be a positive integer or None, got {n!r}")
    _max_threads = n


def thread_count(n_rows: int, n_samples: int) -> int:
    """Threads a kernel over ``n_rows`` rows and ``n_samples`` samples in all will use."""
    limit = torch.get_num_threads()
    if _max_threads is not None:
        limit = min(limit, _max_threads)
    return max(1, min(limit, n_rows, n_samples // MIN_SAMPLES_PER_THREAD))


def _executor() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            # Threads start on first use and then wait, blocked, for work. Sized for the most
            # threads torch could ask for; only ``thread_count - 1`` are ever given work at once
            # by one caller.
            _pool = ThreadPoolExecutor(
                max_workers=max(1, (os.cpu_count() or 1) - 1), thread_name_prefix="diffx-kernel"
            )
            _pool_pid = os.getpid()
        return _pool


def run_rows(kernel: Callable[..., None], n_rows: int, n_samples: int, *args) -> None:
    """Run ``kernel(first_row, end_row, *args)`` over rows ``[0, n_rows)`` on up to
    :func:`thread_count` threads, the calling thread included, and wait for all of them.

    ``kernel`` must be a numba function compiled with ``nogil=True`` that touches only rows
    ``first_row .. end_row - 1`` of its outputs, so the ranges run concurrently without locks.
    The rows are claimed a few at a time by whichever thread is free rather than split in fixed
    halves: a pool thread can wake late (torch's OpenMP threads keep a core busy-waiting for a
    few milliseconds after each torch op), and the calling thread then carries on with the rows
    instead of waiting for it. Which thread runs a row never changes its result.
    """
    n_threads = thread_count(n_rows, n_samples)
    if n_threads == 1:
        kernel(0, n_rows, *args)
        return
    chunk = max(1, n_rows // (4 * n_threads))
    starts = itertools.count(0, chunk)  # next() is atomic under the GIL: each start once

    def claim_and_run() -> None:
        for first in starts:
            if first >= n_rows:
                return
            kernel(first, min(first + chunk, n_rows), *args)

    pool = _executor()
    others = [pool.submit(claim_and_run) for _ in range(n_threads - 1)]
    try:
        claim_and_run()
    finally:
        for future in others:
            future.result()  # re-raises a worker's error here, in the caller
