"""Feedback delay (echo) and feedback delay network (FDN) reverb, as exact recursions.

Both run on :func:`diffx.kernels.delay_network.delay_network`: delay lines whose outputs pass
through loop filters (second-order sections) and a feedback matrix back into the lines. The
echo is a one-line network per channel with a fractional delay; the reverb an ``N``-line
network with an orthogonal matrix and absorption filters set from an RT60 per band (J.-M. Jot
and A. Chaigne, "Digital delay networks for designing artificial reverberators", AES 90th
Convention, 1991: line ``i`` of ``m_i`` samples loses ``60 m_i / (fs RT60)`` dB per pass).

Why the time domain. The frequency-sampled alternative (DiffVox, FLAMO: ``c^T (D(z)^-1 -
A)^-1 b`` evaluated on FFT bins) returns the impulse response circularly aliased to the FFT
length, so it is exact only when the FFT covers the signal plus the whole audible tail; the
recursion is exact for any RT60 and length, with memory linear in the length. It was also
faster where measured (``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python
benchmarks/fdn_domains.py``, nothing else running, 2026-12-08): forward + backward on 2 x 65536
samples at 48 kHz, median of 7 calls, took 54 ms against 347 ms for an 8-line FDN (frequency
sampling on 2 x 65536 bins, wrong there by 1.3e-3 of the peak), and 9.1 ms against 23.9 ms for
an echo (wrong by 1.9e-2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from diffx._validation import as_param, check_audio, check_finite, check_sample_rate, wide_dtype
from diffx.functional.filters import biquad
from diffx.kernels.delay_network import BACKENDS, delay_network

# Echo delay range (ms). At least one sample is needed in a feedback loop (the line is read
# before it is written); 1 ms is one sample at 1 kHz and more at every audio rate. Ten seconds
# is beyond any musical echo; the kernel's memory grows with the signal, not the delay.
MIN_ECHO_DELAY_MS = 1.0
MAX_ECHO_DELAY_MS = 10_000.0
# Q of the loop filters: Butterworth, whose magnitude never exceeds 1, so |feedback| < 1 keeps
# the loop stable for every cutoff.
BUTTERWORTH_Q = 1.0 / math.sqrt(2.0)

# FDN ranges. Per pass a line of m samples loses 60 m / (fs RT60) dB; with lines of at most
# MAX_LINE_DELAY_S and RT60 of at least MIN_FDN_RT60_S that is at most 120 dB, the range of
# the shelving designs (filters.MAX_ABS_GAIN_DB).
MIN_FDN_RT60_S = 0.05
MAX_FDN_RT60_S = 100.0
MAX_LINE_DELAY_S = 0.1
MAX_BANDS = 3
MIXING = ("householder", "hadamard")
# Default line lengths: log-spaced between these (ms), each rounded up to a distinct prime so
# the lengths are mutually prime (no common period, modes spread evenly). With 8 lines of
# 15-45 ms, a short RT60 (0.3-0.4 s) lost 9 dB per pass on the longest line and its first 35 dB
# of decay fell inside the sparse build-up, where the Schroeder fit read 6-22 % long (a
# frequency-independent design read 6 % too: the measurement, not the filters); with 10-30 ms
# every band of the tested designs measured within 1.3 % (tests/functional/test_delay.py).
DEFAULT_LINE_RANGE_MS = (10.0, 30.0)
# Orthogonality a given mixing matrix must have (max |A^T A - I|): float32 rounding of an
# orthogonal matrix is ~1e-7; the loop gain then exceeds the absorption by at most ~1e-5.
ORTHOGONALITY_TOL = 1e-5
# The two shelf crossovers of a 3-band design must be at least an octave apart. Measured over
# every combination of RT60 in {0.05, 0.07, 0.2, 1, 10, 100} s per band, lines up to 0.1 s and
# crossover ratios 2, 4 and 8 (tests/functional/test_delay.py), the loop gain of RBJ shelves
# (Q = 1/sqrt(2)) never exceeds the largest band gain by more than 1e-8 dB (rounding), so
# the loop stays stable; closer crossovers are not covered by that check.
MIN_CROSSOVER_RATIO = 2.0


def _rows(p: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch,) -> (batch * channels,) with each item's value repeated per channel."""
    return p[:, None].expand(-1, channels).reshape(-1)


def _filter_freq(value, name, batch, like, sr):
    f = as_param(value, name, batch, like, 0.0, sr / 2)
    if bool(((f <= 0) | (f >= sr / 2)).any()):
        raise ValueError(
            f"{name} must lie strictly between 0 and sample_rate/2 = {sr / 2} Hz, got "
            f"{float(f.detach().min()):.6g}..{float(f.detach().max()):.6g}"
        )
    return f


def _normalized(sos6: torch.Tensor) -> torch.Tensor:
    """(..., 6) scipy layout -> (..., 5) ``[b0, b1, b2, a1, a2]`` with a0 = 1."""
    a0 = sos6[..., 3:4]
    return torch.cat([sos6[..., :3], sos6[..., 4:]], dim=-1) / a0


def feedback_delay(
    x: torch.Tensor,
    sample_rate: float,
    delay_ms: torch.Tensor | float,
    feedback: torch.Tensor | float,
    mix: torch.Tensor | float = 0.5,
    lowpass_hz: torch.Tensor | float | None = None,
    highpass_hz: torch.Tensor | float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Echo: a delay line whose output is filtered and fed back into it.

    Per channel, with ``d = delay_ms * sample_rate / 1000`` samples and ``H`` the loop filter,

        v[n] = x[n] + feedback * w[n],   w = H(s),   s[n] = v[n - d]   (v delayed by d)
        y[n] = (1 - mix) x[n] + mix w[n]

    so the k-th echo (k = 1, 2, ...) arrives ``k d`` samples late with amplitude
    ``feedback^(k-1)``, filtered k times by ``H``. The recursion is exact (no truncated
    impulse response). A fractional ``d`` is read by linear interpolation between the two
    nearest samples: its gain never exceeds 1 at any frequency, so ``|feedback| < 1`` keeps
    the loop stable for every delay, and the output and its gradient are continuous in
    ``delay_ms`` (an allpass interpolator would keep the magnitude flat, but puts the delay
    into a recursive coefficient and rings when the delay changes; Lagrange interpolators of
    higher order exceed unity gain near Nyquist, which a loop accumulates). The price is a
    gentle low-pass at fractional delays (at most ``cos(pi f / fs)`` at ``f``, for half a
    sample), which a loop with a damping filter hides.

    Args:
        x: ``(batch, channels, samples)`` audio; every channel is delayed on its own.
        sample_rate: Hz.
        delay_ms: ``(batch,)`` or scalar delay in ms, in [``MIN_ECHO_DELAY_MS``,
            ``MAX_ECHO_DELAY_MS``] = [1, 10000] and at least one sample. Differentiable (through
            the fractional part).
        feedback: ``(batch,)`` or scalar feedback gain, strictly inside (-1, 1).
        mix: ``(batch,)`` or scalar wet fraction in [0, 1]; 0 returns ``x``.
        lowpass_hz: ``(batch,)`` or scalar cutoff of a Butterworth low-pass in the loop
            (damping: each echo duller than the last), in (0, sample_rate/2); ``None``: none.
        highpass_hz: the same for a Butterworth high-pass (each echo thinner); ``None``: none.
        backend: ``"auto"``, ``"numba"`` (CPU) or ``"blocks"`` (tensor ops; CUDA), see
            :mod:`diffx.kernels.delay_network`.

    Returns:
        ``(batch, channels, samples)`` audio, zero initial state; the echoes past the end are
        dropped. Differentiable in ``x`` and every parameter (any order).

    Raises:
        ValueError: naming the argument, for bad audio or a parameter out of range.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    B, C, T = x.shape  # batch, channels, samples
    wide = wide_dtype(x.device, "feedback_delay's filter designs")
    like = x.new_empty(0, dtype=wide)
    delay = as_param(delay_ms, "delay_ms", B, like, MIN_ECHO_DELAY_MS, MAX_ECHO_DELAY_MS)
    samples = delay * (sr / 1000.0)
    if bool((samples.detach() < 1.0).any()):
        raise ValueError(
            f"delay_ms must be at least one sample (1000 / sample_rate = {1000.0 / sr:.6g} ms), "
            f"got {float(delay.detach().min()):.6g}"
        )
    g = as_param(feedback, "feedback", B, like, -1.0, 1.0)
    if bool((g.detach().abs() >= 1.0).any()):
        raise ValueError("feedback must lie strictly inside (-1, 1) for the echoes to decay")
    m = as_param(mix, "mix", B, x, 0.0, 1.0)
    sections = []
    for value, name, kind in ((lowpass_hz, "lowpass_hz", "low_pass"),
                              (highpass_hz, "highpass_hz", "high_pass")):  # fmt: skip
        if value is not None:
            f = _filter_freq(value, name, B, like, sr)
            sections.append(_normalized(biquad(kind, f, BUTTERWORTH_Q, sr)))
    if not sections:
        sections.append(like.new_tensor([1.0, 0.0, 0.0, 0.0, 0.0]).expand(B, 5))
    sos = torch.stack(sections, dim=1)  # (B, K, 5)
    whole = torch.floor(samples.detach())
    frac = samples - whole
    R = B * C
    one = x.new_ones(R, 1)
    wet = delay_network(
        x.reshape(R, T),
        one,
        one[:, None, :],
        _rows(g, C)[:, None, None],
        _rows(whole.to(torch.int64), C)[:, None],
        _rows(frac, C)[:, None],
        sos[:, None].expand(B, C, -1, -1).reshape(R, 1, -1, 5),
        backend,
    ).reshape(B, C, T)
    return (1.0 - m)[:, None, None] * x + m[:, None, None] * wet


# --------------------------------------------------------------------------------------------
# FDN reverb
# --------------------------------------------------------------------------------------------


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, int(math.isqrt(n)) + 1))


def fdn_delays(
    n_lines: int,
    sample_rate: float,
    min_ms: float = DEFAULT_LINE_RANGE_MS[0],
    max_ms: float = DEFAULT_LINE_RANGE_MS[1],
) -> list[int]:
    """Mutually prime delay-line lengths (samples) for an FDN.

    Targets log-spaced from ``min_ms`` to ``max_ms``, each moved up to the next prime not yet
    taken, so the lengths are distinct primes (pairwise coprime: the lines share no period).

    Args:
        n_lines: number of lines, >= 1.
        sample_rate: Hz.
        min_ms, max_ms: range of the targets in ms, ``0 < min_ms <= max_ms``; the longest
            line must stay within ``MAX_LINE_DELAY_S`` (100 ms).

    Returns:
        ``n_lines`` increasing prime lengths in samples.
    """
    sr = check_sample_rate(sample_rate)
    if isinstance(n_lines, bool) or not isinstance(n_lines, int) or n_lines < 1:
        raise ValueError(f"n_lines must be a positive integer, got {n_lines!r}")
    if not (0 < min_ms <= max_ms):
        raise ValueError(f"need 0 < min_ms <= max_ms, got {min_ms}, {max_ms}")
    out: list[int] = []
    for i in range(n_lines):
        t = min_ms * (max_ms / min_ms) ** (i / max(n_lines - 1, 1)) * sr / 1000.0
        n = max(2, math.ceil(t))
        while not _is_prime(n) or n in out or (out and n <= out[-1]):
            n += 1
        out.append(n)
    if out[-1] > MAX_LINE_DELAY_S * sr:
        raise ValueError(
            f"max_ms = {max_ms} gives a line of {out[-1]} samples, above MAX_LINE_DELAY_S = "
            f"{MAX_LINE_DELAY_S} s at {sr} Hz"
        )
    return out


def mixing_matrix(kind: str, n_lines: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """An orthogonal ``(n_lines, n_lines)`` feedback matrix.

    ``"householder"``: ``I - (2 / N) 1 1^T`` (a reflection; every line feeds every other).
    ``"hadamard"``: Sylvester's Hadamard matrix over ``sqrt(N)``; ``N`` a power of two.
    """
    if kind == "householder":
        ones = torch.ones(n_lines, 1, dtype=dtype, device=device)
        return torch.eye(n_lines, dtype=dtype, device=device) - (2.0 / n_lines) * ones @ ones.T
    if kind == "hadamard":
        if n_lines & (n_lines - 1):
            raise ValueError(f"mixing='hadamard' needs n_lines a power of two, got {n_lines}")
        h = torch.ones(1, 1, dtype=dtype, device=device)
        while h.shape[0] < n_lines:
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        return h / math.sqrt(n_lines)
    raise ValueError(f"mixing must be one of {MIXING} or an orthogonal matrix, got {kind!r}")


def default_crossovers_hz(n_bands: int, sample_rate: float) -> list[float]:
    """Shelf crossovers of the absorption filters: none, ``[1000]`` or ``[250, 4000]`` Hz,
    lowered at low sample rates to ``sample_rate / 4`` and 1/16 of it."""
    sr = check_sample_rate(sample_rate)
    high = min(4000.0, sr / 4.0)
    if n_bands == 1:
        return []
    if n_bands == 2:
        return [min(1000.0, high)]
    return [min(250.0, high / 16.0), high]


def _rt60_bands(rt60_s, batch, like) -> torch.Tensor:
    """rt60_s as (batch, bands), checked."""
    name = "rt60_s"
    if isinstance(rt60_s, torch.Tensor) and rt60_s.dim() == 2:
        t = rt60_s.to(dtype=like.dtype, device=like.device)
        if t.shape[0] not in (1, batch) or not 1 <= t.shape[1] <= MAX_BANDS:
            raise ValueError(
                f"{name} must be shaped (batch, bands) with 1..{MAX_BANDS} bands, (batch,) or "
                f"scalar, got shape {tuple(t.shape)}"
            )
        check_finite(t.detach(), name)
        t = t.expand(batch, -1)
    else:
        t = as_param(rt60_s, name, batch, like)[:, None]
    lo, hi = MIN_FDN_RT60_S, MAX_FDN_RT60_S
    if bool(((t < lo) | (t > hi)).any()):
        raise ValueError(
            f"{name} must lie in [{lo}, {hi}] s, got {float(t.detach().min()):.6g}.."
            f"{float(t.detach().max()):.6g}"
        )
    return t


def fdn_absorption_sos(
    delays: Sequence[int],
    rt60_s: torch.Tensor,
    sample_rate: float,
    crossovers_hz: Sequence[float] | None = None,
) -> torch.Tensor:
    """Absorption filters of an FDN's lines from an RT60 per band (Jot & Chaigne 1991).

    Line ``i`` of ``m_i`` samples gets the gain ``G_ik = -60 m_i / (fs RT60_k)`` dB in band
    ``k``: one band, a broadband gain; two, a broadband gain ``G_i0`` and an RBJ high shelf
    (Q = 1/sqrt(2)) of ``G_i1 - G_i0`` at the crossover; three, the middle band's gain and a
    low and a high shelf of ``G_i0 - G_i1`` and ``G_i2 - G_i1`` at the two crossovers. A shelf
    reaches its gain exactly at DC or Nyquist and within a fraction of a dB an octave or two
    from its crossover, so the decay of each band is the design's away from the crossovers.

    Args:
        delays: the ``N`` line lengths in samples.
        rt60_s: ``(batch, bands)`` RT60 in seconds per band, low to high, 1 to 3 bands.
        sample_rate: Hz.
        crossovers_hz: ``bands - 1`` increasing crossovers in (0, sample_rate/2); the
            default is :func:`default_crossovers_hz`.

    Returns:
        ``(batch, N, K, 5)`` sections ``[b0, b1, b2, a1, a2]`` (a0 = 1) of ``rt60_s``'s dtype,
        the broadband gain folded into the first section's numerator: ``K = 1`` (the gain) for
        one band, 1 (gain x high shelf) for two, 2 (gain x low shelf, high shelf) for three.
    """
    sr = check_sample_rate(sample_rate)
    n_bands = rt60_s.shape[1]
    if crossovers_hz is None:
        crossovers_hz = default_crossovers_hz(n_bands, sr)
    crossovers_hz = [float(f) for f in crossovers_hz]
    if len(crossovers_hz) != n_bands - 1:
        raise ValueError(
            f"crossovers_hz needs {n_bands - 1} frequencies for {n_bands} bands, got "
            f"{crossovers_hz}"
        )
    if any(not 0 < f < sr / 2 for f in crossovers_hz):
        raise ValueError(f"crossovers_hz must lie in (0, {sr / 2}) Hz, got {crossovers_hz}")
    if n_bands == 3 and crossovers_hz[1] < MIN_CROSSOVER_RATIO * crossovers_hz[0]:
        raise ValueError(
            f"crossovers_hz must be at least {MIN_CROSSOVER_RATIO:g}x apart (an octave), got "
            f"{crossovers_hz}"
        )
    batch = rt60_s.shape[0]
    m = torch.as_tensor([float(d) for d in delays], dtype=rt60_s.dtype, device=rt60_s.device)
    gains_db = -60.0 * m[None, :, None] / (sr * rt60_s[:, None, :])  # (batch, N, bands)
    rows = batch * len(delays)
    flat = gains_db.reshape(rows, n_bands)
    ref = flat[:, 0] if n_bands < 3 else flat[:, 1]
    gain = 10.0 ** (ref / 20.0)
    if n_bands == 1:
        zero = torch.zeros_like(gain)
        sections = [torch.stack([gain, zero, zero, zero, zero], dim=-1)]
    else:
        shelves = [("high_shelf", crossovers_hz[-1], flat[:, -1] - ref)]
        if n_bands == 3:
            shelves.insert(0, ("low_shelf", crossovers_hz[0], flat[:, 0] - ref))
        sections = [_normalized(biquad(kind, rt60_s.new_tensor([f]), BUTTERWORTH_Q, sr, g))
                    for kind, f, g in shelves]  # fmt: skip
        # The broadband gain scales the first shelf's numerator (one section fewer to run).
        sections[0] = torch.cat([sections[0][:, :3] * gain[:, None], sections[0][:, 3:]], -1)
    sos = torch.stack(sections, dim=1)
    return sos.reshape(batch, len(delays), len(sections), 5)


def _check_delays(delays, sr) -> list[int]:
    try:
        out = [int(d) for d in delays]
    except (TypeError, ValueError):
        raise ValueError(
            f"delays must be a sequence of integers (samples), got {delays!r}"
        ) from None
    if not out or any(d != float(e) for d, e in zip(out, delays)):
        raise ValueError(f"delays must be a non-empty sequence of integers, got {delays!r}")
    if min(out) < 1 or max(out) > MAX_LINE_DELAY_S * sr:
        raise ValueError(
            f"delays must lie in [1, {MAX_LINE_DELAY_S * sr:g}] samples "
            f"(MAX_LINE_DELAY_S = {MAX_LINE_DELAY_S} s), got {out}"
        )
    return out


def _gain_vector(value, name, batch, shape_tail, like) -> torch.Tensor:
    """Input/output gains: ``shape_tail`` or ``(batch, *shape_tail)`` -> batched."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(value).__name__}")
    t = value.to(dtype=like.dtype, device=like.device)
    if tuple(t.shape) == tuple(shape_tail):
        t = t.unsqueeze(0)
    if tuple(t.shape[1:]) != tuple(shape_tail) or t.shape[0] not in (1, batch):
        raise ValueError(
            f"{name} must be shaped {tuple(shape_tail)} or (batch, *{tuple(shape_tail)}) with "
            f"batch {batch}, got {tuple(value.shape)}"
        )
    check_finite(t.detach(), name)
    return t.expand(batch, *shape_tail)


def _default_output_gains(n_out: int, n_lines: int, like) -> torch.Tensor:
    """Mono: all lines at 1/sqrt(N). Stereo: sign patterns (+,+,-,-,...) and (+,-,+,-,...),
    orthogonal to each other for N a multiple of 4, so the two channels are decorrelated."""
    i = torch.arange(n_lines, device=like.device)
    if n_out == 1:
        rows = [torch.ones(n_lines, dtype=like.dtype, device=like.device)]
    else:
        left = 1.0 - 2.0 * ((i // 2) % 2).to(like.dtype)
        right = 1.0 - 2.0 * (i % 2).to(like.dtype)
        rows = [left, right]
    return torch.stack(rows) / math.sqrt(n_lines)


def fdn_reverb(
    x: torch.Tensor,
    sample_rate: float,
    rt60_s: torch.Tensor | float,
    mix: torch.Tensor | float = 0.3,
    delays: Sequence[int] | None = None,
    n_lines: int = 8,
    mixing: str | torch.Tensor = "householder",
    input_gains: torch.Tensor | None = None,
    output_gains: torch.Tensor | None = None,
    output_channels: int = 1,
    crossovers_hz: Sequence[float] | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Feedback delay network reverb with an RT60 per band, as an exact recursion.

    ``N`` delay lines of fixed integer lengths ``m_i``; their outputs pass through absorption
    filters (:func:`fdn_absorption_sos`: each band decays by 60 dB in its RT60), are mixed by
    an orthogonal matrix ``A`` and written back with the input times ``b``; the wet signal is
    ``c^T`` of the filtered line outputs, i.e. the transfer function
    ``c^T (diag(z^m_i / H_i(z)) - A)^-1 b``. ``y = (1 - mix) x + mix wet``.

    Args:
        x: ``(batch, channels, samples)`` audio. With ``output_channels=1`` every channel is
            reverberated on its own; with 2, ``x`` must be mono or stereo, a stereo input is
            summed to mono (the mean) for the reverb send, and the dry signal keeps its
            channels.
        sample_rate: Hz.
        rt60_s: 60 dB decay time per band in seconds, ``(batch, bands)`` with 1-3 bands (low
            to high), ``(batch,)`` or scalar (one band), in [``MIN_FDN_RT60_S``,
            ``MAX_FDN_RT60_S``] = [0.05, 100].
        mix: ``(batch,)`` or scalar wet fraction in [0, 1].
        delays: line lengths in samples (integers in [1, 0.1 s]); default
            ``fdn_delays(n_lines, sample_rate)`` (distinct primes, 10-30 ms).
        n_lines: ``N`` when ``delays`` is not given.
        mixing: ``"householder"``, ``"hadamard"`` (``N`` a power of two) or an orthogonal
            ``(N, N)`` / ``(batch, N, N)`` tensor (orthogonal to ``ORTHOGONALITY_TOL``;
            differentiable, e.g. from ``torch.linalg.matrix_exp`` of a skew-symmetric matrix).
        input_gains: ``b``, ``(N,)`` or ``(batch, N)``; default ``1 / sqrt(N)`` each.
        output_gains: ``c``, ``(P, N)`` or ``(batch, P, N)`` with ``P = output_channels``
            (``(N,)`` also for mono); default ``1 / sqrt(N)`` each for mono and two
            orthogonal sign patterns for stereo.
        output_channels: 1 or 2.
        crossovers_hz: shelf crossovers, see :func:`fdn_absorption_sos`.
        backend: ``"auto"``, ``"numba"`` or ``"blocks"`` (see
            :mod:`diffx.kernels.delay_network`).

    Returns:
        ``(batch, channels, samples)`` for mono output, ``(batch, 2, samples)`` for stereo.
        Differentiable in ``x``, ``rt60_s``, ``mix``, the gains and a tensor ``mixing``.

    Raises:
        ValueError: naming the argument, for bad audio, shapes or ranges.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if output_channels not in (1, 2):
        raise ValueError(f"output_channels must be 1 or 2, got {output_channels!r}")
    B, C, T = x.shape  # batch, channels, samples
    if output_channels == 2 and C > 2:
        raise ValueError(f"x must be mono or stereo for stereo output, got {C} channels")
    delays = fdn_delays(n_lines, sr) if delays is None else _check_delays(delays, sr)
    N, P = len(delays), output_channels
    wide = wide_dtype(x.device, "fdn_reverb's absorption filter designs")
    like = x.new_empty(0, dtype=wide)
    rt60 = _rt60_bands(rt60_s, B, like)
    sos = fdn_absorption_sos(delays, rt60, sr, crossovers_hz)  # (B, N, K, 5)
    m = as_param(mix, "mix", B, x, 0.0, 1.0)
    if isinstance(mixing, str):
        a = mixing_matrix(mixing, N, dtype=x.dtype, device=x.device).expand(B, N, N)
    else:
        a = _gain_vector(mixing, "mixing", B, (N, N), x)
        eye = torch.eye(N, dtype=wide, device=x.device)
        error = (a.detach().to(wide).transpose(1, 2) @ a.detach().to(wide) - eye).abs().max()
        if float(error) > ORTHOGONALITY_TOL:
            raise ValueError(
                f"mixing must be orthogonal (max |A^T A - I| <= {ORTHOGONALITY_TOL}), got "
                f"{float(error):.3g}"
            )
    if input_gains is None:
        b = x.new_full((B, N), 1.0 / math.sqrt(N))
    else:
        b = _gain_vector(input_gains, "input_gains", B, (N,), x)
    if output_gains is None:
        c = _default_output_gains(P, N, x).expand(B, P, N)
    elif P == 1 and output_gains.dim() in (1, 2) and output_gains.shape[-1] == N and (
        output_gains.dim() == 1 or output_gains.shape[0] != 1
    ):
        c = _gain_vector(output_gains, "output_gains", B, (N,), x)[:, None, :]
    else:
        c = _gain_vector(output_gains, "output_gains", B, (P, N), x)
    send = x if P == 1 else x.mean(dim=1, keepdim=True)
    S = send.shape[1]  # independent networks per item
    R = B * S

    def per_row(t):
        return t[:, None].expand(B, S, *t.shape[1:]).reshape(R, *t.shape[1:])

    delay_t = torch.as_tensor(delays, dtype=torch.int64, device=x.device).expand(R, N)
    wet = delay_network(send.reshape(R, T), per_row(b), per_row(c), per_row(a), delay_t,
                        x.new_zeros(R, N), per_row(sos), backend)  # fmt: skip
    wet = wet.reshape(B, S * P, T)  # mono: (B, C, T); stereo: (B, 2, T)
    mm = m[:, None, None]
    return (1.0 - mm) * x + mm * wet
