"""Differentiable allpass cascades: plain, warped and warped + stretched sections.

After Bargum et al., "Differentiable Allpass Filters for Phase Response Estimation and
Automatic Signal Alignment" (2023, arXiv:2306.00860; code: github.com/abargum/diff-apf).
The sections are

- first order, coefficient ``a`` (|a| < 1)::

      H1(z) = (a + z^-1) / (1 + a z^-1)

- second order, pole radius ``R`` in [0, 1) and centre frequency ``f_c`` Hz, with
  ``c = R^2`` and ``d = -2 R cos(2 pi f_c / fs)``::

      H2(z) = (c + d z^-1 + z^-2) / (1 + d z^-1 + c z^-2)

  Its phase falls by 2 pi in total, passing close to -pi at ``f_c`` (exactly as R -> 1); ``R``
  sets how sharply.

- warped: every ``z^-1`` of a section replaced by the first-order allpass
  ``(a_w + z^-1) / (1 + a_w z^-1)`` with warping coefficient ``a_w`` (|a_w| < 1). Both
  warped sections keep their order (derivations at :func:`second_order_allpass_sos` and
  :func:`first_order_allpass_sos`); warping only moves the poles, by the disc automorphism
  ``q = (p - a_w) / (1 - a_w p)``, so they stay inside the unit circle.

- warped + stretched: a warped first-order section with every ``z^-1`` further replaced by
  ``z^-M`` (the reference code uses ``M = 4``)::

      H(z) = (k + z^-M) / (1 + k z^-M),    k = (a + a_w) / (1 + a a_w)

  The paper's implementation (``filters/Allpass_1stOrder_SW.py``) runs exactly this
  difference equation, ``y[n] = k x[n] + x[n-4] - k y[n-4]``, with a four-sample delay line.

Stability by construction: every parameter range above maps to poles strictly inside the unit
circle; values outside raise ``ValueError`` naming the argument (nothing is clamped). A
network that produces these parameters maps its outputs into range itself, e.g. the paper's
``R = 0.99999 tanh(.)`` (take the absolute value or a sigmoid for R >= 0),
``f_c = 9990 tanh(.) + 10010`` Hz and ``a = 0.99999 tanh(.)``.

Filtering goes through :func:`diffx.functional.filters.sosfilt`. A stretched section is
filtered exactly by polyphase decomposition: ``H1(z^M)`` acts on each of the ``M``
interleaved subsequences ``x[jM + m]`` as the first-order ``H1(z)``, so the section costs
one first-order recursion and its gradient is smooth in ``k`` everywhere. For inspection and
interoperability (``scipy.signal.sosfreqz``, ``sosfilt``) :func:`allpass_sos` also writes a
stretched section as ``ceil(M / 2)`` ordinary second-order sections by factoring
``1 + k z^-M`` (its poles are the M-th roots of ``-k``); those factored coefficients are
exact but, like any root factorization, not differentiable where the poles coincide
(``k = 0`` for ``M >= 3``). Differentiate through :func:`allpass_cascade`, or through
:func:`phase_response` / :func:`group_delay` with ``stretch=M`` on the unfactored
first-order rows, which are smooth everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffx._validation import check_audio, check_finite, check_sample_rate, wide_dtype
from diffx.functional.filters import sosfilt

KINDS = ("first_order", "second_order", "mixed", "warped", "warped_stretched")

# Stretch of the warped + stretched first-order section in the paper's code (a 4-sample
# delay line in filters/Allpass_1stOrder_SW.py).
DEFAULT_STRETCH = 4

ParamLike = torch.Tensor | float


# --------------------------------------------------------------------------------------------
# parameter handling
# --------------------------------------------------------------------------------------------


def _like(values: Sequence[object], dtype, device) -> torch.Tensor:
    """An empty tensor carrying the dtype/device the coefficients are computed in."""
    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return torch.empty(0, dtype=dtype or v.dtype, device=device or v.device)
    return torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device)


def _section_param(
    value: ParamLike,
    name: str,
    like: torch.Tensor,
    low: float,
    high: float,
    low_open: bool,
    high_open: bool,
) -> torch.Tensor:
    """Turn a per-section parameter into ``(batch or 1, n_sections or 1)``, range-checked.

    A scalar or 0-d tensor gives ``(1, 1)``; a 1-D tensor is ``(n_sections,)`` shared by the
    whole batch; a 2-D tensor is ``(batch, n_sections)``.
    """
    given_dtype = torch.float64  # of a Python number
    if isinstance(value, torch.Tensor):
        given_dtype = value.dtype if value.is_floating_point() else torch.float64
        t = value.to(dtype=like.dtype, device=like.device)
    else:
        try:
            t = torch.tensor(float(value), dtype=like.dtype, device=like.device)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a tensor, got {value!r}") from None
    if t.dim() == 0:
        t = t.reshape(1, 1)
    elif t.dim() == 1:
        t = t.unsqueeze(0)
    elif t.dim() != 2:
        raise ValueError(
            f"{name} must be a scalar, (n_sections,) or (batch, n_sections), got shape "
            f"{tuple(t.shape)}"
        )
    if t.numel() == 0:
        raise ValueError(f"{name} has no sections (shape {tuple(t.shape)})")
    return _check_range(t, name, low, high, low_open, high_open, given_dtype)


def _check_range(t, name, low, high, low_open, high_open, given_dtype=torch.float64):
    """``t`` checked against its range and returned. A closed end may be passed by the
    rounding of the dtype the value was given in, ``given_dtype`` (``sample_rate / 2`` as a
    float32 tensor can round above the float64 Nyquist frequency): such values are moved onto
    the end, keeping their gradient."""
    d = t.detach()
    check_finite(d, name)
    slack = torch.finfo(given_dtype).eps * max(abs(low), abs(high), 1.0)
    below = (d <= low) if low_open else (d < low - slack)
    above = (d >= high) if high_open else (d > high + slack)
    if bool((below | above).any()):
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(
            f"{name} must lie in {lo}{low:g}, {high:g}{hi}, got values in "
            f"[{float(d.min()):.8g}, {float(d.max()):.8g}]"
        )
    if bool(((d < low) | (d > high)).any()):
        t = t + (t.detach().clamp(low, high) - d)  # straight-through: the gradient is kept
    return t


def _broadcast(params: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Broadcast ``(b, n)`` parameters to one common ``(batch, n)``; names mismatches."""
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in params.items())
    sizes_b = {p.shape[0] for p in params.values()} - {1}
    sizes_n = {p.shape[1] for p in params.values()} - {1}
    if len(sizes_b) > 1:
        raise ValueError(f"batch sizes do not match: {shapes}")
    if len(sizes_n) > 1:
        raise ValueError(f"numbers of sections do not match: {shapes}")
    b = max(sizes_b, default=1)
    n = max(sizes_n, default=1)
    return [p.expand(b, n) for p in params.values()]


def _warp_param(warp: ParamLike, like: torch.Tensor) -> torch.Tensor:
    """``warp``: scalar, ``(batch,)`` (one per item) or ``(batch, n_sections)``."""
    t = warp.to(dtype=like.dtype, device=like.device) if isinstance(warp, torch.Tensor) else warp
    if isinstance(t, torch.Tensor) and t.dim() == 1:
        t = t.unsqueeze(1)  # (batch,) -> (batch, 1): shared by every section of the item
    return _section_param(t, "warp", like, -1.0, 1.0, True, True)


# --------------------------------------------------------------------------------------------
# section coefficients
# --------------------------------------------------------------------------------------------


def _stack_rows(b0, b1, b2, a0, a1, a2) -> torch.Tensor:
    return torch.stack(torch.broadcast_tensors(b0, b1, b2, a0, a1, a2), dim=-1)


def _warped_first_order_coeff(coeff: torch.Tensor, warp: torch.Tensor | None) -> torch.Tensor:
    # (a + u)/(1 + a u) with u = (a_w + z^-1)/(1 + a_w z^-1), times (1 + a_w z^-1) above and
    # below, is ((a + a_w) + (1 + a a_w) z^-1) / ((1 + a a_w) + (a + a_w) z^-1): first order
    # again with k = (a + a_w)/(1 + a a_w). 1 + a a_w > 0 and |k| < 1 for |a|, |a_w| < 1.
    if warp is None:
        return coeff
    return (coeff + warp) / (1 + coeff * warp)


def first_order_allpass_sos(
    coeff: ParamLike,
    warp: ParamLike | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """First-order allpass sections ``(a + z^-1) / (1 + a z^-1)``, optionally warped.

    Warping replaces ``z^-1`` by ``(a_w + z^-1) / (1 + a_w z^-1)``, which gives the first-order
    section with ``k = (a + a_w) / (1 + a a_w)``.

    Args:
        coeff: ``(batch, n)``, ``(n,)`` or scalar coefficient ``a``, in (-1, 1).
        warp: optional warping coefficient ``a_w`` in (-1, 1): scalar, ``(batch,)`` (one per
            item) or ``(batch, n)`` (one per section).
        dtype, device: of the result when no argument is a floating-point tensor.

    Returns:
        ``(batch, n, 6)`` rows ``[k, 1, 0, 1, k, 0]`` in scipy's SOS layout (``b2 = a2 = 0``).
        Differentiable in ``coeff`` and ``warp``.
    """
    like = _like([coeff, warp], dtype, device)
    params = {"coeff": _section_param(coeff, "coeff", like, -1.0, 1.0, True, True)}
    if warp is not None:
        params["warp"] = _warp_param(warp, like)
    tensors = _broadcast(params)
    k = _warped_first_order_coeff(tensors[0], tensors[1] if warp is not None else None)
    one, zero = torch.ones_like(k), torch.zeros_like(k)
    return _stack_rows(k, one, zero, one, k, zero)


def second_order_allpass_sos(
    pole_radius: ParamLike,
    freq_hz: ParamLike,
    sample_rate: float,
    warp: ParamLike | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Second-order allpass sections from pole radius and centre frequency, optionally warped.

    Unwarped: ``(c + d z^-1 + z^-2) / (1 + d z^-1 + c z^-2)`` with ``c = R^2``,
    ``d = -2 R cos(2 pi f_c / fs)``, i.e. poles ``p = R e^{+-j theta}``, ``theta = 2 pi f_c/fs``.

    Warped (``z^-1 -> (a_w + z^-1) / (1 + a_w z^-1)``): multiplying numerator and denominator
    by ``(1 + a_w z^-1)^2`` gives the biquad

        den = (1 + a_w d + c a_w^2) + (2 a_w (1 + c) + d (1 + a_w^2)) z^-1
              + (c + a_w d + a_w^2) z^-2,

    with the numerator its reverse (so it is allpass). Writing ``p = pr + j pi`` these are

        a0 = |1 - a_w p|^2 = (1 - a_w pr)^2 + (a_w pi)^2 >= (1 - |a_w| R)^2 > 0
        a1 = -2 Re((p - a_w)(1 - a_w conj(p))) = -2 ((pr - a_w)(1 - a_w pr) - a_w pi^2)
        a2 = |p - a_w|^2 = (pr - a_w)^2 + pi^2

    i.e. the poles moved to ``q = (p - a_w) / (1 - a_w p)``, ``|q| < 1``. The code uses these
    sum-of-squares forms, which do not cancel catastrophically when ``R`` and ``a_w`` are
    both near 1 (``c + a_w d + a_w^2`` does).

    Args:
        pole_radius: ``(batch, n)``, ``(n,)`` or scalar ``R`` in [0, 1).
        freq_hz: ``(batch, n)``, ``(n,)`` or scalar ``f_c`` in [0, sample_rate / 2] Hz.
        sample_rate: Hz.
        warp: optional ``a_w`` in (-1, 1): scalar, ``(batch,)`` or ``(batch, n)``.
        dtype, device: of the result when no argument is a floating-point tensor.

    Returns:
        ``(batch, n, 6)`` rows in scipy's SOS layout, normalized to ``a0 = 1``.
        Differentiable in ``pole_radius``, ``freq_hz`` and ``warp``.
    """
    sr = check_sample_rate(sample_rate)
    like = _like([pole_radius, freq_hz, warp], dtype, device)
    params = {
        "pole_radius": _section_param(pole_radius, "pole_radius", like, 0.0, 1.0, False, True),
        "freq_hz": _section_param(freq_hz, "freq_hz", like, 0.0, sr / 2, False, False),
    }
    if warp is not None:
        params["warp"] = _warp_param(warp, like)
    tensors = _broadcast(params)
    radius, freq = tensors[0], tensors[1]
    theta = 2 * math.pi * freq / sr
    one = torch.ones_like(radius)
    if warp is None:
        c = radius * radius
        d = -2 * radius * torch.cos(theta)
        return _stack_rows(c, d, one, one, d, c)
    aw = tensors[2]
    pr, pi = radius * torch.cos(theta), radius * torch.sin(theta)
    den0 = (1 - aw * pr) ** 2 + (aw * pi) ** 2
    a1 = -2 * ((pr - aw) * (1 - aw * pr) - aw * pi * pi) / den0
    a2 = ((pr - aw) ** 2 + pi * pi) / den0
    return _stack_rows(a2, a1, one, one, a1, a2)


def _check_stretch(stretch: int, name: str = "stretch") -> int:
    if isinstance(stretch, bool) or not isinstance(stretch, int) or stretch < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {stretch!r}")
    return stretch


def _factor_stretched(k: torch.Tensor, stretch: int) -> torch.Tensor:
    """SOS rows of ``(k + z^-M) / (1 + k z^-M)``, ``M = stretch``: ``(..., ceil(M/2), 6)``.

    ``1 + k z^-M`` has its poles at the M roots of ``z^M = -k``: radius ``r = |k|^(1/M)``,
    angles ``(2j + 1) pi / M`` for ``k >= 0`` and ``2 j pi / M`` for ``k < 0``. Each conjugate
    pair gives ``1 - 2 r cos(angle) z^-1 + r^2 z^-2``; the real poles (angle 0 or pi) give a
    first-order factor, two of them one biquad. Every factor's numerator is its reverse, and
    the product of the reverses is ``z^-M + k``, so the rows multiply to the section exactly.
    """
    one, zero = torch.ones_like(k), torch.zeros_like(k)
    if stretch == 1:
        return _stack_rows(k, one, zero, one, k, zero).unsqueeze(-2)
    if stretch == 2:
        return _stack_rows(k, zero, one, one, zero, k).unsqueeze(-2)
    # |k|^(1/M) has an infinite derivative at k = 0 (a pole of multiplicity M splits there).
    r = k.abs() ** (1.0 / stretch)

    def rows_for(offset: int) -> torch.Tensor:
        rows, real_poles = [], []
        for j in range(stretch):
            angle = (2 * j + offset) * math.pi / stretch
            if angle > math.pi + 1e-9:
                break  # the lower half-plane holds the conjugates
            if abs(angle) < 1e-9 or abs(angle - math.pi) < 1e-9:
                real_poles.append(r if abs(angle) < 1e-9 else -r)
            else:
                a1, a2 = -2 * r * math.cos(angle), r * r
                rows.append(_stack_rows(a2, a1, one, one, a1, a2))
        if len(real_poles) == 1:
            p = real_poles[0]
            rows.append(_stack_rows(-p, one, zero, one, -p, zero))
        elif len(real_poles) == 2:
            p, q = real_poles
            a1, a2 = -(p + q), p * q
            rows.append(_stack_rows(a2, a1, one, one, a1, a2))
        return torch.stack(rows, dim=-2)

    return torch.where((k >= 0)[..., None, None], rows_for(1), rows_for(0))


def stretched_allpass_sos(
    coeff: ParamLike,
    warp: ParamLike | None = None,
    stretch: int = DEFAULT_STRETCH,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Warped + stretched first-order sections ``(k + z^-M) / (1 + k z^-M)`` as plain SOS.

    ``k = (a + a_w) / (1 + a a_w)`` (``k = a`` without ``warp``). Each section becomes
    ``ceil(M / 2)`` consecutive rows by factoring its denominator (see the module notes): the
    rows are exact, for scipy and inspection, but for ``M >= 3`` not differentiable at
    ``k = 0``. For gradients use :func:`first_order_allpass_sos` with ``stretch=M`` in
    :func:`phase_response` / :func:`group_delay`, or :func:`allpass_cascade`.

    Args:
        coeff: ``(batch, n)``, ``(n,)`` or scalar ``a`` in (-1, 1).
        warp: optional ``a_w`` in (-1, 1): scalar, ``(batch,)`` or ``(batch, n)``.
        stretch: the delay ``M >= 1`` that replaces each ``z^-1`` (the paper uses 4).
        dtype, device: of the result when no argument is a floating-point tensor.

    Returns:
        ``(batch, n * ceil(M / 2), 6)`` SOS rows, section by section.
    """
    m = _check_stretch(stretch)
    proto = first_order_allpass_sos(coeff, warp, dtype=dtype, device=device)
    rows = _factor_stretched(proto[..., 0], m)  # (batch, n, ceil(M/2), 6)
    return rows.reshape(rows.shape[0], -1, 6)


# --------------------------------------------------------------------------------------------
# cascades
# --------------------------------------------------------------------------------------------


def _cascade_sections(
    sample_rate: float,
    kind: str,
    pole_radius: ParamLike | None,
    freq_hz: ParamLike | None,
    first_order_coeff: ParamLike | None,
    warp: ParamLike | None,
    stretch: int | None,
    like: torch.Tensor,
    batch: int | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Validate a cascade's arguments; return (second-order rows, first-order rows, stretch).

    The first-order rows are the unstretched prototypes ``[k, 1, 0, 1, k, 0]``; they act in
    ``z^-stretch``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sr = check_sample_rate(sample_rate)
    has_second = pole_radius is not None or freq_hz is not None
    if (pole_radius is None) != (freq_hz is None):
        missing = "freq_hz" if freq_hz is None else "pole_radius"
        raise ValueError(f"{missing} is required with second-order sections")
    has_first = first_order_coeff is not None
    rules = {  # kind: (second-order sections, first-order sections, warp); True/False/None
        "first_order": (False, True, False),
        "second_order": (True, False, False),
        "mixed": (True, True, False),
        "warped": (None, None, True),
        "warped_stretched": (None, True, True),
    }
    need_second, need_first, need_warp = rules[kind]
    for need, present, names in (
        (need_second, has_second, "pole_radius and freq_hz"),
        (need_first, has_first, "first_order_coeff"),
        (need_warp, warp is not None, "warp"),
    ):
        if need is True and not present:
            raise ValueError(f"kind={kind!r} requires {names}")
        if need is False and present:
            raise ValueError(f"kind={kind!r} takes no {names}")
    if kind == "warped" and not (has_second or has_first):
        raise ValueError("kind='warped' requires pole_radius and freq_hz or first_order_coeff")
    if stretch is not None and kind != "warped_stretched":
        raise ValueError(f"stretch applies to kind='warped_stretched' only, not {kind!r}")
    m = _check_stretch(DEFAULT_STRETCH if stretch is None else stretch)

    params: dict[str, torch.Tensor] = {}
    if has_second:
        params["pole_radius"] = _section_param(
            pole_radius, "pole_radius", like, 0.0, 1.0, False, True
        )
        params["freq_hz"] = _section_param(freq_hz, "freq_hz", like, 0.0, sr / 2, False, False)
        params["pole_radius"], params["freq_hz"] = _broadcast(
            {k: params[k] for k in ("pole_radius", "freq_hz")}
        )
    if has_first:
        params["first_order_coeff"] = _section_param(
            first_order_coeff, "first_order_coeff", like, -1.0, 1.0, True, True
        )
    n_second = params["pole_radius"].shape[1] if has_second else 0
    n_first = params["first_order_coeff"].shape[1] if has_first else 0
    warp_t = None
    if warp is not None:
        warp_t = _warp_param(warp, like)
        if warp_t.shape[1] not in (1, n_second + n_first):
            raise ValueError(
                f"warp must have 1 or n_second + n_first = {n_second + n_first} sections "
                f"(second-order sections first), got shape {tuple(warp_t.shape)}"
            )
    # Bring every parameter to one batch size (sections are counted separately per group).
    tensors = dict(params)
    if warp_t is not None:
        tensors["warp"] = warp_t
    sizes = {t.shape[0] for t in tensors.values()} - {1}
    if batch is not None and batch != 1:
        sizes.add(batch)
    if len(sizes) > 1:
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
        extra = f" (audio batch {batch})" if batch is not None else ""
        raise ValueError(f"batch sizes do not match: {shapes}{extra}")
    b = max(sizes, default=1)
    tensors = {k: v.expand(b, v.shape[1]) for k, v in tensors.items()}
    if warp_t is not None:
        w = tensors["warp"].expand(b, n_second + n_first)
        warp_second, warp_first = w[:, :n_second], w[:, n_second:]
    else:
        warp_second = warp_first = None

    second = first = None
    if has_second:
        second = second_order_allpass_sos(
            tensors["pole_radius"], tensors["freq_hz"], sr, warp_second
        )
    if has_first:
        first = first_order_allpass_sos(tensors["first_order_coeff"], warp_first)
    return second, first, (m if kind == "warped_stretched" else 1)


def allpass_sos(
    sample_rate: float,
    kind: str = "second_order",
    *,
    pole_radius: ParamLike | None = None,
    freq_hz: ParamLike | None = None,
    first_order_coeff: ParamLike | None = None,
    warp: ParamLike | None = None,
    stretch: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The coefficients of an allpass cascade as plain second-order sections.

    Arguments as :func:`allpass_cascade`, plus ``dtype`` / ``device`` for the result when no
    parameter is a floating-point tensor.

    Returns:
        ``(batch, n_rows, 6)`` in scipy's layout ``[b0, b1, b2, a0, a1, a2]``, ``a0 = 1``:
        the second-order sections first, then the first-order ones (rows with
        ``b2 = a2 = 0``). For ``kind="warped_stretched"`` each first-order section is written
        as ``ceil(stretch / 2)`` rows (see :func:`stretched_allpass_sos` for their
        differentiability). ``scipy.signal.sosfilt`` with these rows equals
        :func:`allpass_cascade`.
    """
    like = _like([pole_radius, freq_hz, first_order_coeff, warp], dtype, device)
    second, first, m = _cascade_sections(
        sample_rate, kind, pole_radius, freq_hz, first_order_coeff, warp, stretch, like, None
    )
    if first is not None and m > 1:
        rows = _factor_stretched(first[..., 0], m)
        first = rows.reshape(rows.shape[0], -1, 6)
    return torch.cat([s for s in (second, first) if s is not None], dim=1)


def _sosfilt_stretched(x: torch.Tensor, sos: torch.Tensor, stretch: int, backend: str):
    """Filter ``x`` through ``sos`` with every ``z^-1`` replaced by ``z^-stretch``.

    ``H(z^M)`` filters each of the M interleaved phases ``x[jM + m]`` independently with
    ``H(z)``; the phases become extra channels of one ``sosfilt`` call.
    """
    if stretch == 1:
        return sosfilt(x, sos, backend=backend)
    B, C, T = x.shape  # batch, channels, samples
    n_frames = -(-T // stretch)
    padded = torch.nn.functional.pad(x, (0, n_frames * stretch - T))
    phases = padded.reshape(B, C, n_frames, stretch).transpose(-1, -2)
    y = sosfilt(phases.reshape(B, C * stretch, n_frames), sos, backend=backend)
    y = y.reshape(B, C, stretch, n_frames).transpose(-1, -2).reshape(B, C, -1)
    return y[..., :T]


def allpass_cascade(
    x: torch.Tensor,
    sample_rate: float,
    kind: str = "second_order",
    *,
    pole_radius: ParamLike | None = None,
    freq_hz: ParamLike | None = None,
    first_order_coeff: ParamLike | None = None,
    warp: ParamLike | None = None,
    stretch: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Filter audio through a cascade of differentiable allpass sections (Bargum et al.).

    Which sections the cascade holds follows ``kind``:

    ============================  ===================  ===================  ==========
    kind                          second order          first order          warp
    ============================  ===================  ===================  ==========
    ``"first_order"``             no                    required             no
    ``"second_order"``            required              no                   no
    ``"mixed"``                   required              required             no
    ``"warped"``                  optional              optional (one of)    required
    ``"warped_stretched"``        optional (warped)     required (stretched) required
    ============================  ===================  ===================  ==========

    In ``"warped_stretched"`` the first-order sections are ``(k + z^-M)/(1 + k z^-M)``,
    ``k = (a + a_w)/(1 + a a_w)``, and any second-order sections are warped but not stretched.

    Args:
        x: ``(batch, channels, samples)`` audio; every channel of an item gets its filter.
        sample_rate: Hz.
        kind: one of ``KINDS`` (table above).
        pole_radius: ``(batch, n_second)`` (or ``(n_second,)`` / scalar, shared by the batch)
            pole radius ``R`` of each second-order section, in [0, 1).
        freq_hz: same shape, centre frequency ``f_c`` (the pole angle) in
            [0, sample_rate / 2] Hz, where the section's phase passes about -pi.
        first_order_coeff: ``(batch, n_first)`` (or ``(n_first,)`` / scalar) coefficient ``a``
            of each first-order section, in (-1, 1).
        warp: warping coefficient ``a_w`` in (-1, 1): scalar, ``(batch,)`` (one per item) or
            ``(batch, n_second + n_first)`` (one per section, second-order sections first).
        stretch: ``M >= 1``, the delay that replaces ``z^-1`` in the stretched first-order
            sections (``kind="warped_stretched"`` only; default 4 as in the paper's code).
        backend: filtering back end of :func:`diffx.functional.filters.sosfilt`.

    Returns:
        ``(batch, channels, samples)`` filtered audio (zero initial state), with the dtype and
        device of ``x``. Differentiable in ``x`` and every parameter, to any order.

    Raises:
        ValueError: naming the argument, for NaN/Inf values, out-of-range parameters
            (``R >= 1``, ``|a| >= 1``, ``|a_w| >= 1``, ``f_c`` outside [0, fs/2]), mismatched
            shapes, or arguments the chosen ``kind`` does not take.
    """
    check_audio(x, "x")
    B = x.shape[0]
    # Sections are designed in float64 whatever the audio's dtype: sosfilt filters with float64
    # coefficients, and designing in float32 would round poles near the unit circle first.
    design_like = x.new_empty(0, dtype=wide_dtype(x.device, "allpass_cascade's designs"))
    second, first, m = _cascade_sections(
        sample_rate, kind, pole_radius, freq_hz, first_order_coeff, warp, stretch, design_like, B
    )
    # All sections are linear and time-invariant, so they commute: the unstretched ones run
    # in one sosfilt call and the stretched ones in one polyphase call.
    plain = [s for s in (second, first if m == 1 else None) if s is not None]
    y = sosfilt(x, torch.cat(plain, dim=1), backend=backend) if plain else x
    if first is not None and m > 1:
        y = _sosfilt_stretched(y, first, m, backend)
    return y


# --------------------------------------------------------------------------------------------
# responses
# --------------------------------------------------------------------------------------------


def _stretch_per_row(stretch: int | Sequence[int], n_rows: int) -> list[int]:
    if isinstance(stretch, int) and not isinstance(stretch, bool):
        return [_check_stretch(stretch)] * n_rows
    values = list(stretch)
    if len(values) != n_rows:
        raise ValueError(f"stretch must be an int or one int per section ({n_rows}), got {stretch}")
    return [_check_stretch(s) for s in values]


def _prepare(sos, freqs_hz, sample_rate, stretch):
    sr = check_sample_rate(sample_rate)
    if not isinstance(sos, torch.Tensor) or not sos.is_floating_point():
        raise ValueError("sos must be a floating-point tensor")
    if sos.dim() < 2 or sos.shape[-1] != 6 or sos.shape[-2] == 0:
        raise ValueError(
            f"sos must be shaped (..., n_sections, 6) in scipy's layout, got {tuple(sos.shape)}"
        )
    check_finite(sos.detach(), "sos")
    if bool((sos[..., 3].detach() == 0).any()):
        raise ValueError("sos has a section with a0 = 0")
    freqs = torch.as_tensor(freqs_hz, dtype=sos.dtype, device=sos.device)
    if freqs.dim() != 1:
        raise ValueError(f"freqs_hz must be shaped (n_freqs,), got {tuple(freqs.shape)}")
    check_finite(freqs, "freqs_hz")
    m = torch.tensor(_stretch_per_row(stretch, sos.shape[-2]), dtype=sos.dtype, device=sos.device)
    # (n_sections, n_freqs): each section sees the frequency scaled by its stretch.
    omega = m[:, None] * (2 * math.pi * freqs / sr)[None, :]
    return sos / sos[..., 3:4], omega, m


def _poly(coeffs: torch.Tensor, omega: torch.Tensor):
    """P(e^{jw}) = sum_k c_k e^{-jkw} and Q = sum_k k c_k e^{-jkw} as real/imaginary parts.

    coeffs ``(..., n, 3)``, omega ``(n, F)`` -> four tensors ``(..., n, F)``.
    """
    k = torch.arange(3, dtype=omega.dtype, device=omega.device)
    phase = k[:, None, None] * omega  # (3, n, F)
    cos, sin = torch.cos(phase), torch.sin(phase)
    c = coeffs.unsqueeze(-1)  # (..., n, 3, 1)
    cos, sin = cos.transpose(0, 1), sin.transpose(0, 1)  # (n, 3, F)
    kc = k[:, None] * c
    re = (c * cos).sum(-2)
    im = -(c * sin).sum(-2)
    q_re = (kc * cos).sum(-2)
    q_im = -(kc * sin).sum(-2)
    return re, im, q_re, q_im


def phase_response(
    sos: torch.Tensor,
    freqs_hz: torch.Tensor | Sequence[float],
    sample_rate: float,
    stretch: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Unwrapped phase of a cascade of allpass sections, in radians.

    An allpass section of order ``n`` (numerator = reversed denominator ``D``) has the phase
    ``-n w - 2 arg D(e^{jw})``. For a stable section ``arg D`` stays inside (-pi, pi) (each
    root factor ``1 - p e^{-jw}``, ``|p| < 1``, has a positive real part), so the sum is the
    continuous (unwrapped) phase, exact at any frequency grid, 0 at 0 Hz, and smooth in the
    coefficients. This is what ``numpy.unwrap(numpy.angle(scipy.signal.sosfreqz(...)))``
    approximates on a dense grid.

    Args:
        sos: ``(..., n_sections, 6)`` allpass sections in scipy's layout (second-order rows
            ``[a2, a1, a0, a0, a1, a2]`` or first-order rows ``[a1, a0, 0, a0, a1, 0]`` up to
            the scale ``a0``), e.g. from :func:`allpass_sos`.
        freqs_hz: ``(n_freqs,)`` frequencies in Hz.
        sample_rate: Hz.
        stretch: an int or one int per section: section ``i`` is evaluated as ``H_i(z^M_i)``
            (pass ``stretch=M`` with the first-order rows of :func:`first_order_allpass_sos` to
            get a stretched section with gradients smooth everywhere).

    Returns:
        ``(..., n_freqs)`` phase in radians (negative: allpass filters lag). Differentiable in
        ``sos``.

    Raises:
        ValueError: if a section is not allpass (``sos`` named), or on malformed input.
    """
    norm, omega, m = _prepare(sos, freqs_hz, sample_rate, stretch)
    b, a = norm[..., :3], norm[..., 3:]
    d = b.detach() - a.detach().flip(-1)  # 0 for a second-order allpass row
    d1 = b.detach()[..., :2] - a.detach()[..., :2].flip(-1)  # 0 for a first-order row
    tol = 1e-5 if sos.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    is_second = d.abs().amax(-1) <= tol
    is_first = (
        (d1.abs().amax(-1) <= tol)
        & (b[..., 2].detach().abs() <= tol)
        & (a[..., 2].detach().abs() <= tol)
    )
    if not bool((is_second | is_first).all()):
        raise ValueError(
            "sos must hold allpass sections (numerator = reversed denominator) for "
            "phase_response; use group_delay or sos_frequency_response for other filters"
        )
    order = torch.where(is_second, 2.0, 1.0).to(sos.dtype)  # (..., n)
    re, im, _, _ = _poly(a, omega)
    arg_d = torch.atan2(im, re)  # (..., n, F)
    return (-order[..., None] * omega - 2 * arg_d).sum(-2)


def group_delay(
    sos: torch.Tensor,
    freqs_hz: torch.Tensor | Sequence[float],
    sample_rate: float,
    stretch: int | Sequence[int] = 1,
) -> torch.Tensor:
    """Group delay ``-d(phase)/d(omega)`` of a cascade of sections, in samples.

    Exact analytic derivative, as ``scipy.signal.group_delay``: for a polynomial
    ``P = sum_k c_k e^{-jkw}`` the delay is ``Re(sum_k k c_k e^{-jkw} / P)``, and a section's
    delay is its numerator's minus its denominator's. Works for any sections whose numerator
    has no zero on the unit circle at the requested frequencies (always true for allpass).

    Args:
        sos: ``(..., n_sections, 6)`` in scipy's layout.
        freqs_hz: ``(n_freqs,)`` frequencies in Hz.
        sample_rate: Hz.
        stretch: an int or one int per section: section ``i`` is ``H_i(z^M_i)``, whose delay
            is ``M_i`` times the prototype's delay at ``M_i w``.

    Returns:
        ``(..., n_freqs)`` group delay in samples (divide by ``sample_rate`` for seconds).
        Differentiable in ``sos``.
    """
    norm, omega, m = _prepare(sos, freqs_hz, sample_rate, stretch)
    n_re, n_im, nq_re, nq_im = _poly(norm[..., :3], omega)
    d_re, d_im, dq_re, dq_im = _poly(norm[..., 3:], omega)
    # Re(Q / P) = (Q_re P_re + Q_im P_im) / |P|^2
    tau_n = (nq_re * n_re + nq_im * n_im) / (n_re**2 + n_im**2)
    tau_d = (dq_re * d_re + dq_im * d_im) / (d_re**2 + d_im**2)
    return (m[:, None] * (tau_n - tau_d)).sum(-2)
