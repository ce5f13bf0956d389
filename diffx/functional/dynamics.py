"""Dynamic range compression: a differentiable feed-forward compressor.

The design follows Giannoulis, Massberg & Reiss, "Digital Dynamic Range Compressor Design - A
Tutorial and Analysis", JAES 60(6), 2012: level detection in dB, a static gain computer with a
quadratic soft knee (their eq. 4), and smooth-branching attack/release ballistics applied to the
gain in dB (their eq. 17 in the log domain, Fig. 7(c)); see :mod:`diffx.kernels.ballistics`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

from diffx._validation import as_param, check_audio, check_sample_rate
from diffx.kernels.ballistics import attack_release
from diffx.kernels.ballistics import resolve_backend as _resolve_ballistics_backend
from diffx.kernels.threads import run_rows

BACKENDS = ("auto", "numba", "cuda", "torch")

# Amplitude floor of the level detector: levels are 10 log10(power + eps^2), so silence reads
# as -160 dB instead of -inf, and the log's derivative 1 / (power + eps^2) stays finite. Far
# below any threshold the compressor accepts (THRESHOLD_RANGE_DB) and below float32 resolution
# of full-scale audio (about -140 dB), so it never changes the output of real audio.
_EPS_AMPLITUDE = 1e-8
_EPS_POWER = _EPS_AMPLITUDE**2

_LN9 = math.log(9.0)  # 10%-90% rise time of a one-pole: t = ln(9) tau
_DB_TO_NEPER = math.log(10.0) / 20.0  # 10^(g / 20) = exp(g * _DB_TO_NEPER)

# Accepted parameter ranges (inclusive). Thresholds: down to -120 dB (still 40 dB above the
# detector floor) and up to +24 dB (headroom of float audio above full scale). Times: from
# 1 microsecond (the pole is already 0 at any audio rate; a lower bound keeps d alpha / dt =
# alpha ln9 / (fs t^2) finite) to one minute. Makeup: +-120 dB keeps the linear gain
# 10^(makeup / 20) far inside float32 range (float32 overflows near +770 dB).
THRESHOLD_RANGE_DB = (-120.0, 24.0)
MIN_RATIO = 1.0
# Ratios beyond 1e6 compress no differently in float arithmetic (the slope 1/R - 1 is -1 to
# within float32 precision from about R = 1e7).
MAX_RATIO = 1e6
# Knee widths: 0 (hard) to 120 dB, which already spans the whole range of real levels; the
# knee's quadratic (d + W/2)^2 / (2 W) stays far inside float32 range.
KNEE_RANGE_DB = (0.0, 120.0)
# Narrower knees are hard knees: 1 / (2 W) overflows for subnormal widths, and a knee this
# narrow moves the gain by at most |1/R - 1| W / 8 < 1.25e-7 dB.
MIN_SOFT_KNEE_DB = 1e-6
TIME_RANGE_MS = (1e-3, 60_000.0)
MAKEUP_RANGE_DB = (-120.0, 120.0)


# --------------------------------------------------------------------------------------------
# building blocks (the differentiable reference composition)
# --------------------------------------------------------------------------------------------


def detector_level_db(x: torch.Tensor) -> torch.Tensor:
    """Channel-linked level in dB: the mean power over channels, per sample.

    ``10 log10(mean_c x[c]^2 + eps^2)``. For one channel this is ``20 log10 |x|`` (with the
    -160 dB floor of ``_EPS_AMPLITUDE``). Mean power rather than max |x| is smooth in every
    channel, so each channel receives a gradient; for identical channels both agree.

    Args:
        x: ``(batch, channels, samples)`` detector input.

    Returns:
        ``(batch, samples)`` level in dB.
    """
    power = x.square().mean(dim=1) + _EPS_POWER
    # Audio above ~1.8e19 (385 dB over full scale) squares past float32's range: its level
    # reads as the largest finite power instead of +inf (whose gain would be NaN).
    return 10.0 * torch.log10(power.clamp(max=torch.finfo(power.dtype).max))


def compressor_gain_db(
    level_db: torch.Tensor,
    threshold_db: torch.Tensor,
    ratio: torch.Tensor,
    knee_db: torch.Tensor,
) -> torch.Tensor:
    """Static gain computer with a quadratic soft knee (Giannoulis et al. 2012, eq. 4).

    With ``d = level - threshold`` and knee width ``W``, the gain in dB is
    ``0`` for ``2 d < -W``; ``(1/ratio - 1) (d + W/2)^2 / (2 W)`` for ``2 |d| <= W``;
    ``(1/ratio - 1) d`` above. The curve and its derivatives in every argument are
    continuous across both knee edges, and ``W = 0`` gives the hard knee with finite
    gradients (the knee formula is never evaluated with a zero width). Widths up to
    ``MIN_SOFT_KNEE_DB`` = 1e-6 dB are taken as hard knees (the curves differ by < 1.25e-7 dB).

    Args:
        level_db: ``(batch, samples)`` detector level in dB.
        threshold_db: ``(batch,)`` dB.
        ratio: ``(batch,)`` compression ratio >= 1.
        knee_db: ``(batch,)`` knee width in dB in ``KNEE_RANGE_DB`` = [0, 120].

    Returns:
        ``(batch, samples)`` gain in dB (<= 0).
    """
    return _gain_from_slope(level_db, threshold_db, 1.0 / ratio - 1.0, knee_db)


def _gain_from_slope(level_db, threshold_db, slope, knee_db):
    """Gain computer parameterised by ``slope = 1/ratio - 1`` (as the numba kernels)."""
    d = level_db - threshold_db[:, None]
    slope = slope[:, None]
    has_knee = knee_db[:, None] > MIN_SOFT_KNEE_DB
    knee = torch.where(has_knee, knee_db[:, None], torch.zeros_like(knee_db[:, None]))
    safe_knee = torch.where(has_knee, knee, torch.ones_like(knee))
    q = d + 0.5 * knee
    in_knee = has_knee & (2.0 * d.abs() <= knee)
    above = slope * d
    soft = slope * q.square() / (2.0 * safe_knee)
    return torch.where(2.0 * d < -knee, torch.zeros_like(d), torch.where(in_knee, soft, above))


def time_to_pole(time_ms: torch.Tensor, sample_rate: float) -> torch.Tensor:
    """One-pole coefficient whose step response rises from 10% to 90% in ``time_ms``.

    ``alpha = exp(-ln 9 / (sample_rate * t))`` with ``t`` in seconds, the convention of
    DeepAFx-ST's compressor (see ANCHORS.md).
    """
    return torch.exp(-_LN9 / (sample_rate * time_ms * 1e-3))


def _compress_reference(
    x, sc, threshold_db, slope, knee_db, alpha_a, alpha_r, makeup_db, be, sign=1.0
):
    """The compressor as a composition of differentiable ops and the ballistics Function.

    ``sign = -1`` gives the expander from the mirrored curve (see :class:`_CpuCompressor`):
    the threshold and slope passed are then ``-T`` and ``R - 1``.
    """
    level = detector_level_db(x if sc is None else sc)
    target = _gain_from_slope(sign * level, threshold_db, slope, knee_db)
    smooth = attack_release(target, alpha_a, alpha_r, backend=be)
    gain = torch.exp((sign * smooth + makeup_db[:, None]) * _DB_TO_NEPER)
    return x * gain[:, None, :]


# --------------------------------------------------------------------------------------------
# CPU fast path: vectorised tensor ops around one numba recursion per direction
# --------------------------------------------------------------------------------------------
#
# Only the attack/release recursion is inherently serial. The detector (a logarithm), the gain
# application (an exponential) and their derivatives are elementwise, and run much faster as
# vectorised (SIMD, multi-threaded) tensor ops than as scalar libm calls inside the per-sample
# loop, so the numba kernels below do only the gain computer and the ballistics.

_DB_PER_NEPER_POWER = 10.0 / math.log(10.0)  # 10 log10(p) = _DB_PER_NEPER_POWER * ln(p)


@njit(cache=True, inline="always")
def _gain_scalar(d, slope, knee, half_inv_knee):  # pragma: no cover - compiled
    """Gain computer for one sample, branch-free (``d`` = level - threshold).

    With ``q = clamp(d + W/2, 0, W)`` the three regions of eq. 4 are one expression,
    ``slope (q^2 / (2W) + max(d - W/2, 0))``, so noisy levels near the knee cost no branch
    mispredictions. ``half_inv_knee`` = 1 / (2W), hoisted out of the sample loop.
    """
    if knee > MIN_SOFT_KNEE_DB:
        q = min(max(d + 0.5 * knee, 0.0), knee)
        return slope * (q * q * half_inv_knee + max(d - 0.5 * knee, 0.0))
    return slope * max(d, 0.0)


@njit(cache=True, nogil=True)
def _smooth_forward(first_row, end_row, level, params, sign, smooth, exponent):  # pragma: no cover
    """Gain computer + ballistics for rows ``first_row .. end_row - 1``; params (B, 6) float64 =
    [threshold, slope, knee, alpha_a, alpha_r, makeup].

    smooth (B, T) receives the smoothed gain in dB (the backward reads it to hold the branch
    fixed) and exponent (B, T) the natural-log gain ``(sign smooth + makeup) ln10 / 20``, which
    the caller exponentiates vectorised. The state is carried in float64 whatever the dtype.
    ``sign`` is +1 for the compressor and -1 for the expander, whose gains the kernel smooths
    negated (see :class:`_CpuCompressor`).
    """
    n_samples = level.shape[1]
    for b in range(first_row, end_row):
        thr = params[b, 0]
        slope = params[b, 1]
        knee = params[b, 2]
        aa = params[b, 3]
        ar = params[b, 4]
        makeup = params[b, 5]
        half_inv_knee = 0.5 / knee if knee > MIN_SOFT_KNEE_DB else 0.0
        state = 0.0
        for n in range(n_samples):
            g = _gain_scalar(level[b, n] - thr, slope, knee, half_inv_knee)
            alpha = aa if g < state else ar
            # alpha state + (1 - alpha) g, rearranged: one operation less on the serial
            # dependency chain through ``state`` (about 20% faster), and exact at steady state.
            state = g + alpha * (state - g)
            smooth[b, n] = state
            exponent[b, n] = (sign * state + makeup) * _DB_TO_NEPER


@njit(cache=True, nogil=True)
def _smooth_backward(
    first_row,
    end_row,
    grad_smooth,
    level,
    power,
    smooth,
    params,
    coeff_scale,
    coeff,
    grad_params,
    need_coeff,
):  # pragma: no cover - compiled
    """Reverse pass of :func:`_smooth_forward` for rows ``first_row .. end_row - 1``.

    grad_smooth (B, T) is dL/dsmooth. coeff (B, T) receives, when ``need_coeff``,
    ``dL/dlevel * coeff_scale / power`` so that the caller's ``coeff * sc`` is dL/dsc
    (``coeff_scale`` = 2 * 10 / (ln 10 * n_sc)); grad_params (B, 6) receives the parameter
    gradients, accumulated in float64.
    """
    n_samples = level.shape[1]
    for b in range(first_row, end_row):
        thr = params[b, 0]
        slope = params[b, 1]
        knee = params[b, 2]
        aa = params[b, 3]
        ar = params[b, 4]
        half_inv_knee = 0.5 / knee if knee > MIN_SOFT_KNEE_DB else 0.0
        w = 0.0
        alpha_next = 0.0
        d_thr = 0.0
        d_slope = 0.0
        d_knee = 0.0
        d_aa = 0.0
        d_ar = 0.0
        d_makeup = 0.0
        for n in range(n_samples - 1, -1, -1):
            g_state = grad_smooth[b, n]
            d_makeup += g_state
            # Gain computer and its derivatives (see _gain_scalar; q/W is 0 below the knee,
            # the knee slope inside, 1 above).
            d = level[b, n] - thr
            if knee > MIN_SOFT_KNEE_DB:
                q = min(max(d + 0.5 * knee, 0.0), knee)
                above = max(d - 0.5 * knee, 0.0)
                g_norm = q * q * half_inv_knee + above
                dg_dd = 2.0 * slope * q * half_inv_knee
                dg_dknee = 2.0 * slope * q * (knee - q) * half_inv_knee * half_inv_knee
            else:
                g_norm = max(d, 0.0)
                dg_dd = slope * (1.0 if d > 0.0 else 0.0)
                dg_dknee = 0.0
            g = slope * g_norm
            # Ballistics adjoint with the branch held fixed.
            prev = smooth[b, n - 1] if n > 0 else 0.0
            attack = g < prev
            alpha = aa if attack else ar
            w = g_state + alpha_next * w
            alpha_next = alpha
            # Branch-free accumulation: with noisy levels the attack/release choice is
            # unpredictable, and a mispredicted branch costs more than the arithmetic.
            d_alpha = w * (prev - g)
            attack_weight = 1.0 if attack else 0.0
            d_aa += attack_weight * d_alpha
            d_ar += (1.0 - attack_weight) * d_alpha
            grad_g = (1.0 - alpha) * w
            grad_d = grad_g * dg_dd
            d_thr -= grad_d
            d_slope += grad_g * g_norm
            d_knee += grad_g * dg_dknee
            # Detector: d/dsc[c] of 10 log10(mean sc^2 + eps^2) = coeff_scale sc[c] / power.
            if need_coeff:
                coeff[b, n] = grad_d * coeff_scale / power[b, n]
        grad_params[b, 0] = d_thr
        grad_params[b, 1] = d_slope
        grad_params[b, 2] = d_knee
        grad_params[b, 3] = d_aa
        grad_params[b, 4] = d_ar
        grad_params[b, 5] = d_makeup


def _mean_power(sc):
    """``mean_c sc[c]^2 + eps^2``, (B, T): the argument of the detector's logarithm."""
    power = sc.square().squeeze(1) if sc.shape[1] == 1 else sc.square().mean(dim=1)
    # As detector_level_db: a power past the dtype's range reads as its largest finite value.
    return power.add_(_EPS_POWER).clamp_(max=torch.finfo(power.dtype).max)


class _CpuCompressor(torch.autograd.Function):
    """The compressor (and expander) on CPU; inputs x (B, C, T), sc (B, Csc, T) or None,
    params (B,), and ``sign``.

    Detector and gain application are vectorised tensor ops; the gain computer and the
    ballistics run in one numba kernel (forward) and its reverse (backward). Returns the output
    and, as non-differentiable extras that the backward reads, the detector's mean power, level
    (dB), smoothed gain (dB) and applied linear gain, each ``(B, T)``.

    ``sign = -1`` runs the expander through the same kernels: its gain curve is the compressor's
    mirrored, ``g(L) = -c(-L)`` with ``c`` the compressor curve of threshold ``-T`` and slope
    ``R - 1`` (the caller passes those), and its attack (gain rising) is the compressor's attack
    (gain falling) of the negated gain. So the kernels see the level ``sign L`` and smooth
    ``sign g``; the exponent and the gradients undo the sign. "level" and "smooth" are saved
    in that kernel space.
    """

    @staticmethod
    def forward(x, sc, threshold_db, slope, knee_db, alpha_a, alpha_r, makeup_db, sign=1.0):
        x = x.detach().contiguous()
        sc = x if sc is None else sc.detach().contiguous()
        power = _mean_power(sc)
        level = torch.log(power).mul_(sign * _DB_PER_NEPER_POWER)
        params = _stack_params(threshold_db, slope, knee_db, alpha_a, alpha_r, makeup_db)
        smooth = torch.empty_like(level)
        gain = torch.empty_like(level)  # receives the exponent, exponentiated in place
        run_rows(
            _smooth_forward, level.shape[0], level.numel(), level.numpy(), params, float(sign),
            smooth.numpy(), gain.numpy(),
        )  # fmt: skip
        gain.exp_()
        return x * gain[:, None, :], power, level, smooth, gain

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.has_sc = inputs[1] is not None
        ctx.sign = float(inputs[8]) if len(inputs) > 8 else 1.0
        ctx.set_materialize_grads(False)
        # The double-backward path recomputes everything from the inputs instead.
        ctx.mark_non_differentiable(*output[1:])
        sc = inputs[1] if ctx.has_sc else inputs[0]
        ctx.save_for_backward(*output[1:], inputs[0], sc, *inputs[2:8])

    @staticmethod
    def backward(ctx, grad_out, *_grad_extras):
        power, level, smooth, gain, x, sc, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        sign = ctx.sign
        if grad_out is None:
            return (None,) * 9
        if torch.is_grad_enabled():
            return _recompute_backward(ctx, grad_out, x, sc, params)
        # No .contiguous(): the elementwise ops below take any strides (the gradient of a
        # .sum() loss is an expanded scalar), and the kernel reads only grad_smooth.
        grad_out = grad_out.detach()
        x = x.detach()
        # The detector path reaches x itself when there is no separate side-chain.
        need_coeff = needs[1] if ctx.has_sc else needs[0]
        grad_x = grad_out * gain[:, None, :] if needs[0] else None
        grad_sc = None
        grad_params = None
        if need_coeff or any(needs[2:]):
            # Output = x * exp((smooth + makeup) ln10 / 20): dL/dsmooth.
            prod = grad_out * x
            prod = prod.squeeze(1) if prod.shape[1] == 1 else prod.sum(dim=1)
            grad_smooth = prod.mul_(gain).mul_(sign * _DB_TO_NEPER)  # d/d(kernel's smooth)
            coeff = torch.empty_like(level) if need_coeff else torch.empty(1, 1, dtype=x.dtype)
            grad_params = np.empty((x.shape[0], 6), dtype=np.float64)
            run_rows(
                _smooth_backward,
                level.shape[0],
                level.numel(),
                grad_smooth.numpy(),
                level.numpy(),
                power.numpy(),
                smooth.numpy(),
                _stack_params(*params),
                sign * 2.0 * _DB_PER_NEPER_POWER / sc.shape[1],
                coeff.numpy(),
                grad_params,
                need_coeff,
            )
            grad_params[:, 5] *= sign  # the makeup adds to sign * smooth
            grad_params = torch.from_numpy(grad_params).to(x.dtype)
            if need_coeff:
                # Where the power was clamped to the dtype's largest value the level is
                # constant in the side-chain (see _mean_power).
                coeff.masked_fill_(power >= torch.finfo(power.dtype).max, 0.0)
                if ctx.has_sc:
                    grad_sc = coeff[:, None, :] * sc.detach()
                else:
                    grad_x.addcmul_(coeff[:, None, :], x)
        return (
            grad_x,
            grad_sc,
            *(grad_params[:, i] if needs[2 + i] else None for i in range(6)),
            None,
        )


def _stack_params(*params):
    """(B, 6) float64 numpy array: the kernels do their scalar arithmetic in float64."""
    return torch.stack([p.detach() for p in params], dim=1).to(torch.float64).contiguous().numpy()


def _recompute_backward(ctx, grad_out, x, sc, params):
    """Differentiable backward (create_graph=True): autograd through the reference composition.

    The ballistics inside it use the numba back end, whose own backward is differentiable, so
    every order of derivative is available.
    """
    inputs = [x, sc if ctx.has_sc else None, *params]
    wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
    with torch.enable_grad():
        out = _compress_reference(x, sc if ctx.has_sc else None, *params, "numba", ctx.sign)
        grads = torch.autograd.grad(
            out, [inputs[i] for i in wanted], grad_out, create_graph=True, allow_unused=True
        )
    result = [None] * 9
    for i, grad in zip(wanted, grads):
        result[i] = grad if grad is not None else torch.zeros_like(inputs[i])
    return tuple(result)


# --------------------------------------------------------------------------------------------
# public op
# --------------------------------------------------------------------------------------------


def compressor(
    x: torch.Tensor,
    sample_rate: float,
    threshold_db: torch.Tensor | float,
    ratio: torch.Tensor | float,
    attack_ms: torch.Tensor | float,
    release_ms: torch.Tensor | float,
    knee_db: torch.Tensor | float = 0.0,
    makeup_gain_db: torch.Tensor | float = 0.0,
    sidechain: torch.Tensor | None = None,
    backend: str = "auto",
    link: str = "mean",
) -> torch.Tensor:
    """Feed-forward dynamic range compressor (Giannoulis, Massberg & Reiss, JAES 2012).

    Per sample: the detector level ``L = 10 log10(mean_c s[c]^2 + eps^2)`` dB of the side-chain
    ``s`` (``x`` itself by default; channels are linked through their mean power, so every
    channel gets the same gain), the static soft-knee curve of :func:`compressor_gain_db`
    (threshold ``T``, ratio ``R``, knee ``W``) gives the target gain ``g = curve(L) - L`` <= 0
    dB, the smooth-branching ballistics of :func:`diffx.kernels.ballistics.attack_release`
    smooth ``g`` in dB (attack while gain reduction grows, release otherwise, starting from
    0 dB), and the output is ``x * 10^((g_smooth + makeup) / 20)``.

    Levels whose power exceeds the dtype's range (float32 audio above ~1.8e19, 385 dB over full
    scale) read as the largest finite power, so any finite audio gives a finite output.

    Steady state: for a constant level ``L >= T + W/2`` the output level is
    ``T + (L - T) / R + makeup``; below ``T - W/2`` the input passes with the makeup gain only.

    Time constants: ``alpha = exp(-ln 9 / (sample_rate * t))`` with ``t`` the attack or release
    time in seconds, so ``t`` is the 10%-90% rise time of the gain in dB after a step in level
    (the DeepAFx-ST convention, see ANCHORS.md; time constant ``tau = t / ln 9``).

    Differences from pedalboard's ``Compressor`` (JUCE ``dsp::Compressor``), measured against
    pedalboard 0.9: JUCE smooths the linear peak envelope ``|x|`` with a branching one-pole
    *before* the gain computer (``env`` attacks when ``|x| > env``) and then applies the hard
    knee ``(env / T)^(1/R - 1)``; its channels are compressed independently (unlinked), and its
    time constant is ``tau = t / (2 pi)`` (``alpha = exp(-2 pi / (fs t))``): a 100 ms release
    decays with tau = 15.9 ms, where ours has tau = 45.5 ms. There is no knee. For a
    steady level both give ``T + (L - T) / R``; with times converted by
    ``t_diffx = t_juce * ln 9 / (2 pi)`` their outputs on music stay close (see the tests for
    the tolerance), differing on transients because one smooths level and the other gain.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        threshold_db: scalar or ``(batch,)``, dB in ``THRESHOLD_RANGE_DB`` = [-120, 24].
        ratio: scalar or ``(batch,)``, in [``MIN_RATIO``, ``MAX_RATIO``] = [1, 1e6] (1 = no
            compression; large values limit).
        attack_ms: scalar or ``(batch,)``, ms in ``TIME_RANGE_MS`` = [0.001, 60000].
        release_ms: scalar or ``(batch,)``, ms in ``TIME_RANGE_MS``.
        knee_db: scalar or ``(batch,)``, knee width in dB in ``KNEE_RANGE_DB`` = [0, 120]
            (0 = hard knee).
        makeup_gain_db: scalar or ``(batch,)``, dB in ``MAKEUP_RANGE_DB`` = [-120, 120].
        sidechain: optional ``(batch, sc_channels, samples)`` detector input (same batch size
            and length as ``x``; any channel count). Differentiable.
        backend: ``"auto"`` (numba-accelerated path on CPU, numba.cuda ballistics on CUDA),
            ``"numba"``, ``"cuda"``, or ``"torch"`` (tensor ops around the reference loop).
        link: stereo linking of the detector (see :func:`run_linked`): ``"mean"`` (default:
            mean power over channels, one gain for all), ``"max"`` (the loudest channel at
            each sample, one gain for all) or ``"none"`` (each channel its own detector and
            gain; a side-chain then needs x's channel count or one channel).

    Returns:
        ``(batch, channels, samples)`` compressed audio. Differentiable in ``x``, ``sidechain``
        and every parameter, to any order (the attack/release branch is held fixed).

    Raises:
        ValueError: naming the argument, for bad audio, shapes or out-of-range parameters.
    """
    sr = check_sample_rate(sample_rate)
    sidechain = check_sidechain(x, sidechain)
    check_link(link)
    backend = check_backend(backend)
    B = x.shape[0]
    threshold = as_param(threshold_db, "threshold_db", B, x, *THRESHOLD_RANGE_DB)
    ratio_t = as_param(ratio, "ratio", B, x, MIN_RATIO, MAX_RATIO)
    attack = as_param(attack_ms, "attack_ms", B, x, *TIME_RANGE_MS)
    release = as_param(release_ms, "release_ms", B, x, *TIME_RANGE_MS)
    knee = as_param(knee_db, "knee_db", B, x, *KNEE_RANGE_DB)
    makeup = as_param(makeup_gain_db, "makeup_gain_db", B, x, *MAKEUP_RANGE_DB)
    slope = 1.0 / ratio_t - 1.0
    params = (threshold, slope, knee, time_to_pole(attack, sr), time_to_pole(release, sr), makeup)
    return run_linked(
        lambda xr, scr, *p: _curve_and_ballistics(xr, scr, p, backend, 1.0),
        x, sidechain, link, params,
    )  # fmt: skip


def _curve_and_ballistics(x, sc, params, backend, sign):
    """Compressor (sign +1) or expander (sign -1) on linked rows; params as _CpuCompressor's."""
    if backend == "auto":
        backend = "numba" if x.device.type == "cpu" else "cuda" if x.is_cuda else "torch"
    if backend == "numba":
        if x.device.type != "cpu":
            raise ValueError("backend='numba' runs on CPU tensors only; use 'cuda' or 'auto'")
        out, *_ = _CpuCompressor.apply(x, sc, *params, sign)
        return out
    backend = _resolve_ballistics_backend(backend, x)
    return _compress_reference(x, sc, *params, backend, sign)


# --------------------------------------------------------------------------------------------
# checks and stereo linking shared by the dynamics ops (diffx.functional.gates uses them too)
# --------------------------------------------------------------------------------------------

LINKS = ("mean", "max", "none")


def check_link(link: str) -> str:
    if link not in LINKS:
        raise ValueError(f"link must be one of {LINKS}, got {link!r}")
    return link


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_sidechain(x: torch.Tensor, sidechain: torch.Tensor | None) -> torch.Tensor | None:
    """Check ``x`` and an optional side-chain; return the side-chain in ``x``'s dtype."""
    check_audio(x, "x")
    if sidechain is None:
        return None
    B, _, T = x.shape  # batch, channels, samples
    check_audio(sidechain, "sidechain")
    if sidechain.dim() != 3 or sidechain.shape[0] != B or sidechain.shape[2] != T:
        raise ValueError(
            f"sidechain must be shaped (batch, sc_channels, samples) = ({B}, *, {T}), got "
            f"shape {tuple(sidechain.shape)}"
        )
    if sidechain.device != x.device:
        raise ValueError(f"sidechain is on {sidechain.device} but x is on {x.device}")
    return sidechain.to(dtype=x.dtype)


def loudest_channel(sc: torch.Tensor) -> torch.Tensor:
    """``(batch, 1, samples)``: per sample, the channel of ``sc`` with the largest ``|sc|``.

    Its power is the largest channel power, so a mean-power detector fed with it reads the
    "max" link's level; the gradient reaches the selected channel only (the selection itself
    is piecewise constant, so this is the derivative almost everywhere).
    """
    if sc.shape[1] == 1:
        return sc
    index = sc.detach().abs().argmax(dim=1, keepdim=True)
    return sc.gather(1, index)


def run_linked(op, x, sidechain, link, params):
    """Run ``op(x_rows, sc_rows, *param_rows)`` under a stereo ``link`` and restore the shape.

    ``op`` is a channel-linked dynamics op whose detector reads the mean power over the
    side-chain's channels (``sc_rows`` None: over ``x_rows``' channels) and applies one gain
    to every channel of its row; ``params`` are ``(batch,)`` tensors.

    - ``"mean"``: as it is: one detector per example, the mean power over channels.
    - ``"max"``: one detector per example reading the loudest channel at each sample
      (:func:`loudest_channel`).
    - ``"none"``: every channel its own detector and gain: channels become rows (batch x
      channels); a side-chain needs as many channels as ``x``, or one (shared by all).
    """
    if link == "mean":
        return op(x, sidechain, *params)
    if link == "max":
        return op(x, loudest_channel(x if sidechain is None else sidechain), *params)
    B, C, T = x.shape  # batch, channels, samples
    if sidechain is not None and sidechain.shape[1] == 1:
        return op(x, sidechain, *params)  # one detector for every channel: linked already
    if sidechain is not None and sidechain.shape[1] != C:
        raise ValueError(
            f"with link='none' the sidechain needs x's {C} channels (or one), got "
            f"{sidechain.shape[1]}"
        )
    if C == 1:
        return op(x, sidechain, *params)
    rows = x.reshape(B * C, 1, T)
    sc_rows = None if sidechain is None else sidechain.reshape(B * C, 1, T)
    out = op(rows, sc_rows, *(p.repeat_interleave(C) for p in params))
    return out.reshape(B, C, T)
