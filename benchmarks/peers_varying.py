"""Time-varying filtering benchmarked against philtorch (issue 24), in the form of
:mod:`peers`: an :class:`peers.Op` per operation, in :data:`OPS`.

``varying_biquad``: two second-order sections whose coefficients change every sample, a
low pass at a swept cutoff ``c[n]`` followed by a high pass at ``c[n] / 8`` (a band that moves
with the sweep), both RBJ-cookbook designs with one Q per item. The sweep is a raised-cosine
LFO, geometric between ``min_freq_hz`` and ``max_freq_hz``:

    c[n] = min_freq_hz (max_freq_hz / min_freq_hz)^((1 - cos(2 pi rate_hz n / fs)) / 2).

Every implementation computes the per-sample coefficients from these physical parameters inside
the timed call (so gradients reach them) and filters in direct form I, the form whose
coefficients at sample n act only at n:

- diffx: :func:`diffx.functional.biquad_trajectory` (float64 designs) +
  :func:`diffx.functional.sosfilt_varying` (numba DF-I recursion and fused adjoint).
- philtorch: ``philtorch.lpv.lfilter(b, a, x, form="df1")`` per section, the coefficients from
  the same cookbook formulas in the parameters' dtype (float32 here).

The reference is a float64 per-sample DF-I loop (numba) on float64 coefficients.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from peers import SAMPLE_RATE, Impl, Op, Params, noise_input

HIGH_PASS_RATIO = 8.0  # the high pass sits this factor below the low pass


def _params(batch: int, rng: np.random.Generator) -> Params:
    return {
        "min_freq_hz": torch.from_numpy(np.exp(rng.uniform(np.log(200), np.log(800), batch))),
        "max_freq_hz": torch.from_numpy(np.exp(rng.uniform(np.log(2000), np.log(8000), batch))),
        "rate_hz": torch.from_numpy(rng.uniform(0.5, 5.0, batch)),
        "q": torch.from_numpy(np.exp(rng.uniform(np.log(0.5), np.log(4.0), batch))),
    }


def cutoff_trajectory(p, n_samples: int):
    """``(batch, samples)`` swept cutoff in Hz; torch or NumPy parameters ``(batch,)``."""
    lib = torch if isinstance(p["q"], torch.Tensor) else np
    if lib is torch:
        n = torch.arange(n_samples, dtype=p["q"].dtype, device=p["q"].device)
    else:
        n = np.arange(n_samples, dtype=np.float64)
    lo, hi, rate = p["min_freq_hz"][:, None], p["max_freq_hz"][:, None], p["rate_hz"][:, None]
    position = 0.5 - 0.5 * lib.cos(2 * math.pi * rate * n / SAMPLE_RATE)
    return lo * lib.exp(position * lib.log(hi / lo))


def rbj_pass(kind: str, freq_hz, q):
    """RBJ low/high pass, normalized: ``(b (..., 3), a (..., 2))`` for torch or NumPy input."""
    lib = torch if isinstance(freq_hz, torch.Tensor) else np
    w0 = 2 * math.pi * freq_hz / SAMPLE_RATE
    cos_w0, alpha = lib.cos(w0), lib.sin(w0) / (2 * q)
    a0 = 1 + alpha
    if kind == "low_pass":
        b = [(1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2]
    else:
        b = [(1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2]
    a = [-2 * cos_w0, 1 - alpha]
    stack = torch.stack if lib is torch else np.stack
    return stack([v / a0 for v in b], -1), stack([v / a0 for v in a], -1)


def _sections(p, n_samples: int):
    """The two sections' ``(b, a)`` per sample: ``(batch, samples, 3)``, ``(batch, samples, 2)``."""
    c = cutoff_trajectory(p, n_samples)
    q = p["q"][:, None]
    return [rbj_pass("low_pass", c, q), rbj_pass("high_pass", c / HIGH_PASS_RATIO, q)]


@numba.njit(cache=True)
def _df1_64(x, b, a):  # pragma: no cover - compiled
    """x (B, T); b (B, T, 3); a (B, T, 2): one DF-I section per row, float64."""
    y = np.zeros_like(x)
    for r in range(x.shape[0]):
        for n in range(x.shape[1]):
            acc = b[r, n, 0] * x[r, n]
            if n >= 1:
                acc += b[r, n, 1] * x[r, n - 1] - a[r, n, 0] * y[r, n - 1]
            if n >= 2:
                acc += b[r, n, 2] * x[r, n - 2] - a[r, n, 1] * y[r, n - 2]
            y[r, n] = acc
    return y


def _reference(x64: np.ndarray, p64: dict[str, np.ndarray]) -> np.ndarray:
    B, _, T = x64.shape
    y = x64[:, 0]
    for b, a in _sections(p64, T):
        y = _df1_64(np.ascontiguousarray(y), np.ascontiguousarray(b), np.ascontiguousarray(a))
    return y[:, None]


def _diffx(x: torch.Tensor, p: Params) -> torch.Tensor:
    import diffx.functional as F

    T = x.shape[-1]
    # float64 parameters: the designs are float64 and stay so (sosfilt_varying's recursion
    # and coefficients are float64 whatever the audio's dtype); gradients pass the casts.
    p64 = {k: v.double() for k, v in p.items()}
    c = cutoff_trajectory(p64, T)
    sos = torch.stack([
        F.biquad_trajectory("low_pass", c, p64["q"], SAMPLE_RATE),
        F.biquad_trajectory("high_pass", c / HIGH_PASS_RATIO, p64["q"], SAMPLE_RATE),
    ], dim=1)  # fmt: skip
    return F.sosfilt_varying(x, sos)


def _philtorch(x: torch.Tensor, p: Params) -> torch.Tensor:
    from philtorch.lpv import lfilter

    B, _, T = x.shape
    y = x.reshape(B, T)
    for b, a in _sections(p, T):
        y = lfilter(b, a, y, form="df1")
    return y.reshape(B, 1, T)


VARYING_BIQUAD = Op(
    name="varying_biquad",
    description=(
        "2 sections with per-sample coefficients (RBJ low pass at a swept cutoff, high pass at "
        "cutoff/8), raised-cosine LFO 0.5-5 Hz between 200-800 and 2000-8000 Hz, Q 0.5-4"
    ),
    make_params=_params,
    make_input=noise_input,
    reference=_reference,
    impls={
        "diffx": Impl(
            _diffx, note="biquad_trajectory + sosfilt_varying (DF-I, numba)", is_diffx=True
        ),
        "philtorch": Impl(
            _philtorch, note="lpv.lfilter(form='df1') per section", requires="philtorch"
        ),
    },  # fmt: skip
)

OPS = {op.name: op for op in (VARYING_BIQUAD,)}
