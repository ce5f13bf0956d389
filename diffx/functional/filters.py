"""Second-order IIR filtering, RBJ biquad design and the parametric equalizer.

All coefficient designs follow R. Bristow-Johnson, "Cookbook formulae for audio EQ biquad
filter coefficients" (the RBJ cookbook, W3C Audio EQ Cookbook): each is the bilinear transform,
prewarped at the centre/corner frequency, of an analog second-order prototype.
"""

from __future__ import annotations

import math

import torch

from diffx._validation import as_param, check_audio, check_finite, check_sample_rate
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

# Smallest Q accepted by the designs: alpha = sin(w0) / (2 Q) grows without bound as Q -> 0.
MIN_Q = 1e-3


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


def normalize_sos(sos: torch.Tensor, name: str = "sos") -> torch.Tensor:
    """Divide each section by its a0 and check that its poles are stable.

    Args:
        sos: ``(..., n_sections, 6)`` in scipy's layout ``[b0, b1, b2, a0, a1, a2]``.
        name: argument name used in errors.

    Returns:
        ``(..., n_sections, 5)`` coefficients ``[b0, b1, b2, a1, a2]`` with a0 = 1.

    Raises:
        ValueError: if some a0 is zero or some section has a pole outside the unit circle
            (the stability triangle |a2| <= 1, |a1| <= 1 + a2 is violated).
    """
    a0 = sos[..., 3:4]
    if bool((a0 == 0).any()):
        raise ValueError(f"{name} has a section with a0 = 0")
    norm = torch.cat([sos[..., :3], sos[..., 4:]], dim=-1) / a0
    a1, a2 = norm[..., 3].detach(), norm[..., 4].detach()
    # A tiny tolerance admits poles on the unit circle up to rounding of the design formulas.
    tol = 1e-6 if norm.dtype == torch.float32 else 1e-12
    unstable = (a2.abs() > 1 + tol) | (a1.abs() > 1 + a2 + tol)
    if bool(unstable.any()):
        where = tuple(int(i) for i in unstable.nonzero()[0])
        raise ValueError(
            f"{name} has an unstable section at index {where} (pole outside the unit circle)"
        )
    return norm


def sosfilt(x: torch.Tensor, sos: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Filter audio through a cascade of second-order sections, as ``scipy.signal.sosfilt``.

    Args:
        x: ``(batch, channels, samples)`` audio.
        sos: ``(batch, n_sections, 6)`` (or ``(n_sections, 6)`` / batch 1, shared by every item)
            in scipy's layout ``[b0, b1, b2, a0, a1, a2]``; every channel of an item uses the
            item's filter. Sections must be stable.
        backend: ``"auto"`` (compiled numba loops on CPU, exact parallel scan on CUDA),
            ``"numba"``, ``"scan"`` or ``"torch"`` (slow reference).

    Returns:
        ``(batch, channels, samples)`` filtered audio, zero initial state. Differentiable in
        ``x`` and ``sos`` (any order).
    """
    check_audio(x, "x")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    B, C, T = x.shape  # batch, channels, samples
    # Every back end keeps coefficients and filter states in float64 whatever the audio's
    # dtype. For float32 audio this removes the coefficient rounding that dominates the error
    # of high-Q and low-frequency sections; the output and stored signals stay float32.
    sos = _check_sos(sos, B).to(dtype=torch.float64, device=x.device)
    norm = normalize_sos(sos)
    rows_sos = norm.unsqueeze(1).expand(B, C, -1, -1).reshape(B * C, -1, 5)
    y = sos_cascade(x.reshape(B * C, T), rows_sos.contiguous(), backend)
    return y.reshape(B, C, T)


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

    Args:
        filter_type: one of ``FILTER_TYPES``: ``"peaking"``, ``"low_shelf"``, ``"high_shelf"``,
            ``"low_pass"``, ``"high_pass"``, ``"band_pass"`` (0 dB peak gain), ``"notch"``,
            ``"allpass"``.
        freq_hz: ``(batch,)`` or scalar centre / corner frequency in Hz, in (0, sample_rate/2).
        q: ``(batch,)`` or scalar quality factor, >= ``MIN_Q``. For shelves it sets the slope
            (Q = 1/sqrt(2) is the steepest shelf without overshoot).
        sample_rate: Hz.
        gain_db: ``(batch,)`` or scalar gain in dB (peaking and shelves; ignored otherwise).
        dtype, device: of the result when no parameter is a floating-point tensor (default
            float32 on the CPU); otherwise the first tensor parameter's.

    Returns:
        ``(batch, 6)`` coefficients ``[b0, b1, b2, a0, a1, a2]`` (a0 not normalized), where
        batch is the broadcast size of the parameters (1 if all are scalars). Differentiable in
        ``freq_hz``, ``q`` and ``gain_db``.
    """
    if filter_type not in FILTER_TYPES:
        raise ValueError(f"filter_type must be one of {FILTER_TYPES}, got {filter_type!r}")
    sr = check_sample_rate(sample_rate)
    like = next(
        (p for p in (freq_hz, q, gain_db) if isinstance(p, torch.Tensor) and p.is_floating_point()),
        torch.empty(0, dtype=dtype or torch.get_default_dtype(), device=device),
    )
    sizes = [p.numel() for p in (freq_hz, q, gain_db) if isinstance(p, torch.Tensor) and p.dim()]
    batch = max(sizes, default=1)
    f = as_param(freq_hz, "freq_hz", batch, like, low=0.0, high=sr / 2)
    if bool(((f <= 0) | (f >= sr / 2)).any()):
        raise ValueError(
            f"freq_hz must lie strictly between 0 and sample_rate/2 = {sr / 2} Hz, got "
            f"{f.detach().min().item():.6g}..{f.detach().max().item():.6g}"
        )
    q = as_param(q, "q", batch, like, low=MIN_Q)
    g = as_param(gain_db, "gain_db", batch, like)

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

    Args:
        sample_rate: Hz.
        low_shelf_freq_hz, low_shelf_gain_db, low_shelf_q: ``(batch,)`` or scalar, Hz / dB / Q.
        band_freqs_hz, band_gains_db, band_qs: ``(batch, n_bands)`` or ``(n_bands,)``, Hz / dB / Q.
        high_shelf_freq_hz, high_shelf_gain_db, high_shelf_q: ``(batch,)`` or scalar.

    Returns:
        ``(batch, n_bands + 2, 6)`` sections in scipy's layout, low shelf first.
    """
    band_freqs_hz, band_gains_db, band_qs = (
        t.unsqueeze(0) if t.dim() == 1 else t for t in (band_freqs_hz, band_gains_db, band_qs)
    )
    if not (band_freqs_hz.dim() == band_gains_db.dim() == band_qs.dim() == 2):
        raise ValueError("band_freqs_hz, band_gains_db and band_qs must be (batch, n_bands)")
    batch = max(band_freqs_hz.shape[0], band_gains_db.shape[0], band_qs.shape[0])
    n_bands = band_freqs_hz.shape[1]
    for name, t in (("band_gains_db", band_gains_db), ("band_qs", band_qs)):
        if t.shape[1] != n_bands:
            raise ValueError(f"{name} has {t.shape[1]} bands but band_freqs_hz has {n_bands}")
    bands = [
        biquad("peaking", band_freqs_hz[:, i].expand(batch), band_qs[:, i].expand(batch),
               sample_rate, band_gains_db[:, i].expand(batch))
        for i in range(n_bands)
    ]  # fmt: skip
    kw = {"dtype": band_freqs_hz.dtype, "device": band_freqs_hz.device}
    low = biquad("low_shelf", low_shelf_freq_hz, low_shelf_q, sample_rate, low_shelf_gain_db, **kw)
    high = biquad(
        "high_shelf", high_shelf_freq_hz, high_shelf_q, sample_rate, high_shelf_gain_db, **kw
    )
    sections = [low.expand(batch, 6)] + bands + [high.expand(batch, 6)]
    return torch.stack(sections, dim=1)


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
        Other arguments: as :func:`parametric_eq_sos`; every parameter may differ per item.
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
    params = tuple(p.double() if isinstance(p, torch.Tensor) else p for p in params)
    sos = parametric_eq_sos(sample_rate, *params)
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
    num = torch.einsum("...k,kf->...f", sos[..., :3].to(powers.dtype), powers)
    den = torch.einsum("...k,kf->...f", sos[..., 3:].to(powers.dtype), powers)
    return (num / den).prod(dim=-2)
