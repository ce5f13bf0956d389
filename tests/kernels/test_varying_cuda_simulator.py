"""The time-varying filters' numba.cuda kernels, run in numba's CUDA simulator, against the
reference back end (as tests/kernels/test_cuda_simulator.py does for the other recursions).

The child process (``NUMBA_ENABLE_CUDASIM=1``) checks, float32 and float64, with two channels
per item (the coefficient gradients are summed across threads by atomic adds) and with more
rows than a thread block: the forward output, the first-order gradients from the fused backward
kernels, and a second-order gradient (``create_graph=True``, built from the forward kernels) of
the DF-I cascade and of the SVF in each mode, against ``backend="torch"``; and that the kernels
really ran in the simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
N_CHECKS = 8


def test_varying_cuda_kernels_match_reference_in_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.kernels.test_varying_cuda_simulator"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, f"simulator checks failed:\n{out.stdout}\n{out.stderr[-6000:]}"
    assert out.stdout.count(" ok") == N_CHECKS, out.stdout


# --------------------------------------------------------------------------------------------
# The child: runs only under the simulator.


def _check_sos(dtype, batch, channels, samples):
    from diffx.kernels.varying import sos_cascade_varying
    from tests.kernels.test_cuda_simulator import _compare
    from tests.kernels.test_varying import swept_sections

    coef = torch.from_numpy(swept_sections(batch, 2, samples, seed=batch))
    x = torch.randn(batch, channels, samples, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(samples)).to(dtype)  # fmt: skip
    _compare(sos_cascade_varying, [x, coef], dtype, [True, True], samples)


def _check_svf(dtype, mode, batch, channels, samples):
    from diffx.kernels.varying import svf
    from tests.kernels.test_cuda_simulator import _compare
    from tests.kernels.test_varying import svf_params

    g, k = svf_params(batch, samples, seed=samples)
    x = torch.randn(batch, channels, samples, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(batch)).to(dtype)  # fmt: skip

    def fn(a, b, c, backend):
        return svf(a, b, c, mode, backend)

    # g and k stay float64, as state_variable_filter passes them for float32 audio.
    _compare(fn, [x, g, k], dtype, [True, True, True], samples)


def _child() -> None:
    from numba import cuda

    from diffx.kernels import cuda_varying, varying
    from diffx.kernels.cuda_launch import THREADS_PER_BLOCK, simulator_enabled

    assert simulator_enabled(), "run with NUMBA_ENABLE_CUDASIM=1 set before numba is imported"
    assert cuda.is_available()
    warnings.simplefilter("error", RuntimeWarning)  # a fallback would make the checks trivial
    f32, f64 = torch.float32, torch.float64
    checks = [
        ("sos float64, 2 channels", _check_sos, (f64, 2, 2, 40)),
        ("sos float32, 2 channels", _check_sos, (f32, 2, 2, 40)),
        ("sos, two blocks", _check_sos, (f64, THREADS_PER_BLOCK // 2 + 3, 2, 12)),
        ("svf lowpass float64", _check_svf, (f64, "lowpass", 2, 2, 40)),
        ("svf bandpass float32", _check_svf, (f32, "bandpass", 2, 2, 40)),
        ("svf highpass float64", _check_svf, (f64, "highpass", 2, 2, 40)),
        ("svf, two blocks", _check_svf, (f64, "bandpass", THREADS_PER_BLOCK // 2 + 3, 2, 12)),
    ]
    for name, check, args in checks:
        check(*args)
        print(f"{name}: ok", flush=True)
    assert varying._CUDA_SOS.get() is cuda_varying.SOS
    assert varying._CUDA_SVF.get() is cuda_varying.SVF
    assert varying._CUDA_SS.get() is cuda_varying.STATE_SPACE
    assert type(cuda_varying.sos_forward).__name__ == "FakeCUDAKernel"
    print("kernels ran in the simulator: ok", flush=True)


if __name__ == "__main__":
    _child()
