"""Harmonic analysis of a periodic signal of known fundamental, and alias removal by resynthesis.

A memoryless or slowly varying nonlinearity driven by a sine of fundamental f0 produces a
periodic output whose harmonics m·f0 above Nyquist fold back (alias) to frequencies that are,
in general, not multiples of f0. Carson, Wright and Bilbao ("Anti-aliasing of neural distortion
effects via model fine tuning", DAFx 2025, section 2.2) separate the two parts of such an output:
they read the complex amplitude of every harmonic below Nyquist off a Chebyshev-windowed FFT
(120 dB side lobes, so aliases outside the main lobe leak in at most at the side-lobe level),
correct each reading for the window's response at the harmonic's offset from its nearest bin
(scalloping), and resynthesise the harmonic sum. The resynthesis is the alias-free
("bandlimited") signal; what is left over is the aliasing.

Conventions used throughout:

- The analysed segment has N samples (N even), time index n = 0 .. N-1, and DFT
  S[k] = sum_n w[n] x[n] exp(-j 2 pi k n / N) with the window w = chebwin(N, at, sym=False).
- Harmonic m (m = 1 .. floor(fs / 2 / f0)) lies at the exact bin nu_m = m f0 N / fs, nearest
  bin b_m = round(nu_m), offset d_m = nu_m - b_m in [-1/2, 1/2].
- Its complex amplitude a_m is the coefficient of exp(+j 2 pi m f0 n / fs), so the partial is
  a_m e^{j...} + conj(a_m) e^{-j...} = 2 |a_m| cos(2 pi m f0 n / fs + angle(a_m)): a_m is half
  the peak amplitude. The DC term is real.
- A single partial puts a_m W(d_m) into bin b_m, where W(d) = sum_n w[n] exp(j 2 pi d n / N)
  is the window's transform at the offset; dividing by it is the scalloping correction of the
  paper. DC is Re S[0] / sum(w).

Two refinements over the paper's one-shot estimate, both exact for a purely harmonic signal:

- Leakage between harmonics. Each harmonic also leaks into the other harmonics' bins through the
  window's side lobes (about -116 dB for the periodic 120 dB Chebyshev window), which limits
  the one-shot round trip to ~1e-6 relative. ``refine_iterations`` passes of iterative
  refinement (resynthesise, analyse the residual, correct) remove that; each pass shrinks the
  error by roughly the summed side-lobe leakage (< 1e-3), so two passes reach float64 rounding.
  ``refine_iterations=0`` is the paper's estimate.
- The image of the top harmonic. A harmonic within a few bins of Nyquist overlaps the main lobe
  of its own negative-frequency image, so its bin holds a_m U + conj(a_m) V with V the window's
  response at the image. The top harmonic's 2x2 real system is solved (by pseudo-inverse, so a
  harmonic exactly at Nyquist, whose sine part is unobservable, gets a real amplitude).

The segment must be long enough for the harmonics to be resolved: adjacent harmonics must lie
outside each other's main lobe (about 4.6 bins half-width at 120 dB), i.e.
f0 >= (main-lobe half-width + 1) fs / N; otherwise a ``ValueError`` says so.

Everything is batched (harmonic counts are padded to the largest in the batch and masked) and
differentiable with respect to the signal: the estimate is a linear function of it. ``f0_hz``
is a known constant (it is detached).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal.windows import chebwin

from diffx._validation import check_finite, check_sample_rate, wide_dtype

#: Side-lobe attenuation of the Chebyshev analysis window, as in Carson et al. (DAFx 2025).
WINDOW_ATTENUATION_DB = 120.0

#: Refinement passes after the paper's one-shot estimate; see the module docstring.
REFINE_ITERATIONS = 2

#: Terms of the Taylor series used for the window's transform at offsets |d| <= 1/2; the
#: (pi/2)^p / p! bound of term p is below 1e-26 from p = 30 on.
_TAYLOR_TERMS = 32

#: Singular values of the top harmonic's 2x2 system below this fraction of the largest are
#: dropped: a harmonic (numerically) at Nyquist has no observable sine component.
_PINV_RTOL = 1e-9


@dataclass(frozen=True)
class HarmonicAnalysis:
    """The harmonic content of a batch of periodic signals.

    Attributes:
        dc: ``(batch,)`` the DC term (same units as the signal).
        amplitudes: ``(batch, M)`` complex: a_m, half the peak amplitude of harmonic m with its
            phase at sample 0 (partial = 2 |a_m| cos(2 pi m f0 n / fs + angle(a_m))). Padded
            with zeros beyond each item's harmonic count.
        harmonic_hz: ``(batch, M)`` float64, Hz, m f0 for m = 1 .. M; 0 where ``mask`` is
            False (kept in float64 whatever the signal's precision: a float32 frequency is off
            by up to ~1e-3 Hz, a phase drift of several milliradians over a second).
        mask: ``(batch, M)`` bool, True for the harmonics below Nyquist of each item.
        sample_rate: Hz.
        num_samples: length N of the analysed segment.
    """

    dc: torch.Tensor
    amplitudes: torch.Tensor
    harmonic_hz: torch.Tensor
    mask: torch.Tensor
    sample_rate: float
    num_samples: int

    @property
    def num_harmonics(self) -> torch.Tensor:
        """``(batch,)`` int64: the number of harmonics below Nyquist of each item."""
        return self.mask.sum(dim=-1)


@functools.lru_cache(maxsize=16)
def _window_tables(num_samples: int, attenuation_db: float) -> tuple[np.ndarray, np.ndarray]:
    """The periodic Chebyshev window and its centred moments sum_n w[n] t_n^p / p!."""
    w = chebwin(num_samples, at=attenuation_db, sym=False)
    # Centring on n = N/2 keeps |2 pi d t_n| <= pi/2 for |d| <= 1/2, so the series converges
    # fast and without cancellation (the largest term is ~pi/2 times the first).
    t = (np.arange(num_samples) - num_samples / 2) / num_samples
    moments = np.empty(_TAYLOR_TERMS)
    power = np.ones(num_samples)
    for p in range(_TAYLOR_TERMS):
        moments[p] = np.dot(w, power) / math.factorial(p)
        power = power * t
    w.setflags(write=False)
    moments.setflags(write=False)
    return w, moments


def chebyshev_window(
    num_samples: int,
    attenuation_db: float = WINDOW_ATTENUATION_DB,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The periodic Dolph-Chebyshev window ``chebwin(num_samples, at, sym=False)``.

    Args:
        num_samples: window length N.
        attenuation_db: side-lobe attenuation in dB (positive).
        dtype, device: of the returned tensor.

    Returns:
        ``(num_samples,)`` window, peak 1.
    """
    w, _ = _window_tables(int(num_samples), float(attenuation_db))
    return torch.tensor(w, dtype=dtype, device=device)


def main_lobe_half_width_bins(num_samples: int, attenuation_db: float) -> float:
    """Half-width (centre to first zero) of the Chebyshev window's main lobe, in DFT bins.

    From the Dolph-Chebyshev transform T_N(beta cos(pi k / N)) with
    beta = cosh(acosh(10^(at/20)) / N) (Smith, "Spectral Audio Signal Processing", Dolph-
    Chebyshev window): the main lobe ends where beta cos(pi k / N) = 1. About 4.6 bins at 120 dB.
    """
    ripple = 10.0 ** (abs(attenuation_db) / 20.0)
    beta = math.cosh(math.acosh(ripple) / num_samples)
    return num_samples / math.pi * math.acos(1.0 / beta)


def chebyshev_spectrum(
    x: torch.Tensor, window_attenuation_db: float = WINDOW_ATTENUATION_DB
) -> torch.Tensor:
    """One-sided spectrum of a Chebyshev-windowed signal, ``rfft(x * w)``.

    Args:
        x: ``(..., samples)`` real signal.
        window_attenuation_db: side-lobe attenuation of the window in dB.

    Returns:
        ``(..., samples // 2 + 1)`` complex spectrum (unnormalised: a full-scale on-bin sine of
        amplitude A reads A / 2 * sum(w)).
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point torch.Tensor")
    w = chebyshev_window(x.shape[-1], window_attenuation_db, dtype=x.dtype, device=x.device)
    return torch.fft.rfft(x * w, dim=-1)


def _signal_2d(x: torch.Tensor) -> torch.Tensor:
    """``(batch, samples)`` view of ``x`` shaped ``(batch, samples)`` or ``(batch, 1, samples)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0, :]
    elif x.dim() != 2:
        raise ValueError(
            f"x must be shaped (batch, samples) or (batch, 1, samples), got {tuple(x.shape)}"
        )
    n = x.shape[-1]
    if n < 2 or n % 2:
        raise ValueError(f"x must have an even number of samples (at least 2), got {n}")
    check_finite(x, "x")
    return x


def _fundamentals(
    f0_hz: torch.Tensor | float, batch: int, sample_rate: float, num_samples: int, attenuation
) -> torch.Tensor:
    """``(batch,)`` float64 fundamentals, checked to be below Nyquist and resolvable."""
    if isinstance(f0_hz, torch.Tensor):
        f0 = f0_hz.detach().to(dtype=torch.float64, device="cpu")
    else:
        try:
            f0 = torch.as_tensor(np.asarray(f0_hz, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"f0_hz must be a number or a tensor in Hz, got {f0_hz!r}") from None
    if f0.dim() == 2 and f0.shape[-1] == 1:
        f0 = f0[:, 0]
    if f0.dim() == 0 or (f0.dim() == 1 and f0.shape[0] == 1):
        f0 = f0.reshape(1).expand(batch)
    if f0.dim() != 1 or f0.shape[0] != batch:
        raise ValueError(
            f"f0_hz must be a scalar or shaped (batch,) = ({batch},), got {tuple(f0.shape)}"
        )
    nyquist = sample_rate / 2
    bad = ~torch.isfinite(f0) | (f0 <= 0) | (f0 >= nyquist)
    if bool(bad.any()):
        value = float(f0[bad][0])
        raise ValueError(
            f"f0_hz must lie in (0, sample_rate / 2 = {nyquist:g}) Hz, got {value:g} Hz"
        )
    # Adjacent harmonics (and DC next to the fundamental) must fall outside each other's main
    # lobes, else the bin readings mix harmonics and the estimate is meaningless.
    min_bins = main_lobe_half_width_bins(num_samples, attenuation) + 1.0
    min_f0 = min_bins * sample_rate / num_samples
    if bool((f0 < min_f0).any()):
        raise ValueError(
            f"f0_hz = {float(f0.min()):g} Hz is too low for a segment of {num_samples} samples "
            f"at {sample_rate:g} Hz: harmonics {float(f0.min()) * num_samples / sample_rate:.3g}"
            f" bins apart, the window's main lobe needs at least {min_bins:.3g} "
            f"(f0_hz >= {min_f0:.4g} Hz); analyse a longer segment"
        )
    return f0


def _cycles(frequency_per_sample: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Phase in cycles, reduced to [0, 1), of frequency (cycles/sample) x sample index."""
    # Reducing before the 2 pi keeps the phase exact to float64 rounding of the product (a few
    # 1e-12 cycles at N = 44100) and makes the float32 cast of the exponential accurate.
    return torch.frac(frequency_per_sample * n)


def _expj(cycles: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.polar(torch.ones_like(cycles), (2 * math.pi) * cycles).to(dtype)


class _Synthesiser:
    """dc + 2 Re sum_m a_m exp(j 2 pi f_m n), batched, by a blocked matrix product.

    Splitting n = q L + r (L ~ sqrt(N)) factors the (N x M) table of exponentials into a
    (Q x M) and an (M x L) one, so memory is O(M sqrt(N)) per item instead of O(M N) while the
    product runs as one batched complex GEMM. The tables depend only on the frequencies, so
    they are built once and reused by every refinement pass.
    """

    def __init__(self, harmonic_per_sample: torch.Tensor, num_samples: int, dtype: torch.dtype):
        device = harmonic_per_sample.device
        self.num_samples = num_samples
        self.block = max(1, math.isqrt(num_samples - 1) + 1)
        self.n_blocks = -(-num_samples // self.block)
        f = harmonic_per_sample[:, :, None]  # (batch, M, 1) cycles/sample, float64
        q = torch.arange(self.n_blocks, dtype=torch.float64, device=device) * self.block
        r = torch.arange(self.block, dtype=torch.float64, device=device)
        self.outer = _expj(_cycles(f, q), dtype).transpose(1, 2)  # (batch, Q, M)
        self.inner = _expj(_cycles(f, r), dtype)  # (batch, M, L)

    def __call__(self, dc: torch.Tensor, amps: torch.Tensor) -> torch.Tensor:
        batch = amps.shape[0]
        z = torch.matmul(self.outer * amps[:, None, :], self.inner)
        z = z.reshape(batch, self.n_blocks * self.block)[:, : self.num_samples]
        return dc[:, None] + 2 * z.real


def _window_response(d: torch.Tensor, num_samples: int, moments: torch.Tensor) -> torch.Tensor:
    """W(d) = sum_n w[n] exp(j 2 pi d n / N) for offsets |d| <= 1/2 (Taylor series, exact)."""
    # W(d) = exp(j pi d) sum_p (j 2 pi d)^p sum_n w[n] t_n^p / p!, t_n = n / N - 1/2.
    p = torch.arange(moments.shape[0], dtype=torch.float64, device=d.device)
    jp = torch.polar(torch.ones_like(p), p * (math.pi / 2))  # j^p
    series = ((2 * math.pi * d[..., None]) ** p * jp * moments).sum(dim=-1)
    return series * torch.polar(torch.ones_like(d), math.pi * d)


def _image_response(delta: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """W(delta) for arbitrary offsets (bins), by direct summation; ``delta`` is ``(batch,)``."""
    n = torch.arange(window.shape[0], dtype=torch.float64, device=delta.device)
    phase = _expj(_cycles(delta[:, None] / window.shape[0], n), torch.complex128)
    return (phase * window).sum(dim=-1)


def _analyse(
    x: torch.Tensor,
    f0_hz: torch.Tensor | float,
    sample_rate: float,
    window_attenuation_db: float,
    refine_iterations: int,
) -> tuple[HarmonicAnalysis, _Synthesiser | None]:
    """:func:`harmonic_analysis`, also returning the synthesiser built for the refinement."""
    sample_rate = check_sample_rate(sample_rate)
    if int(refine_iterations) != refine_iterations or refine_iterations < 0:
        raise ValueError(f"refine_iterations must be an integer >= 0, got {refine_iterations!r}")
    attenuation = abs(float(window_attenuation_db))
    if not 0 < attenuation < float("inf"):
        raise ValueError(f"window_attenuation_db must be non-zero, got {window_attenuation_db!r}")
    x2 = _signal_2d(x)
    batch, n = x2.shape
    device, real_dtype = x2.device, x2.dtype
    # Frequencies, window tables and phases below are float64 on x's device whatever its dtype
    # (see the module docstring); refuse a device without float64 here, by name.
    wide_dtype(device, "harmonic_analysis's frequencies and window tables")
    complex_dtype = torch.complex128 if real_dtype == torch.float64 else torch.complex64
    f0 = _fundamentals(f0_hz, batch, sample_rate, n, attenuation).to(device)

    # --- harmonic grid, padded to the largest count in the batch ------------------------------
    counts = torch.floor(sample_rate / 2 / f0).to(torch.int64)  # (batch,)
    m_max = int(counts.max())
    m = torch.arange(1, m_max + 1, device=device)
    mask = m[None, :] <= counts[:, None]  # (batch, M)
    harmonic_hz = torch.where(mask, m[None, :] * f0[:, None], torch.zeros((), device=device))
    per_sample = harmonic_hz / sample_rate  # cycles per sample, float64
    exact_bin = per_sample * n
    bins = torch.round(exact_bin).to(torch.int64).clamp(0, n // 2)
    offset = exact_bin - bins  # d_m in [-1/2, 1/2]

    # --- the per-harmonic 2x2 real block [Re S; Im S] = B [Re a; Im a] and its pseudo-inverse --
    with torch.no_grad():
        w_np, moments_np = _window_tables(n, attenuation)
        window64 = torch.tensor(w_np, dtype=torch.float64, device=device)
        moments = torch.tensor(moments_np, dtype=torch.float64, device=device)
        u = _window_response(offset, n, moments)  # (batch, M)
        v = torch.zeros_like(u)
        # Only the top harmonic can sit within a main lobe of its own image at -nu (spacing
        # >= one main lobe puts every other harmonic's image outside it); its image lies at
        # offset -(2 b + d) = N - 2 b - d bins (mod N) from its bin.
        top = (counts - 1)[:, None]
        delta = n - 2 * bins.gather(1, top)[:, 0] - offset.gather(1, top)[:, 0]
        v.scatter_(1, top, _image_response(delta, window64)[:, None])
        block = torch.stack(
            [
                torch.stack([u.real + v.real, v.imag - u.imag], dim=-1),
                torch.stack([u.imag + v.imag, u.real - v.real], dim=-1),
            ],
            dim=-2,
        )  # (batch, M, 2, 2)
        solve = torch.linalg.pinv(block, rtol=_PINV_RTOL).to(real_dtype)
        solve = solve * mask[..., None, None]
        window = window64.to(real_dtype)
        window_sum = float(window64.sum())

    def estimate(spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        readings = torch.view_as_real(spectrum.gather(1, bins))  # (batch, M, 2)
        amps = torch.view_as_complex(torch.matmul(solve, readings[..., None])[..., 0].contiguous())
        return spectrum[:, 0].real / window_sum, amps

    dc, amps = estimate(torch.fft.rfft(x2 * window, dim=-1))
    synthesise = _Synthesiser(per_sample, n, complex_dtype) if refine_iterations else None
    for _ in range(int(refine_iterations)):
        residual = x2 - synthesise(dc, amps)
        d_dc, d_amps = estimate(torch.fft.rfft(residual * window, dim=-1))
        dc, amps = dc + d_dc, amps + d_amps
    analysis = HarmonicAnalysis(
        dc=dc,
        amplitudes=amps,
        harmonic_hz=harmonic_hz,
        mask=mask,
        sample_rate=sample_rate,
        num_samples=n,
    )
    return analysis, synthesise


def harmonic_analysis(
    x: torch.Tensor,
    f0_hz: torch.Tensor | float,
    sample_rate: float,
    window_attenuation_db: float = WINDOW_ATTENUATION_DB,
    refine_iterations: int = REFINE_ITERATIONS,
) -> HarmonicAnalysis:
    """Complex amplitudes of the harmonics m f0 below Nyquist, and the DC term.

    Args:
        x: ``(batch, samples)`` or ``(batch, 1, samples)``; the analysed segment, samples even.
            Sample 0 is the time origin of the returned phases.
        f0_hz: ``(batch,)`` or scalar, Hz, in (0, sample_rate / 2) and resolvable by the
            segment (see the module docstring). Treated as a constant (no gradient). Used in
            float64: pass a float64 tensor or Python floats, since a float32 f0 is off by up
            to 6e-8 relative, a phase drift the analysis would faithfully report.
        sample_rate: Hz.
        window_attenuation_db: side-lobe attenuation of the Chebyshev window, dB.
        refine_iterations: refinement passes after the paper's one-shot estimate (0 = paper).

    Returns:
        A :class:`HarmonicAnalysis`; ``amplitudes`` are complex of ``x``'s precision and
        differentiable with respect to ``x``.
    """
    analysis, _ = _analyse(x, f0_hz, sample_rate, window_attenuation_db, refine_iterations)
    return analysis


def synthesise_harmonics(
    analysis: HarmonicAnalysis, num_samples: int | None = None
) -> torch.Tensor:
    """The harmonic sum dc + sum_m 2 |a_m| cos(2 pi m f0 n / fs + angle(a_m)).

    Args:
        analysis: from :func:`harmonic_analysis`.
        num_samples: output length (default: the analysed length); n = 0 is the analysed
            segment's first sample.

    Returns:
        ``(batch, num_samples)`` real signal, differentiable with respect to the amplitudes.
    """
    n = analysis.num_samples if num_samples is None else int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
    wide = wide_dtype(analysis.harmonic_hz.device, "harmonic_synthesis' frequencies")
    per_sample = analysis.harmonic_hz.to(wide) / analysis.sample_rate
    amps = analysis.amplitudes * analysis.mask
    return _Synthesiser(per_sample, n, amps.dtype)(analysis.dc, amps)


def bandlimit(
    x: torch.Tensor,
    f0_hz: torch.Tensor | float,
    sample_rate: float,
    window_attenuation_db: float = WINDOW_ATTENUATION_DB,
    refine_iterations: int = REFINE_ITERATIONS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a periodic signal into its harmonic (alias-free) part and the rest (aliases).

    Args:
        x: ``(batch, samples)`` or ``(batch, 1, samples)``, samples even; the steady-state
            segment to analyse (discard any onset transient first).
        f0_hz: ``(batch,)`` or scalar fundamental in Hz, below Nyquist (float64 or Python
            floats for exactness; see :func:`harmonic_analysis`).
        sample_rate: Hz.
        window_attenuation_db: side-lobe attenuation of the Chebyshev window, dB.
        refine_iterations: see :func:`harmonic_analysis` (0 = the paper's one-shot estimate).

    Returns:
        ``(bandlimited, aliases)``, each shaped like ``x``, with ``bandlimited + aliases == x``;
        ``bandlimited`` is the resynthesised harmonic sum of :func:`harmonic_analysis`.
    """
    analysis, synthesise = _analyse(x, f0_hz, sample_rate, window_attenuation_db, refine_iterations)
    if synthesise is None:
        bandlimited = synthesise_harmonics(analysis)
    else:
        bandlimited = synthesise(analysis.dc, analysis.amplitudes)
    bandlimited = bandlimited.reshape(x.shape)
    return bandlimited, x - bandlimited
