"""The numba.cuda kernels, run in numba's CUDA simulator, against the reference back end.

No GPU is needed: with ``NUMBA_ENABLE_CUDASIM=1`` numba runs ``@cuda.jit`` kernels as Python
threads on host arrays, and the ``"cuda"`` back ends then take CPU tensors
(:mod:`diffx.kernels.cuda_launch`). The variable is read once, when numba is first imported, so
the checks run in a subprocess that sets it; this file is both the pytest test (the parent) and
the subprocess's script (``python -m tests.kernels.test_cuda_simulator``). The simulator is slow
(microseconds per array access), so the signals are short: a few rows x a few hundred samples,
and one case with more rows than a thread block to check the grid's bounds guard.

What the child checks, for the one-pole recursion and the compressor ballistics, float32 and
float64: the forward output, the first-order gradients (computed by the backward kernel) and a
second-order gradient (``create_graph=True``, built from the forward kernel of the reversed
recursion) against ``backend="torch"``; the compressor end to end with ``backend="cuda"``; and
that the kernels really ran in the simulator (no silent fallback to the reference loop).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
N_CHECKS = 9  # the child prints one "ok" line per check


def test_cuda_kernels_match_reference_in_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.kernels.test_cuda_simulator"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"simulator checks failed:\n{out.stdout}\n{out.stderr[-6000:]}"
    assert out.stdout.count(" ok") == N_CHECKS, out.stdout


# --------------------------------------------------------------------------------------------
# The child: runs only under the simulator.


def _tol(dtype):
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    return {"rtol": tol, "atol": tol}


def _grads(fn, inputs, weight, create_graph=False):
    """Output and first-order gradients of ``sum(weight * fn(*inputs))`` w.r.t. the inputs
    that require grad (the others give ``None``)."""
    y = fn(*inputs)
    wanted = [t for t in inputs if t.requires_grad]
    got = iter(torch.autograd.grad((y * weight).sum(), wanted, create_graph=create_graph))
    return y, [next(got) if t.requires_grad else None for t in inputs]


def _compare(fn, inputs, dtype, need, n_samples):
    """Forward, first-order and second-order results of ``fn(..., backend)`` for the simulated
    ``"cuda"`` back end against ``"torch"``."""
    weight = torch.linspace(-1.0, 1.0, n_samples, dtype=dtype)
    results = {}
    for backend in ("cuda", "torch"):
        ins = [t.detach().clone().requires_grad_(r) for t, r in zip(inputs, need)]

        def call(*args, backend=backend):
            return fn(*args, backend=backend)

        with torch.no_grad():
            forward = call(*ins)
        # First order: the backward runs without a graph, so the backward kernel computes it.
        _, first = _grads(call, ins, weight)
        # Second order: the backward is rebuilt from the forward Function (the forward kernel on
        # the time-reversed signal) and differentiated again.
        _, grads = _grads(call, ins, weight, create_graph=True)
        total = sum(g.square().sum() for g in grads if g is not None)
        # Zeros where a gradient does not depend on an input (the recursions are linear in
        # x); nothing when no gradient does (dL/dx of the one-pole with a fixed pole).
        second = ()
        if total.requires_grad:
            wanted = [t for t in ins if t.requires_grad]
            second = torch.autograd.grad(total, wanted, materialize_grads=True)
        results[backend] = (forward, first, second)
    sim, ref = results["cuda"], results["torch"]
    torch.testing.assert_close(sim[0], ref[0], **_tol(dtype))
    for a, b in zip(sim[1], ref[1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, **_tol(dtype))
    for a, b in zip(sim[2], ref[2]):
        torch.testing.assert_close(a, b, **_tol(dtype))


def _check_onepole(dtype, rows, samples, fixed_pole, need_a):
    from diffx.kernels.onepole import onepole

    gen = torch.Generator().manual_seed(rows + samples)
    x = torch.randn(rows, samples, generator=gen, dtype=torch.float64).to(dtype)
    a = (torch.rand(rows, 1 if fixed_pole else samples, generator=gen, dtype=torch.float64) * 1.9
         - 0.95).to(dtype)  # fmt: skip
    _compare(onepole, [x, a], dtype, [True, need_a], samples)


def _check_ballistics(dtype, rows, samples):
    from diffx.kernels.ballistics import attack_release

    gen = torch.Generator().manual_seed(rows * samples)
    g = (-30 * torch.rand(rows, samples, generator=gen, dtype=torch.float64)).to(dtype)
    aa = torch.linspace(0.2, 0.7, rows, dtype=dtype)
    ar = torch.linspace(0.8, 0.97, rows, dtype=dtype)
    _compare(attack_release, [g, aa, ar], dtype, [True, True, True], samples)


def _check_compressor():
    from diffx.functional.dynamics import compressor

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 300, generator=gen, dtype=torch.float64) * 0.5
    outs = {}
    for backend in ("cuda", "torch"):
        xi = x.clone().requires_grad_()
        threshold = torch.tensor([-20.0, -10.0], dtype=torch.float64, requires_grad=True)
        y = compressor(xi, 44100.0, threshold, 4.0, 1.0, 20.0, knee_db=6.0, backend=backend)
        y.square().sum().backward()
        outs[backend] = (y.detach(), xi.grad, threshold.grad)
    for a, b in zip(outs["cuda"], outs["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _child() -> None:
    from numba import cuda

    from diffx.kernels import ballistics, cuda_kernels
    from diffx.kernels.cuda_launch import THREADS_PER_BLOCK, simulator_enabled

    # The package exports the function onepole under the submodule's name.
    onepole_module = importlib.import_module("diffx.kernels.onepole")

    assert simulator_enabled(), "run with NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
    assert cuda.is_available()
    # A fallback to the reference loop would warn and make every comparison trivially pass.
    warnings.simplefilter("error", RuntimeWarning)
    f32, f64, many = torch.float32, torch.float64, THREADS_PER_BLOCK + 6
    checks = [
        # (name, check, arguments); "many" rows need two blocks, whose idle threads must not
        # write past the last row.
        ("onepole float64, varying pole", _check_onepole, (f64, 3, 300, False, True)),
        ("onepole float32, fixed pole", _check_onepole, (f32, 3, 300, True, True)),
        ("onepole float64, no pole grad", _check_onepole, (f64, 2, 200, False, False)),
        ("onepole, two blocks", _check_onepole, (f64, many, 40, False, True)),
        ("ballistics float64", _check_ballistics, (f64, 3, 300)),
        ("ballistics float32", _check_ballistics, (f32, 3, 300)),
        ("ballistics, two blocks", _check_ballistics, (f64, many, 40)),
        ("compressor backend='cuda'", _check_compressor, ()),
    ]
    for name, check, args in checks:
        check(*args)
        print(f"{name}: ok", flush=True)
    # The kernels were built from the simulator's module, not replaced by the fallback.
    assert onepole_module._CUDA.get() is cuda_kernels.ONEPOLE
    assert ballistics._CUDA.get() is cuda_kernels.BALLISTICS
    assert type(cuda_kernels.onepole_forward).__name__ == "FakeCUDAKernel"
    print("kernels ran in the simulator: ok", flush=True)


if __name__ == "__main__":
    _child()
