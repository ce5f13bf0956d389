"""Time-varying filtering: second-order sections with per-sample or per-block coefficients,
RBJ biquad designs along parameter trajectories, the TPT state-variable filter with cutoff and
Q as signals, and the effects built from them (auto-wah, LFO-modulated filter).

**Trajectories.** A parameter that may change over time is given as a scalar, a ``(batch,)``
tensor (constant in time), or a ``(batch, n)`` tensor with ``n`` either the number of samples
(one value per sample) or a number of blocks ``1 <= n <= samples``. Block ``j`` of ``n`` spans
samples ``[j T / n, (j + 1) T / n)`` and its value sits at the block's centre, sample
``(j + 0.5) T / n - 0.5``; between centres values are interpolated linearly per sample, and
before the first centre and after the last they are held (this is
``torch.nn.functional.interpolate(mode="linear", align_corners=False)``). A batch size of 1 is
shared by the batch. Channels of an item share its trajectory.

**Stability.** Every coefficient set is checked (or designed) to be stable when frozen in time,
and linear interpolation keeps it so (the stability triangle of (a1, a2) is convex). Frozen-time
stability does not by itself bound a filter whose coefficients move fast (a high-Q direct-form
section swept across the spectrum in a few samples can grow); the TPT state-variable filter is
the form to use for fast modulation (Zavalishin, "The Art of VA Filter Design", ch. 4).
"""

from __future__ import annotations

import math

import torch

from diffx._validation import as_param, check_audio, check_finite, check_sample_rate, wide_dtype
from diffx.functional import filters as _filters
from diffx.functional.dynamics import TIME_RANGE_MS, time_to_pole
from diffx.kernels.ballistics import attack_release
from diffx.kernels.varying import BACKENDS, SVF_MODES, sos_cascade_varying, svf

# Widest LFO depth of modulated_filter, octaves either side of the centre (a 2^16 range).
MAX_DEPTH_OCTAVES = 8.0
# The LFO's sweep is clipped below this fraction of the sample rate: the SVF's g = tan(pi f/fs)
# grows without bound at Nyquist; at 0.49 fs it is 32, well inside the filter's working range.
MAX_SWEEP_FRACTION = 0.49
# Sensitivity of auto_wah, dB of gain on the envelope before the sweep mapping.
MAX_ABS_SENSITIVITY_DB = 120.0
# Amplitude floor of the auto-wah's level detector (its square root's derivative is finite at
# silence); far below float32 resolution of full-scale audio.
_EPS_AMPLITUDE = 1e-8


# --------------------------------------------------------------------------------------------
# trajectories
# --------------------------------------------------------------------------------------------


def _to_samples(t: torch.Tensor, n_samples: int) -> torch.Tensor:
    """``(batch, n)`` values (n = 1, blocks, or samples) -> ``(batch, n_samples)``."""
    if t.shape[-1] == n_samples:
        return t
    if t.shape[-1] == 1:
        return t.expand(*t.shape[:-1], n_samples)
    lead = t.shape[:-1]
    flat = t.reshape(-1, 1, t.shape[-1])
    out = torch.nn.functional.interpolate(flat, size=n_samples, mode="linear",
                                          align_corners=False)  # fmt: skip
    return out.reshape(*lead, n_samples)


def _trajectory(
    value, name: str, batch: int, like: torch.Tensor, low: float, high: float,
    open_low: bool = False, open_high: bool = False, n_samples: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """A scalar, ``(batch,)`` or ``(batch, n)`` parameter as a checked ``(batch, n)`` tensor.

    ``n_samples`` (when known) bounds ``n``: 1, a block count up to it, or it. Values must lie
    in ``[low, high]`` with the ends excluded where ``open_*``; errors name ``name``.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        t = value.to(dtype=like.dtype, device=like.device)
        if t.shape[0] not in (1, batch):
            raise ValueError(f"{name} has batch size {t.shape[0]} but the audio (or the other "
                             f"parameters) have batch size {batch}")  # fmt: skip
        if t.shape[1] == 0 or (n_samples is not None and t.shape[1] > n_samples):
            raise ValueError(f"{name} must have 1 to {n_samples} values per item (blocks or "
                             f"samples), got {t.shape[1]}")  # fmt: skip
        check_finite(t.detach(), name)
        t = t.expand(batch, -1)
    elif isinstance(value, torch.Tensor) and value.dim() > 2:
        raise ValueError(f"{name} must be a scalar, (batch,) or (batch, samples or blocks), got "
                         f"shape {tuple(value.shape)}")  # fmt: skip
    else:
        t = as_param(value, name, batch, like)[:, None]
    detached = t.detach()
    below = (detached <= low) if open_low else (detached < low)
    above = (detached >= high) if open_high else (detached > high)
    if bool((below | above).any()):
        brackets = ("(" if open_low else "[") + f"{low:g}, {high:g}" + (")" if open_high else "]")
        raise ValueError(f"{name} must lie in {brackets}, got {float(detached.min()):.6g}.."
                         f"{float(detached.max()):.6g}")  # fmt: skip
    return t


def _batch_of(*params) -> int:
    """Broadcast batch size of parameters (scalars, (batch,) or (batch, n) tensors)."""
    sizes = [p.shape[0] for p in params if isinstance(p, torch.Tensor) and p.dim() > 0]
    return max(sizes, default=1)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


# --------------------------------------------------------------------------------------------
# sosfilt with time-varying coefficients
# --------------------------------------------------------------------------------------------


def sosfilt_varying(x: torch.Tensor, sos: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Filter audio through second-order sections whose coefficients change over time.

    Each section runs in direct form I, the form whose coefficients at sample n act only at n
    (:mod:`diffx.kernels.varying`); with constant coefficients it equals
    ``scipy.signal.sosfilt``.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sos: ``(batch, n_sections, 6, n)`` in scipy's layout ``[b0, b1, b2, a0, a1, a2]`` along
            dim 2, with ``n`` = samples (one set per sample) or ``1 <= n < samples`` blocks,
            interpolated per sample from the block centres (module docstring); ``(n_sections,
            6, n)`` or batch 1 is shared by the batch. Each set is divided by its ``a0``, which
            must be nonzero, and interpolated after that division. Every set must be stable
            frozen in time (poles inside the unit circle, up to the rounding of ``sos``'s
            dtype). Channels of an item share its coefficients.
        backend: ``"auto"`` (compiled numba loops on CPU, numba.cuda kernels on CUDA),
            ``"numba"``, ``"cuda"`` or ``"torch"`` (slow reference loop).

    Returns:
        ``(batch, channels, samples)`` filtered audio in ``x``'s dtype, zero initial state.
        Coefficients and filter states are float64. Differentiable in ``x`` and ``sos`` (any
        order).

    Raises:
        ValueError: naming the argument, for bad audio, a bad shape, NaN/Inf, ``a0 = 0`` or an
            unstable set (its index given as (batch, sample or block, section)).
    """
    check_audio(x, "x")
    _check_backend(backend)
    B, C, T = x.shape  # batch, channels, samples
    if not isinstance(sos, torch.Tensor) or not sos.is_floating_point():
        raise ValueError("sos must be a floating-point tensor")
    if sos.dim() == 3:
        sos = sos.unsqueeze(0)
    if sos.dim() != 4 or sos.shape[2] != 6 or sos.shape[1] == 0 or sos.shape[3] == 0:
        raise ValueError(
            "sos must be shaped (batch, n_sections, 6, samples or blocks) with scipy's layout "
            f"[b0, b1, b2, a0, a1, a2] along dim 2, got shape {tuple(sos.shape)}"
        )
    if sos.shape[0] not in (1, B):
        raise ValueError(f"sos has batch size {sos.shape[0]} but x has batch size {B}")
    if sos.shape[3] > T:
        raise ValueError(f"sos has {sos.shape[3]} coefficient sets per section, more than the "
                         f"{T} samples of x")  # fmt: skip
    check_finite(sos.detach(), "sos")
    tol = _filters.stability_tolerance(sos.dtype)
    wide = wide_dtype(x.device, "sosfilt_varying's coefficients and filter states")
    coef = _normalize(sos.to(dtype=wide, device=x.device), tol)
    K, S = sos.shape[1], sos.shape[3]
    coef = _to_samples(coef.reshape(-1, K * 5, S), T).reshape(-1, K, 5, T)
    return sos_cascade_varying(x, coef.expand(B, -1, -1, -1), backend)


def _normalize(sos: torch.Tensor, tol: float) -> torch.Tensor:
    """``(batch, K, 6, n)`` in scipy's layout -> ``(batch, K, 5, n)`` divided by a0, checked.

    Sets strictly inside the stability triangle (the usual case) are divided in this layout,
    holding one copy of the trajectory (a per-sample trajectory is the largest tensor of the
    op); a zero a0 or a set on or beyond the triangle's edge goes through
    :func:`~diffx.functional.filters.normalize_sos`, which raises naming ``sos`` (index order
    (batch, sample or block, section)) or moves a set that rounding put just outside back onto
    the edge.
    """
    a0 = sos[:, :, 3:4]
    inv = 1.0 / a0
    coef = torch.cat([sos[:, :, :3] * inv, sos[:, :, 4:] * inv], dim=2)
    a1, a2 = coef[:, :, 3].detach(), coef[:, :, 4].detach()
    if bool((a0 == 0).any()) or bool(((a2.abs() >= 1) | (a1.abs() >= 1 + a2)).any()):
        checked = _filters.normalize_sos(sos.permute(0, 3, 1, 2), name="sos", tol=tol)
        coef = checked.permute(0, 2, 3, 1).contiguous()
    return coef


def biquad_trajectory(
    filter_type: str,
    freq_hz: torch.Tensor | float,
    q: torch.Tensor | float,
    sample_rate: float,
    gain_db: torch.Tensor | float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """RBJ-cookbook biquads along parameter trajectories: :func:`~diffx.functional.biquad`
    evaluated at every time step.

    Args:
        filter_type: one of ``FILTER_TYPES`` (see :func:`~diffx.functional.biquad`).
        freq_hz: scalar, ``(batch,)`` or ``(batch, n)`` Hz in (0, sample_rate/2).
        q: scalar, ``(batch,)`` or ``(batch, n)`` in [``MIN_Q``, ``MAX_Q``] = [1e-3, 1e3].
        sample_rate: Hz.
        gain_db: scalar, ``(batch,)`` or ``(batch, n)`` dB within +-120 (peaking and shelves).
        dtype, device: of the result when no parameter is a floating-point tensor.

    Every ``(batch, n)`` parameter must have the same ``n`` (samples or blocks, as the caller
    means it); constant ones are repeated along it.

    Returns:
        ``(batch, 6, n)`` coefficients ``[b0, b1, b2, a0, a1, a2]`` per step (``n = 1`` when all
        parameters are constant); add the sections axis (``.unsqueeze(1)``) for
        :func:`sosfilt_varying`. Each step is stable, designed in float64 and rounded once.
        Differentiable in every tensor parameter.
    """
    if filter_type not in _filters.FILTER_TYPES:
        raise ValueError(f"filter_type must be one of {_filters.FILTER_TYPES}, got {filter_type!r}")
    sr = check_sample_rate(sample_rate)
    params = {"freq_hz": freq_hz, "q": q, "gain_db": gain_db}
    like = _filters._like(params.values(), dtype, device)
    batch = _batch_of(*params.values())
    wide = wide_dtype(like.device, "biquad designs")
    lengths = {name: p.shape[1] for name, p in params.items()
               if isinstance(p, torch.Tensor) and p.dim() == 2}  # fmt: skip
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the trajectories' lengths differ: {lengths}")
    n = max(lengths.values(), default=1)
    f = _trajectory(freq_hz, "freq_hz", batch, like, 0.0, sr / 2, True, True)
    qs = _trajectory(q, "q", batch, like, _filters.MIN_Q, _filters.MAX_Q)
    g = _trajectory(gain_db, "gain_db", batch, like, -_filters.MAX_ABS_GAIN_DB,
                    _filters.MAX_ABS_GAIN_DB)  # fmt: skip
    f, qs, g = (t.to(wide).expand(batch, n) for t in (f, qs, g))
    sos = _filters._round_stable(_filters._rbj(filter_type, f, qs, g, sr), like.dtype)
    return sos.transpose(1, 2)


# --------------------------------------------------------------------------------------------
# state-variable filter
# --------------------------------------------------------------------------------------------


def _svf_from_cutoff(x, cutoff, q, sr, mode, backend):
    """Run the SVF on checked ``(batch, n)`` cutoff (Hz) and Q trajectories."""
    B, _, T = x.shape
    wide = wide_dtype(x.device, "the state-variable filter's coefficients")
    cutoff = _to_samples(cutoff.to(wide), T).expand(B, T)
    q = _to_samples(q.to(wide), T).expand(B, T)
    g = torch.tan((math.pi / sr) * cutoff)
    return svf(x, g, 1.0 / q, mode, backend)


def state_variable_filter(
    x: torch.Tensor,
    cutoff_hz: torch.Tensor | float,
    q: torch.Tensor | float,
    sample_rate: float,
    mode: str = "lowpass",
    backend: str = "auto",
) -> torch.Tensor:
    """Topology-preserving (TPT) state-variable filter with cutoff and Q as signals.

    Zavalishin, "The Art of VA Filter Design", ch. 4: trapezoidal integrators, prewarped gain
    ``g = tan(pi cutoff / sample_rate)``, damping ``k = 2R = 1/Q``. The topology itself runs
    sample by sample (:mod:`diffx.kernels.varying`), so its integrator states carry over
    smoothly when the cutoff moves. With constant parameters it is exactly the bilinear
    transform, prewarped at the cutoff, of the analog prototypes ``1 / (s^2 + k s + 1)`` (low
    pass), ``s / (s^2 + k s + 1)`` (band pass, peak gain ``1/k = Q`` at the cutoff) and
    ``s^2 / (s^2 + k s + 1)`` (high pass), with ``s`` normalised to the cutoff.

    Args:
        x: ``(batch, channels, samples)`` audio.
        cutoff_hz: scalar, ``(batch,)`` or ``(batch, n)`` (n = samples, or blocks interpolated
            per sample: module docstring) Hz in (0, sample_rate/2).
        q: scalar, ``(batch,)`` or ``(batch, n)``, in [``MIN_Q``, ``MAX_Q``] = [1e-3, 1e3];
            ``Q = 1/sqrt(2)`` is the Butterworth response, the band-pass peak gain is Q.
        sample_rate: Hz.
        mode: ``"lowpass"``, ``"bandpass"`` or ``"highpass"``.
        backend: ``"auto"`` (numba on CPU, numba.cuda on CUDA), ``"numba"``, ``"cuda"``,
            ``"torch"`` (reference loop).

    Returns:
        ``(batch, channels, samples)`` in ``x``'s dtype, zero initial state; coefficients and
        states in float64. Differentiable in ``x``, ``cutoff_hz`` and ``q`` (any order).

    Raises:
        ValueError: naming the argument, for bad audio, a parameter out of range, NaN/Inf, or
            of a shape that does not fit.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    if mode not in SVF_MODES:
        raise ValueError(f"mode must be one of {SVF_MODES}, got {mode!r}")
    _check_backend(backend)
    B, C, T = x.shape  # batch, channels, samples
    cutoff = _trajectory(cutoff_hz, "cutoff_hz", B, x, 0.0, sr / 2, True, True, n_samples=T)
    qs = _trajectory(q, "q", B, x, _filters.MIN_Q, _filters.MAX_Q, n_samples=T)
    return _svf_from_cutoff(x, cutoff, qs, sr, mode, backend)


# --------------------------------------------------------------------------------------------
# effects built on them
# --------------------------------------------------------------------------------------------


def envelope(
    x: torch.Tensor, sample_rate: float, attack_ms, release_ms, backend: str = "auto"
) -> torch.Tensor:
    """Channel-linked amplitude envelope with attack/release ballistics.

    The level ``sqrt(mean_c x^2 + eps^2)`` (RMS over channels, per sample) is smoothed by the
    branching one-pole of :func:`diffx.kernels.ballistics.attack_release` (attack while the
    level rises above the envelope, release while it falls), starting from 0. The poles are
    ``exp(-ln 9 / (fs t))`` (10-90 % rise time ``t``, as the compressor's).

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        attack_ms, release_ms: scalar or ``(batch,)`` ms in ``TIME_RANGE_MS`` = [1e-3, 6e4].
        backend: ballistics back end (``"auto"``, ``"numba"``, ``"cuda"``, ``"torch"``).

    Returns:
        ``(batch, samples)`` envelope, linear amplitude >= 0 (plus the 1e-8 floor).
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    B = x.shape[0]
    attack = as_param(attack_ms, "attack_ms", B, x, *TIME_RANGE_MS)
    release = as_param(release_ms, "release_ms", B, x, *TIME_RANGE_MS)
    level = torch.sqrt(x.square().mean(dim=1) + _EPS_AMPLITUDE**2)
    # attack_release smooths "down" with its attack pole; on the negated level that is a rise.
    smoothed = attack_release(-level, time_to_pole(attack, sr), time_to_pole(release, sr),
                              backend=backend)  # fmt: skip
    return -smoothed


def auto_wah(
    x: torch.Tensor,
    sample_rate: float,
    min_freq_hz: torch.Tensor | float = 300.0,
    max_freq_hz: torch.Tensor | float = 3000.0,
    sensitivity_db: torch.Tensor | float = 12.0,
    q: torch.Tensor | float = 3.0,
    attack_ms: torch.Tensor | float = 5.0,
    release_ms: torch.Tensor | float = 100.0,
    mix: torch.Tensor | float = 1.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Envelope-controlled wah: a band-pass SVF whose centre follows the input's level.

    The envelope ``e`` (:func:`envelope`) scaled by the sensitivity sets the sweep position
    ``p = 1 - exp(-e 10^(sensitivity_db / 20))`` in [0, 1) (silence: 0, loud: towards 1), and
    the centre frequency moves geometrically, ``min_freq_hz (max_freq_hz / min_freq_hz)^p``.
    The band pass is the TPT SVF's (peak gain Q); the output is ``mix`` wet plus ``1 - mix``
    dry.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        min_freq_hz, max_freq_hz: scalar or ``(batch,)`` Hz in (0, sample_rate/2) (the sweep
            runs downwards if ``max_freq_hz < min_freq_hz``).
        sensitivity_db: scalar or ``(batch,)`` dB within +-120.
        q: scalar or ``(batch,)`` in [1e-3, 1e3].
        attack_ms, release_ms: scalar or ``(batch,)`` envelope times in [1e-3, 6e4] ms.
        mix: scalar or ``(batch,)`` wet fraction in [0, 1].
        backend: ``"auto"``, ``"numba"``, ``"cuda"`` or ``"torch"`` (filter and envelope).

    Returns:
        ``(batch, channels, samples)``; differentiable in the audio and every parameter.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    _check_backend(backend)
    B = x.shape[0]
    lo = _trajectory(min_freq_hz, "min_freq_hz", B, x, 0.0, sr / 2, True, True)
    hi = _trajectory(max_freq_hz, "max_freq_hz", B, x, 0.0, sr / 2, True, True)
    sens = as_param(sensitivity_db, "sensitivity_db", B, x, -MAX_ABS_SENSITIVITY_DB,
                    MAX_ABS_SENSITIVITY_DB)  # fmt: skip
    qs = _trajectory(q, "q", B, x, _filters.MIN_Q, _filters.MAX_Q)
    wet = as_param(mix, "mix", B, x, 0.0, 1.0)
    env = envelope(x, sr, attack_ms, release_ms, backend=backend)
    wide = wide_dtype(x.device, "auto_wah's sweep")
    position = -torch.expm1(-env.to(wide) * 10 ** (sens.to(wide)[:, None] / 20))
    lo_w, hi_w = lo.to(wide), hi.to(wide)
    cutoff = lo_w * torch.exp(position * torch.log(hi_w / lo_w))
    y = _svf_from_cutoff(x, cutoff, qs, sr, "bandpass", backend)
    return wet[:, None, None] * y + (1 - wet[:, None, None]) * x


def modulated_filter(
    x: torch.Tensor,
    sample_rate: float,
    freq_hz: torch.Tensor | float,
    q: torch.Tensor | float = 0.7071067811865476,
    rate_hz: torch.Tensor | float = 1.0,
    depth_octaves: torch.Tensor | float = 1.0,
    mode: str = "lowpass",
    phase_rad: torch.Tensor | float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """A state-variable filter whose cutoff a sine LFO sweeps in octaves around a centre.

    ``cutoff[n] = freq_hz 2^(depth_octaves sin(2 pi rate_hz n / fs + phase_rad))``, clipped
    above at ``MAX_SWEEP_FRACTION`` = 0.49 of the sample rate (so any centre and depth in range
    give a valid filter; the clipped part of the sweep passes no gradient).

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        freq_hz: scalar or ``(batch,)`` centre cutoff, Hz in (0, sample_rate/2).
        q: scalar or ``(batch,)`` in [1e-3, 1e3].
        rate_hz: scalar or ``(batch,)`` LFO rate in [0, sample_rate/2] Hz.
        depth_octaves: scalar or ``(batch,)`` in [0, ``MAX_DEPTH_OCTAVES``] = [0, 8].
        mode: ``"lowpass"``, ``"bandpass"`` or ``"highpass"``.
        phase_rad: scalar or ``(batch,)`` LFO start phase, radians (any finite value).
        backend: ``"auto"``, ``"numba"``, ``"cuda"`` or ``"torch"``.

    Returns:
        ``(batch, channels, samples)``; differentiable in the audio and every parameter.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    if mode not in SVF_MODES:
        raise ValueError(f"mode must be one of {SVF_MODES}, got {mode!r}")
    _check_backend(backend)
    B, _, T = x.shape
    centre = _trajectory(freq_hz, "freq_hz", B, x, 0.0, sr / 2, True, True)
    qs = _trajectory(q, "q", B, x, _filters.MIN_Q, _filters.MAX_Q)
    rate = as_param(rate_hz, "rate_hz", B, x, 0.0, sr / 2)
    depth = as_param(depth_octaves, "depth_octaves", B, x, 0.0, MAX_DEPTH_OCTAVES)
    phase = as_param(phase_rad, "phase_rad", B, x)
    wide = wide_dtype(x.device, "modulated_filter's LFO")
    t = torch.arange(T, dtype=wide, device=x.device) / sr
    lfo = torch.sin(2 * math.pi * rate.to(wide)[:, None] * t + phase.to(wide)[:, None])
    cutoff = centre.to(wide) * torch.exp2(depth.to(wide)[:, None] * lfo)
    cutoff = cutoff.clamp(max=MAX_SWEEP_FRACTION * sr)
    return _svf_from_cutoff(x, cutoff, qs, sr, mode, backend)
