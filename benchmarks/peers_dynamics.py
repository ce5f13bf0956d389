"""The dynamics family benchmarked against torchcomp (issue 24), in the form of :mod:`peers`:
an :class:`peers.Op` per operation, in :data:`OPS`.

The peers implement different algorithms, so, as for :data:`peers.COMPRESSOR`, every
implementation is checked against a float64 NumPy/numba re-implementation of its own algorithm
(written from the library's documentation and source, not copied):

``expander``: threshold -35 dB, ratio 3, attack 2 ms, release 50 ms, hard knee, on
:func:`peers.dynamic_input` (noise whose level jumps between -50 and 0 dB every 2048 samples).

- diffx: :func:`diffx.functional.expander`: mean-power level in dB, gain
  ``(R - 1)(L - T)`` below the threshold, smooth-branching ballistics of the gain in dB
  (attack while it rises, ``alpha = exp(-ln 9 / (fs t))``).
- torchcomp: ``compexp_gain`` with its compressor branch disabled (threshold +1000 dB) and
  ``exp_ratio = 1 / R`` (its slope ``1 - 1/exp_ratio`` is ``1 - R``), on the peak level
  ``max_c |x|``; it smooths the *linear* gain with ``coef = 1 - exp(-2200 / (ms fs))``, its
  "at" coefficient acting while the gain falls, so it is given the release time there and the
  attack time as "rt" (both libraries then open with the attack time).

``limiter``: threshold -6 dB, release 50 ms, attack/look-ahead 1 ms.

- diffx: :func:`diffx.functional.limiter` (look-ahead 1 ms = 44 samples of latency; the
  attack is the look-ahead ramp; "max" link).
- torchcomp: ``limiter_gain(max_c |x|, threshold, at, rt)`` (attack 1 ms, release 50 ms): a
  peak follower of ``|x|`` (at rising, rt falling), the gain ``min(1, 10^(T/20) / peak)``,
  then the same ballistics on that gain (at falling, rt rising); no look-ahead, so peaks may
  pass the threshold during the attack.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from peers import SAMPLE_RATE, Impl, Op, Params, _ballistics64, _ms2coef, dynamic_input

EXP = {"threshold_db": -35.0, "ratio": 3.0, "attack_ms": 2.0, "release_ms": 50.0}
LIM = {"threshold_db": -6.0, "release_ms": 50.0, "attack_ms": 1.0, "lookahead_ms": 1.0}
_LN9 = math.log(9.0)


def _pole(ms: float) -> float:
    """diffx's convention: alpha = exp(-ln 9 / (fs t)), t the 10%-90% time."""
    return math.exp(-_LN9 / (SAMPLE_RATE * ms * 1e-3))


def _fixed(values: dict) -> callable:
    def make(batch: int, rng: np.random.Generator) -> Params:
        return {k: torch.full((batch,), v, dtype=torch.float64) for k, v in values.items()}

    return make


# --------------------------------------------------------------------------------------------
# expander


def _diffx_expander(x, p):
    from diffx.functional import expander

    return expander(x, SAMPLE_RATE, p["threshold_db"], p["ratio"], p["attack_ms"],
                    p["release_ms"])  # fmt: skip


@numba.njit(cache=True)
def _diffx_expander64(level, threshold, ratio, alpha_a, alpha_r):  # pragma: no cover
    """Gain in dB per sample: hard-knee expander curve, attack while the gain rises."""
    B, T = level.shape
    out = np.empty_like(level)
    for b in range(B):
        state = 0.0
        for n in range(T):
            d = level[b, n] - threshold
            g = (ratio - 1.0) * d if d < 0.0 else 0.0
            alpha = alpha_a if g > state else alpha_r
            state = alpha * state + (1.0 - alpha) * g
            out[b, n] = state
    return out


def _diffx_expander_ref(x64, p64):
    level = 10 * np.log10((x64**2).mean(1) + 1e-16)
    gain_db = _diffx_expander64(level, EXP["threshold_db"], EXP["ratio"],
                                _pole(EXP["attack_ms"]), _pole(EXP["release_ms"]))  # fmt: skip
    return x64 * 10 ** (gain_db / 20)[:, None, :]


def _torchcomp_expander(x, p):
    from torchcomp import compexp_gain, ms2coef

    level = x.abs().amax(1).clamp_min(1e-7)  # torchcomp requires a positive level
    gain = compexp_gain(
        level, 1000.0, 2.0, p["threshold_db"], 1.0 / p["ratio"],
        ms2coef(p["release_ms"], SAMPLE_RATE), ms2coef(p["attack_ms"], SAMPLE_RATE),
    )  # fmt: skip
    return x * gain.unsqueeze(1)


def _torchcomp_expander_ref(x64, p64):
    level = np.maximum(np.abs(x64).max(1), 1e-7)
    t, r = EXP["threshold_db"], EXP["ratio"]
    g_db = np.minimum(0.0, (1.0 - r) * (t - 20 * np.log10(level)))
    gain = _ballistics64(10 ** (g_db / 20), 1.0, _ms2coef(EXP["release_ms"]),
                         _ms2coef(EXP["attack_ms"]))  # fmt: skip
    return x64 * gain[:, None, :]


EXPANDER = Op(
    name="expander",
    description=(
        "downward expander, threshold -35 dB, ratio 3, attack 2 ms, release 50 ms, hard knee "
        "(each library's own algorithm; checked against a float64 re-implementation of it)"
    ),
    make_params=_fixed(EXP),
    make_input=dynamic_input,
    reference=_torchcomp_expander_ref,  # unused: every impl has its own reference
    impls={
        "diffx": Impl(
            _diffx_expander,
            reference=_diffx_expander_ref,
            note="gates.expander(): gain in dB smoothed, fused numba kernels",
            is_diffx=True,
        ),
        "torchcomp": Impl(
            _torchcomp_expander,
            reference=_torchcomp_expander_ref,
            note="compexp_gain (expander branch), peak level, linear-gain ballistics",
            requires="torchcomp",
        ),
    },
)


# --------------------------------------------------------------------------------------------
# limiter


def _diffx_limiter(x, p):
    from diffx.functional import limiter

    return limiter(x, SAMPLE_RATE, p["threshold_db"], p["release_ms"], p["lookahead_ms"])


@numba.njit(cache=True)
def _diffx_limiter64(level, threshold, alpha_r, delay):  # pragma: no cover
    """Gain in dB per sample: window maximum over [n - D, n], instant-attack release
    ballistics, mean over the same window."""
    B, T = level.shape
    out = np.empty_like(level)
    smooth = np.empty(T)
    for b in range(B):
        state = 0.0
        for n in range(T):
            peak = level[b, max(0, n - delay) : n + 1].max()
            need = min(0.0, threshold - peak)
            alpha = 0.0 if need < state else alpha_r
            state = alpha * state + (1.0 - alpha) * need
            smooth[n] = state
            out[b, n] = smooth[max(0, n - delay) : n + 1].sum() / (delay + 1)
    return out


def _diffx_limiter_ref(x64, p64):
    delay = round(LIM["lookahead_ms"] * SAMPLE_RATE / 1000)
    level = 10 * np.log10((x64**2).max(1) + 1e-16)
    gain_db = _diffx_limiter64(level, LIM["threshold_db"], _pole(LIM["release_ms"]), delay)
    delayed = np.zeros_like(x64)
    delayed[..., delay:] = x64[..., : x64.shape[-1] - delay]
    return delayed * 10 ** (gain_db / 20)[:, None, :]


def _torchcomp_limiter(x, p):
    from torchcomp import limiter_gain, ms2coef

    gain = limiter_gain(x.abs().amax(1), p["threshold_db"], ms2coef(p["attack_ms"], SAMPLE_RATE),
                        ms2coef(p["release_ms"], SAMPLE_RATE))  # fmt: skip
    return x * gain.unsqueeze(1)


def _torchcomp_limiter_ref(x64, p64):
    at, rt = _ms2coef(LIM["attack_ms"]), _ms2coef(LIM["release_ms"])
    # Peak follower: "rt" while |x| falls below it, "at" while it rises.
    peak = _ballistics64(np.abs(x64).max(1), 0.0, rt, at)
    with np.errstate(divide="ignore"):
        f = np.minimum(1.0, 10 ** (LIM["threshold_db"] / 20) / peak)
    return x64 * _ballistics64(f, 1.0, at, rt)[:, None, :]


LIMITER = Op(
    name="limiter",
    description=(
        "peak limiter, threshold -6 dB, release 50 ms, attack (diffx: look-ahead) 1 ms "
        "(each library's own algorithm; checked against a float64 re-implementation of it)"
    ),
    make_params=_fixed(LIM),
    make_input=dynamic_input,
    reference=_torchcomp_limiter_ref,  # unused: every impl has its own reference
    impls={
        "diffx": Impl(
            _diffx_limiter,
            reference=_diffx_limiter_ref,
            note="gates.limiter(): 1 ms look-ahead (44 samples latency), ceiling exact",
            is_diffx=True,
        ),
        "torchcomp": Impl(
            _torchcomp_limiter,
            reference=_torchcomp_limiter_ref,
            note="limiter_gain: peak follower + gain ballistics, no look-ahead",
            requires="torchcomp",
        ),
    },
)

OPS = {op.name: op for op in (EXPANDER, LIMITER)}
