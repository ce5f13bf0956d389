"""Downward expander, noise gate with hold, and look-ahead peak limiter.

They share the compressor's parts (:mod:`diffx.functional.dynamics`): the level detector
(``10 log10(power + eps^2)`` dB), the Giannoulis, Massberg & Reiss (JAES 2012) soft-knee gain
computer, smooth-branching ballistics of the gain in dB, the ``10%-90%`` time convention
``alpha = exp(-ln 9 / (fs t))``, and the stereo ``link`` (``"mean"``, ``"max"``, ``"none"``,
see :func:`diffx.functional.dynamics.run_linked`).

Attack and release follow the level: attack is the response to a rising level. For the
compressor that is growing gain reduction; for the expander and the gate it is the gain rising
(opening), and release is the gain falling (closing).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

from diffx._validation import as_param, check_sample_rate, has_values
from diffx.functional.dynamics import (
    _DB_TO_NEPER,
    KNEE_RANGE_DB,
    MAKEUP_RANGE_DB,
    THRESHOLD_RANGE_DB,
    TIME_RANGE_MS,
    _curve_and_ballistics,
    _gain_from_slope,
    check_backend,
    check_link,
    check_sidechain,
    detector_level_db,
    run_linked,
    time_to_pole,
)
from diffx.kernels.ballistics import attack_release, hold_attack_release
from diffx.kernels.ballistics import resolve_backend as _resolve_ballistics_backend
from diffx.kernels.threads import run_rows

# Expansion ratios: 1 (no expansion) to 100. Below the threshold the gain falls by R - 1 dB per
# dB of level, so at 100 a level 2 dB under the threshold is already cut by 198 dB: a gate.
EXPANDER_RATIO_RANGE = (1.0, 100.0)
# The gate's floor (its gain when closed): -200 dB (closed for any practical purpose) to 0 dB
# (the gate does nothing).
RANGE_RANGE_DB = (-200.0, 0.0)
# Hold and look-ahead times (ms); both are rounded to whole samples and get no gradient.
HOLD_RANGE_MS = (0.0, 10_000.0)
LOOKAHEAD_RANGE_MS = (0.0, 1000.0)


def expander_gain_db(level_db, threshold_db, ratio, knee_db):
    """Static downward-expander curve, Giannoulis-style quadratic soft knee, gain in dB (<= 0).

    With ``d = level - threshold``: ``(R - 1) d`` for ``2 d < -W``;
    ``-(R - 1) (d - W/2)^2 / (2 W)`` for ``2 |d| <= W``; ``0`` above. It is the compressor's
    curve mirrored about the threshold (``g(d) = c(-d)`` with slope ``1 - R``), and shares its
    implementation.

    Args:
        level_db: ``(batch, samples)`` detector level in dB.
        threshold_db, ratio, knee_db: ``(batch,)``.
    """
    return _gain_from_slope(-level_db, -threshold_db, 1.0 - ratio, knee_db)


# --------------------------------------------------------------------------------------------
# expander
# --------------------------------------------------------------------------------------------


def expander(
    x: torch.Tensor,
    sample_rate: float,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    knee_db: torch.Tensor | float = 0.0,
    makeup_gain_db: torch.Tensor | float = 0.0,
    sidechain: torch.Tensor | None = None,
    link: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Feed-forward downward expander: below the threshold the level falls ``ratio`` times
    faster than the input's.

    Per sample: detector level ``L`` (as the compressor's), target gain
    ``g = expander_gain_db(L)`` <= 0 dB (:func:`expander_gain_db`), smooth-branching ballistics
    of ``g`` in dB starting from 0 dB, attack while the gain rises (the level rises), release
    while it falls, and output ``x * 10^((g_smooth + makeup) / 20)``. Steady state: a constant
    level ``L <= T - W/2`` comes out at ``T + R (L - T) + makeup``. The CPU path runs the
    compressor's fused numba kernels on the mirrored curve (see
    ``dynamics._CpuCompressor``).

    Silence reads as -160 dB (the detector floor), so it is cut by ``(R - 1)(160 + T)`` dB (up
    to ~2.8e4 dB): the output is exactly 0 in float32 there, and finite with finite gradients.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        threshold_db: scalar or ``(batch,)``, dB in ``THRESHOLD_RANGE_DB`` = [-120, 24].
        ratio: scalar or ``(batch,)`` in ``EXPANDER_RATIO_RANGE`` = [1, 100] (1: no change).
        attack_ms, release_ms: scalar or ``(batch,)``, 10%-90% times in ms in
            ``TIME_RANGE_MS`` = [0.001, 60000].
        knee_db: scalar or ``(batch,)`` in ``KNEE_RANGE_DB`` = [0, 120] (0: hard knee).
        makeup_gain_db: scalar or ``(batch,)`` in ``MAKEUP_RANGE_DB`` = [-120, 120].
        sidechain: optional ``(batch, sc_channels, samples)`` detector input.
        link: ``"mean"``, ``"max"`` or ``"none"`` (see the module docstring).
        backend: as :func:`~diffx.functional.dynamics.compressor`'s.

    Returns:
        ``(batch, channels, samples)``, differentiable in ``x``, ``sidechain`` and every
        parameter to any order (the attack/release branch held fixed).

    Raises:
        ValueError: naming the argument, for bad audio, shapes or out-of-range parameters.
    """
    sr = check_sample_rate(sample_rate)
    sidechain = check_sidechain(x, sidechain)
    check_link(link)
    backend = check_backend(backend)
    B = x.shape[0]
    threshold = as_param(threshold_db, "threshold_db", B, x, *THRESHOLD_RANGE_DB)
    ratio_t = as_param(ratio, "ratio", B, x, *EXPANDER_RATIO_RANGE)
    attack = as_param(attack_ms, "attack_ms", B, x, *TIME_RANGE_MS)
    release = as_param(release_ms, "release_ms", B, x, *TIME_RANGE_MS)
    knee = as_param(knee_db, "knee_db", B, x, *KNEE_RANGE_DB)
    makeup = as_param(makeup_gain_db, "makeup_gain_db", B, x, *MAKEUP_RANGE_DB)
    # Mirrored curve in the kernels' space (sign -1): threshold -T, slope R - 1, and the
    # expander's attack (gain rising) is the compressor branch of the negated gain.
    params = (-threshold, ratio_t - 1.0, knee, time_to_pole(attack, sr),
              time_to_pole(release, sr), makeup)  # fmt: skip
    return run_linked(
        lambda xr, scr, *p: _curve_and_ballistics(xr, scr, p, backend, -1.0),
        x, sidechain, link, params,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# noise gate
# --------------------------------------------------------------------------------------------


def _gate_rows(x, sc, threshold, ratio, knee, range_db, alpha_a, alpha_r, hold, makeup, be):
    level = detector_level_db(x if sc is None else sc)
    # The gain is smoothed negated (>= 0), so that opening (gain rising) is the hold kernel's
    # attack branch and closing its release, which the hold delays.
    closing = torch.minimum(-expander_gain_db(level, threshold, ratio, knee), -range_db[:, None])
    is_open = (level >= threshold[:, None]).detach()
    smooth = hold_attack_release(closing, is_open, alpha_a, alpha_r, hold, backend=be)
    gain = torch.exp((makeup[:, None] - smooth) * _DB_TO_NEPER)
    return x * gain[:, None, :]


def noise_gate(
    x: torch.Tensor,
    sample_rate: float,
    threshold_db: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    hold_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    range_db: torch.Tensor | float = -80.0,
    ratio: torch.Tensor | float = 10.0,
    knee_db: torch.Tensor | float = 0.0,
    makeup_gain_db: torch.Tensor | float = 0.0,
    sidechain: torch.Tensor | None = None,
    link: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Noise gate with hold: a steep expander with a floor, whose closing waits ``hold_ms``.

    Per sample: detector level ``L``; target gain ``g = max(expander_gain_db(L), range_db)``
    (:func:`expander_gain_db` with ``ratio`` and ``knee_db``: the gate closes over
    ``-range_db / (ratio - 1)`` dB below the threshold, which keeps the threshold
    differentiable; ``ratio = 100`` is close to a hard switch). The gain in dB is smoothed by
    :func:`diffx.kernels.ballistics.hold_attack_release` from 0 dB (open): attack while it
    rises (opening), and while it falls (closing) it first holds its value for ``hold_ms``
    after the last sample with ``L >= threshold_db`` and then releases. Every sample at or
    above the threshold restarts the hold. Output ``x * 10^((g_smooth + makeup) / 20)``.

    Gradients hold the attack/hold/release pattern fixed (as the compressor's branch):
    ``hold_ms`` is rounded to whole samples and gets no gradient (a zero gradient is
    returned for it when it requires grad); every other parameter and the audio get exact
    gradients of that piecewise-smooth function, to any order.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        threshold_db: scalar or ``(batch,)``, dB in ``THRESHOLD_RANGE_DB`` = [-120, 24].
        attack_ms, release_ms: scalar or ``(batch,)``, ms in ``TIME_RANGE_MS``.
        hold_ms: scalar or ``(batch,)``, ms in ``HOLD_RANGE_MS`` = [0, 10000].
        range_db: scalar or ``(batch,)``, the closed gain in dB in ``RANGE_RANGE_DB`` =
            [-200, 0].
        ratio: scalar or ``(batch,)`` in ``EXPANDER_RATIO_RANGE`` = [1, 100].
        knee_db: scalar or ``(batch,)`` in ``KNEE_RANGE_DB``.
        makeup_gain_db: scalar or ``(batch,)`` in ``MAKEUP_RANGE_DB``.
        sidechain: optional ``(batch, sc_channels, samples)`` detector input.
        link: ``"mean"``, ``"max"`` or ``"none"``.
        backend: ``"auto"`` (numba on CPU; the reference loop elsewhere), ``"numba"``,
            ``"cuda"`` (reference loop on CUDA tensors), ``"torch"``.

    Returns:
        ``(batch, channels, samples)`` gated audio.

    Raises:
        ValueError: naming the argument, for bad audio, shapes or out-of-range parameters.
    """
    sr = check_sample_rate(sample_rate)
    sidechain = check_sidechain(x, sidechain)
    check_link(link)
    backend = check_backend(backend)
    B = x.shape[0]
    threshold = as_param(threshold_db, "threshold_db", B, x, *THRESHOLD_RANGE_DB)
    attack = as_param(attack_ms, "attack_ms", B, x, *TIME_RANGE_MS)
    hold = as_param(hold_ms, "hold_ms", B, x, *HOLD_RANGE_MS)
    release = as_param(release_ms, "release_ms", B, x, *TIME_RANGE_MS)
    floor = as_param(range_db, "range_db", B, x, *RANGE_RANGE_DB)
    ratio_t = as_param(ratio, "ratio", B, x, *EXPANDER_RATIO_RANGE)
    knee = as_param(knee_db, "knee_db", B, x, *KNEE_RANGE_DB)
    makeup = as_param(makeup_gain_db, "makeup_gain_db", B, x, *MAKEUP_RANGE_DB)
    hold_samples = torch.round(hold.detach() * (sr * 1e-3)).to(torch.int64)
    if hold.requires_grad:  # documented: no gradient; a zero one keeps autograd's graph whole
        makeup = makeup + 0.0 * hold
    be = _resolve_ballistics_backend(backend, x)
    params = (threshold, ratio_t, knee, floor, time_to_pole(attack, sr),
              time_to_pole(release, sr), hold_samples, makeup)  # fmt: skip
    return run_linked(lambda xr, scr, *p: _gate_rows(xr, scr, *p, be), x, sidechain, link, params)


# --------------------------------------------------------------------------------------------
# look-ahead limiter
# --------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _sliding_argmax(first_row, end_row, v, width, index):  # pragma: no cover - compiled
    """index[r, n] = argmax of v[r, max(0, n - width[r] + 1) .. n] (the latest on ties), by a
    monotonic queue: O(samples) whatever the width."""
    n_samples = v.shape[1]
    queue = np.empty(n_samples, dtype=np.int64)
    for r in range(first_row, end_row):
        head = 0
        tail = 0
        w = width[r]
        for n in range(n_samples):
            while tail > head and v[r, queue[tail - 1]] <= v[r, n]:
                tail -= 1
            queue[tail] = n
            tail += 1
            if queue[head] <= n - w:
                head += 1
            index[r, n] = queue[head]


def _window_argmax(v: torch.Tensor, width: torch.Tensor, pooled: bool | None = None):
    """``(rows, samples)`` int64 index of the maximum of ``v`` over the trailing window of
    ``width[r]`` samples (clipped at the start): a numba kernel on the CPU (``pooled`` None),
    max pooling elsewhere."""
    if not pooled and (pooled is not None or v.device.type == "cpu"):
        index = np.empty(v.shape, dtype=np.int64)
        run_rows(_sliding_argmax, v.shape[0], v.numel(), v.detach().contiguous().numpy(),
                 width.cpu().numpy(), index)  # fmt: skip
        return torch.from_numpy(index)
    # Other devices: max pooling, one call per distinct width.
    index = torch.empty(v.shape, dtype=torch.int64, device=v.device)
    for w in torch.unique(width).tolist():
        rows = (width == w).nonzero().squeeze(1)
        padded = torch.nn.functional.pad(v.detach()[rows, None], (w - 1, 0), value=float("-inf"))
        _, idx = torch.nn.functional.max_pool1d(padded, w, 1, return_indices=True)
        index[rows] = (idx[:, 0] - (w - 1)).clamp(min=0)
    return index


def _trailing_mean(u: torch.Tensor, width: torch.Tensor, pooled: bool | None = None):
    """Mean of ``u`` over the trailing ``width[r]`` samples, zeros before the start.

    On the CPU (``pooled`` None) through a float64 running sum: O(samples) and exact to ~1e-12
    of the values' scale at any length (a float32 running sum of dB values over a million
    samples would be off by decibels). Elsewhere by average pooling in ``u``'s dtype, one call
    per distinct width: every window summed anew, so no float64 is needed (Apple MPS has none).
    """
    if pooled or (pooled is None and u.device.type != "cpu"):
        out = torch.empty_like(u)
        for w in torch.unique(width).tolist():
            rows = (width == w).nonzero().squeeze(1)
            padded = torch.nn.functional.pad(u[rows, None], (w - 1, 0))
            out = out.index_put((rows,), torch.nn.functional.avg_pool1d(padded, w, 1)[:, 0])
        return out
    wide = u.to(torch.float64)  # the CPU always has float64
    csum = torch.nn.functional.pad(wide.cumsum(-1), (1, 0))
    n = torch.arange(u.shape[1], device=u.device)
    start = (n[None, :] + 1 - width[:, None]).clamp(min=0)
    total = csum[:, 1:] - csum.gather(1, start)
    return (total / width[:, None].to(wide.dtype)).to(u.dtype)


def _delay_rows(x: torch.Tensor, delay: torch.Tensor) -> torch.Tensor:
    """x (B, C, T) delayed by ``delay[b]`` whole samples, zeros shifted in."""
    T = x.shape[-1]
    n = torch.arange(T, device=x.device)
    src = n[None, :] - delay[:, None]
    valid = (src >= 0)[:, None, :]
    index = src.clamp(min=0)[:, None, :].expand(x.shape)
    return torch.where(valid, x.gather(2, index), torch.zeros((), dtype=x.dtype, device=x.device))


def _limit_rows(x, sc, threshold, alpha_r, makeup, lookahead, be):
    level = detector_level_db(x if sc is None else sc)
    width = lookahead + 1
    # Loudest level in the window [n - D, n]: it covers the sample now leaving the delay line
    # (n - D) and all D samples after it.
    peak = level.gather(1, _window_argmax(level, width))
    need = torch.clamp(threshold[:, None] - peak, max=0.0)  # gain that caps all of them
    # Instant attack, release in dB: the smoothed gain never exceeds ``need``...
    zero = torch.zeros_like(alpha_r)
    smooth = attack_release(need, zero, alpha_r, backend=be)
    # ...and its mean over the window [n - D, n] ramps down in D samples before a peak while
    # every term is at most the gain the delayed sample x[n - D] needs.
    gain_db = _trailing_mean(smooth, width)
    gain = torch.exp((gain_db + makeup[:, None]) * _DB_TO_NEPER)
    return _delay_rows(x, lookahead) * gain[:, None, :]


def limiter(
    x: torch.Tensor,
    sample_rate: float,
    threshold_db: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    lookahead_ms: torch.Tensor | float = 5.0,
    makeup_gain_db: torch.Tensor | float = 0.0,
    sidechain: torch.Tensor | None = None,
    link: str = "max",
    backend: str = "auto",
) -> torch.Tensor:
    """Peak limiter with look-ahead: the output's sample peaks stay at or below the threshold.

    With ``D = round(lookahead_ms fs / 1000)`` samples, the signal path is delayed by ``D``
    samples (the latency; the output keeps the input's length, so its last ``D`` input samples
    are not heard) and per sample ``n``:

    1. ``need[n] = min(0, T - max_{k in [n-D, n]} L[k])`` dB, ``L`` the detector level (a
       sliding maximum over the look-ahead window, so ``need[n]`` caps the delayed sample
       ``x[n - D]`` and every later sample in the window);
    2. ``s = ballistics(need)`` with instant attack and the release time ``release_ms``
       (smooth-branching, in dB, from 0 dB), so ``s <= need``;
    3. ``gain[n] = mean(s[n-D .. n])`` dB: the gain ramps down linearly (in dB) over the ``D``
       samples before a peak instead of jumping, and every term of the mean is at most what
       ``x[n - D]`` needs, so ``|y[n]| <= 10^((T + makeup) / 20)`` (up to rounding);
    4. ``y[n] = x[n - D] * 10^((gain[n] + makeup) / 20)``.

    The ceiling holds per sample with the ``"max"`` link (the default: the loudest channel
    drives one gain for all) or ``"none"``; the ``"mean"`` link reads the mean power over
    channels, under which a louder channel can exceed the threshold. Inter-sample (true)
    peaks are not limited. The attack time is the look-ahead (there is no separate attack
    parameter); ``lookahead_ms = 0`` gives instant attack and no latency.

    Gradients: exact almost everywhere in ``x``, ``sidechain``, ``threshold_db``,
    ``release_ms`` and ``makeup_gain_db`` (the window maximum and the attack/release branch
    held fixed), to any order. ``lookahead_ms`` is rounded to whole samples and gets no
    gradient (a zero gradient when it requires grad).

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        threshold_db: scalar or ``(batch,)``, the ceiling in dB in ``THRESHOLD_RANGE_DB``.
        release_ms: scalar or ``(batch,)``, 10%-90% release time in ms in ``TIME_RANGE_MS``.
        lookahead_ms: scalar or ``(batch,)``, ms in ``LOOKAHEAD_RANGE_MS`` = [0, 1000].
        makeup_gain_db: scalar or ``(batch,)`` in ``MAKEUP_RANGE_DB``, applied after limiting.
        sidechain: optional ``(batch, sc_channels, samples)`` detector input.
        link: ``"max"`` (default), ``"mean"`` or ``"none"``.
        backend: back end of the release ballistics (as the compressor's).

    Returns:
        ``(batch, channels, samples)`` limited audio, delayed by ``D`` samples.

    Raises:
        ValueError: naming the argument, for bad audio, shapes or out-of-range parameters.
    """
    sr = check_sample_rate(sample_rate)
    sidechain = check_sidechain(x, sidechain)
    check_link(link)
    backend = check_backend(backend)
    B = x.shape[0]
    threshold = as_param(threshold_db, "threshold_db", B, x, *THRESHOLD_RANGE_DB)
    release = as_param(release_ms, "release_ms", B, x, *TIME_RANGE_MS)
    lookahead = as_param(lookahead_ms, "lookahead_ms", B, x, *LOOKAHEAD_RANGE_MS)
    makeup = as_param(makeup_gain_db, "makeup_gain_db", B, x, *MAKEUP_RANGE_DB)
    if not has_values(x):
        raise ValueError("limiter needs values (its look-ahead is counted in samples); got meta")
    delay = torch.round(lookahead.detach() * (sr * 1e-3)).to(torch.int64)
    if lookahead.requires_grad:  # documented: no gradient; a zero one keeps the graph whole
        makeup = makeup + 0.0 * lookahead
    be = _resolve_ballistics_backend(backend, x)
    params = (threshold, time_to_pole(release, sr), makeup, delay)
    return run_linked(lambda xr, scr, *p: _limit_rows(xr, scr, *p, be), x, sidechain, link, params)
