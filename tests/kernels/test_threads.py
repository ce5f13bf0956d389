"""The CPU kernels' threads: at most torch.get_num_threads(), one where the work is small,
results independent of the thread count, no spinning while idle, safe after fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from diffx.kernels import threads
from diffx.kernels.threads import MIN_SAMPLES_PER_THREAD, run_rows, set_max_threads, thread_count


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test and restore it (conftest pins 1 for workers)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
    set_max_threads(None)


def _threads_used(n_rows: int, n_samples: int) -> set[int]:
    seen: set[int] = set()
    lock = threading.Lock()

    def kernel(first, end):
        time.sleep(0.02)  # long enough for every range to overlap with the others
        with lock:
            seen.add(threading.get_ident())

    run_rows(kernel, n_rows, n_samples)
    return seen


def test_thread_count_follows_torch_rows_and_work(torch_threads):
    big = 8 * MIN_SAMPLES_PER_THREAD
    torch_threads(1)
    assert thread_count(8, big) == 1
    torch_threads(2)
    assert thread_count(8, big) == 2
    assert thread_count(1, big) == 1  # one row cannot be split
    assert thread_count(8, MIN_SAMPLES_PER_THREAD - 1) == 1  # too little work
    assert thread_count(8, 2 * MIN_SAMPLES_PER_THREAD) == 2
    set_max_threads(1)
    assert thread_count(8, big) == 1


def test_run_rows_uses_that_many_threads_and_covers_every_row_once(torch_threads):
    torch_threads(2)
    assert len(_threads_used(8, 8 * MIN_SAMPLES_PER_THREAD)) == 2
    torch_threads(1)
    assert _threads_used(8, 8 * MIN_SAMPLES_PER_THREAD) == {threading.get_ident()}
    torch_threads(2)
    rows: list[int] = []
    run_rows(lambda first, end: rows.extend(range(first, end)), 7, 7 * MIN_SAMPLES_PER_THREAD)
    assert sorted(rows) == list(range(7))


def test_a_worker_error_reaches_the_caller(torch_threads):
    torch_threads(2)

    def kernel(first, end):
        if first > 0:
            raise ArithmeticError("row range failed")

    with pytest.raises(ArithmeticError, match="row range failed"):
        run_rows(kernel, 4, 4 * MIN_SAMPLES_PER_THREAD)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_max_threads_refuses_non_positive_integers(bad):
    with pytest.raises(ValueError, match="max threads"):
        set_max_threads(bad)


@pytest.mark.parametrize("op", ["sosfilt", "compressor", "onepole"])
def test_threaded_results_equal_the_single_thread_results(torch_threads, op):
    from diffx.functional.dynamics import compressor
    from diffx.functional.filters import sosfilt
    from diffx.kernels.onepole import onepole

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 2 * MIN_SAMPLES_PER_THREAD, generator=gen) * 0.5
    a = torch.rand(4, 2 * MIN_SAMPLES_PER_THREAD, generator=gen) * 0.5 + 0.4
    sos = torch.tensor([[0.3, 0.2, 0.1, 1.0, -0.6, 0.3], [1.0, -0.5, 0.2, 1.0, 0.1, 0.05]])

    def run():
        xx = x.clone().requires_grad_()
        if op == "sosfilt":
            coeffs = sos.clone().requires_grad_()
            y = sosfilt(xx, coeffs)
            extra = coeffs
        elif op == "compressor":
            thr = torch.full((4,), -20.0, requires_grad=True)
            y = compressor(xx, 44100.0, threshold_db=thr, ratio=4.0, attack_ms=5.0,
                           release_ms=50.0, knee_db=6.0, makeup_gain_db=0.0)  # fmt: skip
            extra = thr
        else:
            aa = a.clone().requires_grad_()
            y = onepole(xx[:, 0], aa)
            extra = aa
        y.square().sum().backward()
        return y.detach(), xx.grad, extra.grad

    torch_threads(1)
    serial = run()
    torch_threads(2)
    assert thread_count(4, x.numel()) == 2
    threaded = run()
    for s, t in zip(serial, threaded):
        torch.testing.assert_close(t, s, rtol=0, atol=0)


def _cpu_ticks(native_id: int) -> int:
    fields = open(f"/proc/self/task/{native_id}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_idle_kernel_threads_do_not_spin(torch_threads):
    from diffx.functional.filters import sosfilt

    torch_threads(2)
    x = torch.randn(4, 1, 4 * MIN_SAMPLES_PER_THREAD)
    sosfilt(x, torch.tensor([[0.3, 0.2, 0.1, 1.0, -0.6, 0.3]]))
    workers = [t.native_id for t in threading.enumerate() if t.name.startswith("diffx-kernel")]
    assert workers, "the parallel call started no kernel thread"
    before = [_cpu_ticks(tid) for tid in workers]
    time.sleep(0.5)
    after = [_cpu_ticks(tid) for tid in workers]
    # A spinning thread would use about 50 ticks (100 Hz clock) in 0.5 s; a blocked one none.
    assert all(b - a <= 1 for a, b in zip(before, after)), (before, after)


def test_numba_thread_pool_never_starts():
    """numba's own (spinning, fixed-size) parallel pool is not used by any diffx op."""
    code = (
        "import torch, numba.np.ufunc.parallel as p\n"
        "torch.set_num_threads(2)\n"
        "from diffx.functional.dynamics import compressor\n"
        "from diffx.functional.filters import sosfilt\n"
        "from diffx.kernels.ballistics import attack_release\n"
        "x = torch.randn(8, 1, 1 << 16, requires_grad=True)\n"
        "y = compressor(x, 44100.0, threshold_db=-20.0, ratio=4.0, attack_ms=5.0,"
        " release_ms=50.0, knee_db=6.0, makeup_gain_db=0.0)\n"
        "y = sosfilt(y, torch.tensor([[0.3, 0.2, 0.1, 1.0, -0.6, 0.3]]))\n"
        "y.sum().backward()\n"
        "print(p._is_initialized)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_parallel_kernels_work_in_a_forked_child(torch_threads):
    """A DataLoader worker forks after the parent has used the pool; the child must not wait
    on the parent's threads (which do not exist in the child)."""
    torch_threads(2)
    _threads_used(4, 4 * MIN_SAMPLES_PER_THREAD)  # the parent's pool exists now
    assert threads._pool is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        signal.alarm(60)  # a deadlocked child ends (SIGALRM) instead of hanging the test
        try:
            ok = len(_threads_used(4, 4 * MIN_SAMPLES_PER_THREAD)) == 2
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
