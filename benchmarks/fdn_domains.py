"""Time domain (diffx's recursion) against frequency sampling for the FDN reverb and the echo:
forward + backward time and the error of frequency sampling (its aliased tail).

The figures behind the design choice in ``diffx/functional/delay.py``. Frequency sampling is
written here in float64 the way DiffVox and FLAMO evaluate a delay network: the transfer
function on the bins of an FFT of ``2 T`` points (Sherman-Morrison for the Householder matrix:
O(N) per bin), times the input's spectrum. Run with one thread, e.g.::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 taskset -c 1 python benchmarks/fdn_domains.py
"""

from __future__ import annotations

import math
import statistics
import time

import torch

import diffx.functional as F
from diffx.functional import delay as D

SR, B, T, N = 48000.0, 2, 65536, 8
RT60 = [2.0, 1.5, 0.8]
ECHO_DELAY_MS, ECHO_FEEDBACK = [123.45, 250.5], [0.7, 0.5]
LOWPASS_HZ, HIGHPASS_HZ = 5000.0, 100.0


def response(sos: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """Frequency response of sections ``(..., 5)`` at ``z^-1 = z1`` (bins last)."""
    num = sos[..., 0:1] + sos[..., 1:2] * z1 + sos[..., 2:3] * z1**2
    return num / (1 + sos[..., 3:4] * z1 + sos[..., 4:5] * z1**2)


def fdn_time(x, delays):
    rt60 = torch.tensor([RT60] * B, dtype=torch.float64, requires_grad=True)
    y = F.fdn_reverb(x, SR, rt60, mix=1.0, delays=delays)[:, 0]
    y.square().sum().backward()
    return y.detach().double()


def fdn_frequency(x, delays):
    rt60 = torch.tensor([RT60] * B, dtype=torch.float64, requires_grad=True)
    sos = D.fdn_absorption_sos(delays, rt60, SR)  # (B, N, K, 5)
    n_fft = 2 * T
    w = torch.linspace(0, math.pi, n_fft // 2 + 1, dtype=torch.float64)
    z1 = torch.exp(-1j * w)
    g = torch.exp(-1j * w[None] * torch.tensor(delays, dtype=torch.float64)[:, None])
    for k in range(sos.shape[2]):
        g = g * response(sos[:, :, k], z1)  # H_i(z) z^-m_i, (B, N, bins)
    gain = 1 / math.sqrt(N)
    # u = (I - G A)^-1 G b with A = I - (2/N) 1 1^T: diag(1 - g) + (2/N) g 1^T.
    d = 1 - g
    d_rhs, d_p = g * gain / d, (2 / N) * g / d
    u = d_rhs - d_p * (d_rhs.sum(1, keepdim=True) / (1 + d_p.sum(1, keepdim=True)))
    h = (gain * u).sum(1)
    y = torch.fft.irfft(torch.fft.rfft(x[:, 0].double(), n=n_fft) * h, n=n_fft)[:, :T]
    y.square().sum().backward()
    return y.detach()


def echo_time(x):
    delay = torch.tensor(ECHO_DELAY_MS, requires_grad=True)
    y = F.feedback_delay(x, SR, delay, torch.tensor(ECHO_FEEDBACK), 1.0,
                         lowpass_hz=LOWPASS_HZ, highpass_hz=HIGHPASS_HZ)[:, 0]  # fmt: skip
    y.square().sum().backward()
    return y.detach().double()


def echo_frequency(x):
    delay = torch.tensor(ECHO_DELAY_MS, dtype=torch.float64, requires_grad=True)
    n_fft = 2 * T
    w = torch.linspace(0, math.pi, n_fft // 2 + 1, dtype=torch.float64)
    z1 = torch.exp(-1j * w)
    loop = 1
    for kind, freq in (("low_pass", LOWPASS_HZ), ("high_pass", HIGHPASS_HZ)):
        design = F.biquad(kind, torch.tensor([freq], dtype=torch.float64), D.BUTTERWORTH_Q, SR)
        loop = loop * response(D._normalized(design), z1)
    samples = delay * SR / 1000
    whole = torch.floor(samples.detach())
    frac = samples - whole
    line = torch.exp(-1j * w[None] * whole[:, None]) * ((1 - frac)[:, None] + frac[:, None] * z1)
    feedback = torch.tensor(ECHO_FEEDBACK, dtype=torch.float64)[:, None]
    h = line * loop / (1 - feedback * line * loop)
    y = torch.fft.irfft(torch.fft.rfft(x[:, 0].double(), n=n_fft) * h, n=n_fft)[:, :T]
    y.square().sum().backward()
    return y.detach()


def median_ms(fn, *args, repeats: int = 7) -> tuple[float, float]:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main() -> None:
    x = torch.randn(B, 1, T, generator=torch.Generator().manual_seed(0)).requires_grad_()
    delays = D.fdn_delays(N, SR)
    cases = (("fdn", fdn_time, fdn_frequency, (x, delays)),
             ("echo", echo_time, echo_frequency, (x,)))  # fmt: skip
    for name, exact, sampled, args in cases:
        y, y_sampled = exact(*args), sampled(*args)
        error = float((y - y_sampled).abs().max() / y.abs().max())
        (t_med, t_best), (f_med, f_best) = median_ms(exact, *args), median_ms(sampled, *args)
        print(f"{name}: time domain {t_med:.1f} ms (best {t_best:.1f}), frequency sampling "
              f"{f_med:.1f} ms (best {f_best:.1f}), its error {error:.2e} of the peak")  # fmt: skip


if __name__ == "__main__":
    main()
