"""Second-order IIR filtering, RBJ biquad design and the parametric equalizer.

All coefficient designs follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad
filter coefficients" (the RBJ cookbook, W3C Audio EQ Cookbook): each is the bilinear transform,
prewarped at the centre/corner frequency, of an analog second-order prototype.
"""

from __future__ import annotations

import math

import torch

from diffx._validation import as_param, check_audio, check_finite, check_sample_rate, wide_dtype
from diffx.kernels.iir import BACKENDS, sos_cascade

FILTER_TYPES = (
    "peaking",
    "low_shelf",
    "high_shelf",
    "low_pass",
    "high_pass",
    "band_pass",
    "notch",
    "allpass",
)

# Q range of the designs: alpha = sin(w0) / (2 Q) grows without bound as Q -> 0, and at
# Q = 1e3 a peak is already 1/1000 of its centre frequency wide (0.02 Hz at 20 Hz).
MIN_Q = 1e-3
MAX_Q = 1e3
# Gain range of the peaking and shelving designs, dB: the linear amplitude 10^(g / 40) of the
# cookbook stays within 1e-3..1e3, where every coefficient is exact to float32's precision.
MAX_ABS_GAIN_DB = 120.0


def _check_sos(sos: torch.Tensor, batch_size: int, name: str = "sos") -> torch.Tensor:
    """Validate ``sos`` and broadcast it to ``(batch, n_sections, 6)``."""
    if not isinstance(sos, torch.Tensor) or not sos.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if sos.dim() == 2:
        sos = sos.unsqueeze(0)
    if sos.dim() != 3 or sos.shape[-1] != 6:
        raise ValueError(
            f"{name} must be shaped (batch, n_sections, 6) in scipy's layout "
            f"[b0, b1, b2, a0, a1, a2], got shape {tuple(sos.shape)}"
        )
    if sos.shape[1] == 0:
        raise ValueError(f"{name} has no sections")
    if sos.shape[0] not in (1, batch_size):
        raise ValueError(
            f"{name} has batch size {sos.shape[0]} but the audio has batch size {batch_size}"
        )
    check_finite(sos.detach(), name)
    return sos.expand(batch_size, -1, -1)


def stability_tolerance(dtype: torch.dtype) -> float:
    """How far outside the stability triangle rounding may put a stable design of ``dtype``.

    1e-12 for float64 and 1e-6 otherwise: a few units in the last place of the coefficients
    (relative rounding 1.1e-16 and 6e-8), so a design with poles on or just inside the unit
    circle is accepted whichever side rounding put them on.
    """
    return 1e-12 if dtype == torch.float64 else 1e-6


def normalize_sos(sos: torch.Tensor, name: str = "sos", tol: float | None = None) -> torch.Tensor:
    """Divide each section by its a0 and check that its poles are stable.

    Args:
        sos: ``(..., n_sections, 6)`` in scipy's layout ``[b0, b1, b2, a0, a1, a2]``.
        name: argument name used in errors.
        tol: how far outside the stability triangle a section may lie, as rounding of its
            design (default: ``stability_tolerance(sos.dtype)``). A pole on the unit circle
            (a band edge) rounds to either side of it.

    Returns:
        ``(..., n_sections, 5)`` coefficients ``[b0, b1, b2, a1, a2]`` with a0 = 1.

    Raises:
        ValueError: if some a0 is zero or some section has a pole outside the unit circle
            (the stability triangle |a2| <= 1, |a1| <= 1 + a2 is violated).
    """
    if tol is None:
        tol = stability_tolerance(sos.dtype)
    a0 = sos[..., 3:4]
    if bool((a0 == 0).any()):
        raise ValueError(f"{name} has a section with a0 = 0")
    norm = torch.cat([sos[..., :3], sos[..., 4:]], dim=-1) / a0
    a1, a2 = norm[..., 3].detach(), norm[..., 4].detach()
    unstable = (a2.abs() > 1 + tol) | (a1.abs() > 1 + a2 + tol)
    if bool(unstable.any()):
        where = tuple(int(i) for i in unstable.nonzero()[0])
        raise ValueError(
            f"{name} has an unstable section at index {where} (pole outside the unit circle)"
        )
    # A section accepted within the tolerance may still have a pole just outside the circle
    # (for a double real pole near z = +-1 a rounding of 1e-7 moves it by sqrt(1e-7)), which
    # grows without bound on long signals. Project it onto the closed triangle; the gradient
    # passes straight through the (rounding-sized) correction.
    a2_in = a2.clamp(-1.0, 1.0)
    a1_in = torch.maximum(torch.minimum(a1, 1.0 + a2_in), -1.0 - a2_in)
    correction = torch.stack([a1_in - a1, a2_in - a2], dim=-1)
    return torch.cat([norm[..., :3], norm[..., 3:] + correction], dim=-1)


def sosfilt(x: torch.Tensor, sos: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Filter audio through a cascade of second-order sections, as ``scipy.signal.sosfilt``.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sos: ``(batch, n_sections, 6)`` (or ``(n_sections, 6)`` / batch 1, shared by every item)
            in scipy's layout ``[b0, b1, b2, a0, a1, a2]``; every channel of an item uses the
            item's filter. Sections must be stable, up to the rounding of ``sos``'s dtype.
        backend: ``"auto"`` (compiled numba loops on CPU, exact parallel scan on CUDA),
            ``"numba"``, ``"scan"`` or ``"torch"`` (slow reference).

    Returns:
        ``(batch, channels, samples)`` filtered audio, zero initial state. Differentiable in
        ``x`` and ``sos`` (any order).

    Raises:
        ValueError: naming the argument, for bad audio or sections; or when ``x`` is on a
            device without float64 (Apple MPS), which the filter states need
            (:func:`diffx._validation.wide_dtype`).
    """
    check_audio(x, "x")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    B, C, T = x.shape  # batch, channels, samples
    sos = _check_sos(sos, B)
    # Stability is judged at the precision the coefficients were given in.
    tol = stability_tolerance(sos.dtype)
    # Every back end keeps coefficients and filter states in float64 whatever the audio's
    # dtype. For float32 audio this removes the coefficient rounding that dominates the error
    # of high-Q and low-frequency sections; the output and stored signals stay float32.
    wide = wide_dtype(x.device, "sosfilt's coefficients and filter states")
    norm = normalize_sos(sos.to(dtype=wide, device=x.device), tol=tol)
    rows_sos = norm.unsqueeze(1).expand(B, C, -1, -1).reshape(B * C, -1, 5)
    y = sos_cascade(x.reshape(B * C, T), rows_sos.contiguous(), backend)
    return y.reshape(B, C, T)


def _design_params(freq_hz, q, gain_db, sr, batch, like, names):
    """Validate one biquad's parameters as ``(batch,)`` float64 tensors, errors naming ``names``.

    ``names`` are the user's argument names for (frequency, Q, gain).
    """
    f_name, q_name, g_name = names
    f = as_param(freq_hz, f_name, batch, like, low=0.0, high=sr / 2)
    if bool(((f <= 0) | (f >= sr / 2)).any()):
        raise ValueError(
            f"{f_name} must lie strictly between 0 and sample_rate/2 = {sr / 2} Hz, got "
            f"{f.detach().min().item():.6g}..{f.detach().max().item():.6g}"
        )
    q = as_param(q, q_name, batch, like, MIN_Q, MAX_Q)
    g = as_param(gain_db, g_name, batch, like, -MAX_ABS_GAIN_DB, MAX_ABS_GAIN_DB)
    # The designs run in float64: near the band edges cos(w0) is within float32 rounding of
    # +-1 and a float32 design can put a pole outside the unit circle; rounding the exact
    # coefficients once, at the end, keeps every section inside (to the dtype's precision).
    wide = wide_dtype(like.device, "biquad designs")
    return f.to(wide), q.to(wide), g.to(wide)


def _rbj(filter_type: str, f, q, g, sr: float) -> torch.Tensor:
    """RBJ-cookbook coefficients ``(batch, 6)`` from ``(batch,)`` frequency, Q and gain."""
    w0 = 2 * math.pi * f / sr
    cos_w0 = torch.cos(w0)
    alpha = torch.sin(w0) / (2 * q)
    one = torch.ones_like(w0)
    if filter_type == "peaking":
        amp = 10 ** (g / 40)
        coeffs = [1 + alpha * amp, -2 * cos_w0, 1 - alpha * amp, 1 + alpha / amp, -2 * cos_w0,
                  1 - alpha / amp]  # fmt: skip
    elif filter_type in ("low_shelf", "high_shelf"):
        amp = 10 ** (g / 40)
        two_sqrt_a_alpha = 2 * torch.sqrt(amp) * alpha
        sign = 1.0 if filter_type == "low_shelf" else -1.0
        ap1, am1 = amp + 1, amp - 1
        coeffs = [
            amp * (ap1 - sign * am1 * cos_w0 + two_sqrt_a_alpha),
            sign * 2 * amp * (am1 - sign * ap1 * cos_w0),
            amp * (ap1 - sign * am1 * cos_w0 - two_sqrt_a_alpha),
            ap1 + sign * am1 * cos_w0 + two_sqrt_a_alpha,
            -sign * 2 * (am1 + sign * ap1 * cos_w0),
            ap1 + sign * am1 * cos_w0 - two_sqrt_a_alpha,
        ]
    else:
        a_row = [1 + alpha, -2 * cos_w0, 1 - alpha]
        b_row = {
            "low_pass": [(1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2],
            "high_pass": [(1 + cos_w0) / 2, -(1 + cos_w0), (1 + cos_w0) / 2],
            "band_pass": [alpha, 0 * one, -alpha],
            "notch": [one, -2 * cos_w0, one],
            "allpass": [1 - alpha, -2 * cos_w0, 1 + alpha],
        }[filter_type]
        coeffs = b_row + a_row
    return torch.stack(coeffs, dim=-1)


def _batch_size(*params, names) -> int:
    """The broadcast batch size of parameters given as scalars or ``(batch,)`` tensors."""
    sizes = {}
    for name, p in zip(names, params):
        if isinstance(p, torch.Tensor) and p.dim() > 0:
            sizes[name] = p.shape[0]
    batch = max(sizes.values(), default=1)
    for name, size in sizes.items():
        if size not in (1, batch):
            others = ", ".join(f"{n}: {s}" for n, s in sizes.items() if s == batch)
            raise ValueError(
                f"{name} has batch size {size}, which does not broadcast against {others}"
            )
    return batch


def _like(params, dtype, device) -> torch.Tensor:
    """An empty tensor of the first floating-point tensor parameter's dtype and device."""
    for p in params:
        if isinstance(p, torch.Tensor) and p.is_floating_point():
            return p.new_empty(0)
    return torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device)


def biquad(
    filter_type: str,
    freq_hz: torch.Tensor | float,
    q: torch.Tensor | float,
    sample_rate: float,
    gain_db: torch.Tensor | float = 0.0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Design RBJ-cookbook biquads, one per batch item.

    Every design inside the ranges below is stable (poles inside the unit circle, on it only
    in the limits): the designs are computed in float64 and rounded once to the result's dtype.

    Args:
        filter_type: one of ``FILTER_TYPES``: ``"peaking"``, ``"low_shelf"``, ``"high_shelf"``,
            ``"low_pass"``, ``"high_pass"``, ``"band_pass"`` (0 dB peak gain), ``"notch"``,
            ``"allpass"``.
        freq_hz: ``(batch,)`` or scalar centre / corner frequency in Hz, in (0, sample_rate/2).
        q: ``(batch,)`` or scalar quality factor in [``MIN_Q``, ``MAX_Q``] = [1e-3, 1e3]. For
            shelves it sets the slope (Q = 1/sqrt(2) is the steepest shelf without overshoot).
        sample_rate: Hz.
        gain_db: ``(batch,)`` or scalar gain in dB within ``+-MAX_ABS_GAIN_DB`` = +-120
            (peaking and shelves; checked but ignored otherwise).
        dtype, device: of the result when no parameter is a floating-point tensor (default
            float32 on the CPU); otherwise the first tensor parameter's.

    Returns:
        ``(batch, 6)`` coefficients ``[b0, b1, b2, a0, a1, a2]`` (a0 not normalized), where
        batch is the broadcast size of the parameters (1 if all are scalars). Differentiable in
        ``freq_hz``, ``q`` and ``gain_db``.

    Raises:
        ValueError: naming the argument, for a parameter out of range, non-finite, or of a
            batch size that does not broadcast.
    """
    if filter_type not in FILTER_TYPES:
        raise ValueError(f"filter_type must be one of {FILTER_TYPES}, got {filter_type!r}")
    sr = check_sample_rate(sample_rate)
    names = ("freq_hz", "q", "gain_db")
    like = _like((freq_hz, q, gain_db), dtype, device)
    batch = _batch_size(freq_hz, q, gain_db, names=names)
    f, q, g = _design_params(freq_hz, q, gain_db, sr, batch, like, names)
    return _round_stable(_rbj(filter_type, f, q, g, sr), like.dtype)


def _round_stable(sos: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round float64 sections ``(..., 6)`` to ``dtype`` with their poles kept in the circle.

    Rounding the denominator of a section whose poles lie near z = +-1 (a corner far below
    or near Nyquist) can move a pole outside the unit circle. The rounded ``a1`` and ``a2``
    are moved by whole ulps until ``a0 + a1 + a2 >= 0``, ``a0 - a1 + a2 >= 0`` and
    ``|a2| <= a0`` hold exactly (the stability triangle, evaluated in float64, where sums
    of three float32 values of this size are exact). The gradient passes straight through.
    """
    rounded = sos.to(dtype)
    if dtype == torch.float64:
        return rounded
    fixed = rounded.detach().clone()
    wide = wide_dtype(fixed.device, "biquad stability checks")
    up = torch.tensor(math.inf, dtype=dtype)
    for _ in range(64):  # a few ulps at most; bounded so that it cannot spin
        a0, a1, a2 = (fixed[..., i].to(wide) for i in (3, 4, 5))
        a2_high, a2_low = a2 > a0, a2 < -a0
        fixed[..., 5] = torch.where(a2_high, torch.nextafter(fixed[..., 5], -up), fixed[..., 5])
        fixed[..., 5] = torch.where(a2_low, torch.nextafter(fixed[..., 5], up), fixed[..., 5])
        a2 = fixed[..., 5].to(wide)
        low_edge, high_edge = a0 + a1 + a2 < 0, a0 - a1 + a2 < 0
        fixed[..., 4] = torch.where(low_edge, torch.nextafter(fixed[..., 4], up), fixed[..., 4])
        fixed[..., 4] = torch.where(high_edge, torch.nextafter(fixed[..., 4], -up), fixed[..., 4])
        if not bool((a2_high | a2_low | low_edge | high_edge).any()):
            break
    return rounded + (fixed - rounded.detach())


def parametric_eq_sos(
    sample_rate: float,
    low_shelf_freq_hz: torch.Tensor | float,
    low_shelf_gain_db: torch.Tensor | float,
    band_freqs_hz: torch.Tensor,
    band_gains_db: torch.Tensor,
    band_qs: torch.Tensor,
    high_shelf_freq_hz: torch.Tensor | float,
    high_shelf_gain_db: torch.Tensor | float,
    low_shelf_q: torch.Tensor | float = 0.707,
    high_shelf_q: torch.Tensor | float = 0.707,
) -> torch.Tensor:
    """Coefficients of the parametric EQ: low shelf, N peaking bands, high shelf.

    Ranges are those of :func:`biquad`: frequencies in (0, sample_rate/2) Hz, Q in [1e-3, 1e3],
    gains within +-120 dB. Every parameter broadcasts against the others: a Python float, a
    0-d tensor, a ``(1,)`` / ``(1, n_bands)`` or ``(n_bands,)`` tensor is shared by the batch.

    Args:
        sample_rate: Hz.
        low_shelf_freq_hz, low_shelf_gain_db, low_shelf_q: ``(batch,)`` or scalar, Hz / dB / Q.
        band_freqs_hz, band_gains_db, band_qs: ``(batch, n_bands)`` or ``(n_bands,)``, Hz / dB / Q.
        high_shelf_freq_hz, high_shelf_gain_db, high_shelf_q: ``(batch,)`` or scalar.

    Returns:
        ``(batch, n_bands + 2, 6)`` sections in scipy's layout, low shelf first; the dtype of
        the first floating-point tensor parameter (float32 if none).

    Raises:
        ValueError: naming the argument, for a parameter out of range, non-finite, of the
            wrong shape or of a batch size that does not broadcast.
    """
    sr = check_sample_rate(sample_rate)
    shelves = {
        "low_shelf_freq_hz": low_shelf_freq_hz, "low_shelf_q": low_shelf_q,
        "low_shelf_gain_db": low_shelf_gain_db, "high_shelf_freq_hz": high_shelf_freq_hz,
        "high_shelf_q": high_shelf_q, "high_shelf_gain_db": high_shelf_gain_db,
    }  # fmt: skip
    like = _like((band_freqs_hz, band_gains_db, band_qs, *shelves.values()), None, None)
    bands = {}
    for name, t in (("band_freqs_hz", band_freqs_hz), ("band_gains_db", band_gains_db),
                    ("band_qs", band_qs)):  # fmt: skip
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.dim() != 2:
            raise ValueError(
                f"{name} must be shaped (batch, n_bands) or (n_bands,), got {tuple(t.shape)}"
            )
        bands[name] = t
    n_bands = bands["band_freqs_hz"].shape[1]
    for name in ("band_gains_db", "band_qs"):
        if bands[name].shape[1] != n_bands:
            raise ValueError(
                f"{name} has {bands[name].shape[1]} bands but band_freqs_hz has {n_bands}"
            )
    batch = _batch_size(
        *(t[:, 0] if n_bands else t[:, :1].sum(1) for t in bands.values()), *shelves.values(),
        names=(*bands, *shelves),
    )
    band_names = ("band_freqs_hz", "band_qs", "band_gains_db")
    sections = [_rbj("low_shelf", *_design_params(
        low_shelf_freq_hz, low_shelf_q, low_shelf_gain_db, sr, batch, like,
        ("low_shelf_freq_hz", "low_shelf_q", "low_shelf_gain_db")), sr)]  # fmt: skip
    for i in range(n_bands):
        f, q, g = (bands[name][:, i] for name in band_names)
        sections.append(_rbj("peaking", *_design_params(f, q, g, sr, batch, like, band_names), sr))
    sections.append(_rbj("high_shelf", *_design_params(
        high_shelf_freq_hz, high_shelf_q, high_shelf_gain_db, sr, batch, like,
        ("high_shelf_freq_hz", "high_shelf_q", "high_shelf_gain_db")), sr))  # fmt: skip
    return _round_stable(torch.stack(sections, dim=1), like.dtype)


def parametric_eq(
    x: torch.Tensor,
    sample_rate: float,
    low_shelf_freq_hz: torch.Tensor | float,
    low_shelf_gain_db: torch.Tensor | float,
    band_freqs_hz: torch.Tensor,
    band_gains_db: torch.Tensor,
    band_qs: torch.Tensor,
    high_shelf_freq_hz: torch.Tensor | float,
    high_shelf_gain_db: torch.Tensor | float,
    low_shelf_q: torch.Tensor | float = 0.707,
    high_shelf_q: torch.Tensor | float = 0.707,
    backend: str = "auto",
) -> torch.Tensor:
    """Parametric equalizer: low shelf, N peaking bands and high shelf, per batch item.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        Other arguments: as :func:`parametric_eq_sos` (ranges and broadcasting there); every
            parameter may differ per item, or be shared by the batch.
        backend: filtering back end, see :func:`sosfilt`.

    Returns:
        ``(batch, channels, samples)`` equalized audio; exact IIR filtering (not a
        frequency-sampled approximation), differentiable in audio and every parameter.
    """
    check_audio(x, "x")
    params = (low_shelf_freq_hz, low_shelf_gain_db, band_freqs_hz, band_gains_db, band_qs,
              high_shelf_freq_hz, high_shelf_gain_db, low_shelf_q, high_shelf_q)  # fmt: skip
    # Design in float64 too, so float32 parameters give exact float64 coefficients for the
    # float64 recursion (see sosfilt); gradients flow back through the cast.
    params = tuple(
        p.to(wide_dtype(p.device, "parametric_eq's designs")) if isinstance(p, torch.Tensor) else p
        for p in params
    )
    if not any(isinstance(p, torch.Tensor) and p.is_floating_point() for p in params):
        params = (*params[:2], torch.as_tensor(params[2], dtype=torch.float64), *params[3:])
    sos = parametric_eq_sos(sample_rate, *params)
    if sos.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"the EQ parameters have batch size {sos.shape[0]} but x has batch size "
            f"{x.shape[0]}"
        )
    return sosfilt(x, sos, backend=backend)


def sos_frequency_response(
    sos: torch.Tensor, freqs_hz: torch.Tensor, sample_rate: float
) -> torch.Tensor:
    """Complex frequency response of a cascade, as ``scipy.signal.sosfreqz`` at given freqs.

    Args:
        sos: ``(..., n_sections, 6)`` in scipy's layout.
        freqs_hz: ``(n_freqs,)`` frequencies in Hz.
        sample_rate: Hz.

    Returns:
        ``(..., n_freqs)`` complex response. Differentiable in ``sos``.
    """
    sr = check_sample_rate(sample_rate)
    w = 2 * math.pi * freqs_hz.to(sos.dtype) / sr
    z1 = torch.polar(torch.ones_like(w), -w)  # z^-1 on the unit circle
    powers = torch.stack([torch.ones_like(z1), z1, z1 * z1], dim=0)  # (3, F)
    # Broadcast products, not einsum: for these tiny complex products the BLAS call costs more
    # than the arithmetic, and it runs on torch's thread pool, which on an oversubscribed
    # machine was once seen to wait milliseconds per call for a core.
    num = (sos[..., :3, None].to(powers.dtype) * powers).sum(dim=-2)
    den = (sos[..., 3:, None].to(powers.dtype) * powers).sum(dim=-2)
    return (num / den).prod(dim=-2)
