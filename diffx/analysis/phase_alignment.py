"""Measuring how well two signals line up, and the non-learned ways to line them up.

The question a mixing engineer asks of a dry signal and a processed ("wet") copy of it is what
happens when the two are summed in parallel: wherever their phases disagree, energy cancels
(comb filtering). :func:`parallel_mix` measures that on short-time spectra:

    comb_loss_db = 10 log10( sum |X + Y|^2 / sum (|X| + |Y|)^2 )      (<= 0 dB)

``(|X| + |Y|)^2`` is the energy of the sum with every time-frequency bin perfectly in phase,
so 0 dB means no loss at all and the figure does not depend on the magnitude difference an
effect may have made (an allpass alignment cannot change magnitudes, only phases). For two
independent noises the expected value is ``-10 log10(1 + pi/4) = -2.52 dB``; for white noise
summed with a long delay of itself it is ``-10 log10 2 = -3.01 dB`` (``1 + cos`` averages to 1).

The baselines are the classic delay alignments: the integer lag that maximizes the
cross-correlation (with polarity), and the same refined to a fraction of a sample by fitting a
parabola through the peak and its two neighbours.

:func:`estimate_response` estimates the transfer function from dry to wet (Welch's method: the
cross-spectrum over the dry's power spectrum, with the coherence telling where it can be
trusted); :func:`measure_effect_response` does the same for any effect by playing noise or an
exponential sine sweep through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal
import torch

from diffx._validation import check_sample_rate

COMB_N_FFT = 2048
COMB_HOP = 512

ArrayLike = np.ndarray | torch.Tensor


def _as_1d(x: ArrayLike, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, float)
    a = np.squeeze(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one channel of audio (samples,), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} has no samples")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(a)).sum())} NaN or Inf samples")
    return a


def _pair(dry: ArrayLike, wet: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_1d(dry, "dry"), _as_1d(wet, "wet")
    if x.size != y.size:
        raise ValueError(f"dry and wet differ in length: {x.size} and {y.size} samples")
    return x, y


# --------------------------------------------------------------------------------------------
# the parallel-mix test


@dataclass(frozen=True)
class MixReport:
    """What summing dry and wet does.

    Attributes:
        comb_loss_db: energy lost to phase disagreement when dry and wet are summed, relative to
            a perfectly in-phase sum, in dB (<= 0; closer to 0 is better).
        ncc: normalized cross-correlation at lag 0, ``<x, y> / (|x| |y|)`` in [-1, 1].
    """

    comb_loss_db: float
    ncc: float

    def __str__(self) -> str:
        return f"comb-filter loss {self.comb_loss_db:+.2f} dB, NCC at lag 0 {self.ncc:+.4f}"


def normalized_cross_correlation(dry: ArrayLike, wet: ArrayLike) -> float:
    """``<x, y> / (|x| |y|)`` at lag 0; 0 when either signal is silent."""
    x, y = _pair(dry, wet)
    norm = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / norm if norm > 0 else 0.0


def comb_loss_db(
    dry: ArrayLike, wet: ArrayLike, n_fft: int = COMB_N_FFT, hop: int = COMB_HOP
) -> float:
    """Energy lost when ``dry`` and ``wet`` are summed, in dB relative to an in-phase sum.

    Short-time spectra with a Hann window of ``n_fft`` samples every ``hop``; see the module
    notes. Silence in both gives 0 dB.
    """
    x, y = _pair(dry, wet)
    kwargs = dict(nperseg=min(n_fft, x.size), noverlap=min(n_fft, x.size) - min(hop, x.size))
    _, _, X = scipy.signal.stft(x, window="hann", boundary=None, padded=True, **kwargs)
    _, _, Y = scipy.signal.stft(y, window="hann", boundary=None, padded=True, **kwargs)
    ideal = float(np.sum((np.abs(X) + np.abs(Y)) ** 2))
    if ideal == 0.0:
        return 0.0
    summed = float(np.sum(np.abs(X + Y) ** 2))
    return 10 * math.log10(max(summed, ideal * 1e-12) / ideal)


def parallel_mix(dry: ArrayLike, wet: ArrayLike) -> MixReport:
    """The parallel-mix test of a dry/wet pair (see :class:`MixReport`)."""
    return MixReport(comb_loss_db(dry, wet), normalized_cross_correlation(dry, wet))


# --------------------------------------------------------------------------------------------
# delay baselines


@dataclass(frozen=True)
class DelayEstimate:
    """A bulk alignment: ``wet ~ polarity * dry delayed by delay_samples``.

    Attributes:
        delay_samples: how much later the wet is than the dry (negative: earlier).
        polarity: +1, or -1 when the wet is inverted.
        peak: the normalized cross-correlation at that lag.
    """

    delay_samples: float
    polarity: int
    peak: float


def max_lag_samples(max_delay_ms: float, sample_rate: float) -> int:
    """A lag search range of ``+-max_delay_ms`` in whole samples."""
    return int(round(max_delay_ms * sample_rate / 1000))


def _xcorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Full cross-correlation ``c[k] = sum_n y[n] x[n - k]`` for lags ``-(N-1) .. N-1``."""
    n = x.size
    size = scipy.fft.next_fast_len(2 * n - 1, real=True)
    c = scipy.fft.irfft(scipy.fft.rfft(y, size) * np.conj(scipy.fft.rfft(x, size)), size)
    return np.concatenate([c[-(n - 1) :], c[:n]]) if n > 1 else c[:1]


def _lag_search(dry, wet, max_delay_samples, allow_inversion):
    x, y = _pair(dry, wet)
    norm = math.sqrt(float(x @ x) * float(y @ y))
    if norm == 0:
        raise ValueError("cannot align silence: dry or wet has no energy")
    c = _xcorr(x, y) / norm
    lags = np.arange(-(x.size - 1), x.size)
    if max_delay_samples is not None:
        keep = np.abs(lags) <= max_delay_samples
        c, lags = c[keep], lags[keep]
    score = np.abs(c) if allow_inversion else c
    i = int(np.argmax(score))
    polarity = -1 if c[i] < 0 else 1
    return c * polarity, lags, i, polarity


def integer_delay(
    dry: ArrayLike,
    wet: ArrayLike,
    max_delay_samples: int | None = None,
    allow_inversion: bool = True,
) -> DelayEstimate:
    """The integer lag (and polarity) that maximizes the cross-correlation of dry and wet.

    Args:
        dry, wet: ``(samples,)`` audio of one channel, equal lengths.
        max_delay_samples: search lags within +-this (default: all).
        allow_inversion: also consider the wet inverted (peak of ``|xcorr|``).
    """
    c, lags, i, polarity = _lag_search(dry, wet, max_delay_samples, allow_inversion)
    return DelayEstimate(float(lags[i]), polarity, float(c[i]))


def fractional_delay_estimate(
    dry: ArrayLike,
    wet: ArrayLike,
    max_delay_samples: int | None = None,
    allow_inversion: bool = True,
) -> DelayEstimate:
    """:func:`integer_delay` refined by a parabola through the correlation peak.

    The vertex of the parabola through ``c[k-1], c[k], c[k+1]`` is
    ``k + (c[k-1] - c[k+1]) / (2 (c[k-1] - 2 c[k] + c[k+1]))``; its offset is kept within half
    a sample. ``peak`` is the parabola's value there.
    """
    c, lags, i, polarity = _lag_search(dry, wet, max_delay_samples, allow_inversion)
    if 0 < i < len(c) - 1:
        left, mid, right = c[i - 1], c[i], c[i + 1]
        curvature = left - 2 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        offset = float(np.clip(offset, -0.5, 0.5))
        peak = mid - 0.25 * (left - right) * offset
    else:
        offset, peak = 0.0, c[i]
    return DelayEstimate(float(lags[i]) + offset, polarity, float(peak))


def apply_delay(x: ArrayLike, delay_samples: float, polarity: int = 1) -> np.ndarray:
    """``polarity * x`` delayed by ``delay_samples`` (any real number; negative advances).

    Integer delays shift with zeros filled in; a fractional part is applied as a linear phase
    on an FFT zero-padded to more than twice the length (band-limited interpolation without
    wrap-around). The length is kept.
    """
    a = _as_1d(x, "x")
    n = a.size
    whole = math.floor(delay_samples)
    frac = delay_samples - whole
    if frac > 1e-12:
        size = scipy.fft.next_fast_len(2 * n + 1, real=True)
        k = np.arange(size // 2 + 1)
        spectrum = scipy.fft.rfft(a, size) * np.exp(-2j * np.pi * k * frac / size)
        if size % 2 == 0:
            spectrum[-1] = spectrum[-1].real  # the Nyquist bin of a real signal stays real
        a = scipy.fft.irfft(spectrum, size)[:n]
    out = np.zeros(n)
    if whole >= 0:
        if whole < n:
            out[whole:] = a[: n - whole]
    elif -whole < n:
        out[: n + whole] = a[-whole:]
    return polarity * out


# --------------------------------------------------------------------------------------------
# transfer-function estimates


@dataclass(frozen=True)
class ResponseEstimate:
    """A measured transfer function from dry to wet on a linear frequency grid.

    Attributes:
        freqs_hz: ``(n_freqs,)`` frequencies, 0 to Nyquist.
        response: ``(n_freqs,)`` complex transfer function ``S_xy / S_xx``.
        coherence: ``(n_freqs,)`` magnitude-squared coherence in [0, 1] (how much of the wet
            is a linear, time-invariant function of the dry at each frequency).
        cross_power: ``(n_freqs,)`` ``|S_xy|``, the weight each frequency has in the sum
            of dry and wet.
        sample_rate: Hz.
    """

    freqs_hz: np.ndarray
    response: np.ndarray
    coherence: np.ndarray
    cross_power: np.ndarray
    sample_rate: float

    @property
    def phase_rad(self) -> np.ndarray:
        """Wrapped phase of the response, in (-pi, pi]."""
        return np.angle(self.response)

    def unwrapped_phase_rad(self, band: np.ndarray | None = None) -> np.ndarray:
        """The phase over ``band`` (a boolean mask; default all), unwrapped by
        :func:`unwrap_coherent`."""
        keep = np.ones(self.freqs_hz.size, bool) if band is None else np.asarray(band, bool)
        return unwrap_coherent(self.phase_rad[keep], self.coherence[keep])

    @property
    def magnitude_db(self) -> np.ndarray:
        return 20 * np.log10(np.maximum(np.abs(self.response), 1e-12))


def unwrap_coherent(
    phase_rad: np.ndarray, coherence: np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """Unwrap a measured phase without letting noisy bins add whole turns.

    ``numpy.unwrap`` adds up the wrapped steps between neighbouring bins; in bins where the
    measurement is noise (low coherence) those steps are random, and every random turn they add
    shifts the whole rest of the curve by 2 pi. Here a step counts only when both its bins have
    ``coherence >= threshold``; across incoherent stretches the step is interpolated linearly
    from the coherent ones around them (a smoothly varying group delay). The curve is anchored
    at the first coherent bin, whose wrapped value (in (-pi, pi]) it keeps.

    Args:
        phase_rad: ``(n,)`` wrapped phase on an increasing frequency grid.
        coherence: ``(n,)`` in [0, 1].
        threshold: least coherence of a trusted bin.

    Returns:
        ``(n,)`` unwrapped phase (plain ``numpy.unwrap`` from bin 0 if no step is trusted).
    """
    phase = np.asarray(phase_rad, dtype=float)
    if phase.size < 2:
        return phase.copy()
    good = np.asarray(coherence, dtype=float) >= threshold
    steps = np.angle(np.exp(1j * np.diff(phase)))
    trusted = good[1:] & good[:-1]
    if not trusted.any():
        return np.unwrap(phase)
    index = np.arange(steps.size)
    steps = np.where(trusted, steps, np.interp(index, index[trusted], steps[trusted]))
    anchor = int(np.argmax(good))
    curve = np.concatenate([[0.0], np.cumsum(steps)])
    return curve - curve[anchor] + phase[anchor]


def estimate_response(
    dry: ArrayLike, wet: ArrayLike, sample_rate: float, n_fft: int = 4096
) -> ResponseEstimate:
    """Welch estimate of the dry-to-wet transfer function (Hann, 50 % overlap).

    Raises:
        ValueError: for silent input, unequal lengths or NaN/Inf samples, naming the signal.
    """
    sr = check_sample_rate(sample_rate)
    x, y = _pair(dry, wet)
    for name, a in (("dry", x), ("wet", y)):
        if not np.any(a):
            raise ValueError(f"{name} is silent: there is no phase to estimate")
    n = min(n_fft, x.size)
    freqs, sxy = scipy.signal.csd(x, y, fs=sr, nperseg=n)
    _, sxx = scipy.signal.welch(x, fs=sr, nperseg=n)
    _, syy = scipy.signal.welch(y, fs=sr, nperseg=n)
    tiny = 1e-30
    response = sxy / np.maximum(sxx, tiny)
    coherence = np.clip(np.abs(sxy) ** 2 / np.maximum(sxx * syy, tiny), 0.0, 1.0)
    return ResponseEstimate(freqs, response, coherence, np.abs(sxy), sr)


def exponential_sweep(
    sample_rate: float, seconds: float, start_hz: float = 10.0, stop_hz: float | None = None
) -> np.ndarray:
    """Farina's exponential sine sweep from ``start_hz`` to ``stop_hz`` (default 0.49 fs)."""
    sr = check_sample_rate(sample_rate)
    stop_hz = 0.49 * sr if stop_hz is None else stop_hz
    t = np.arange(int(round(seconds * sr))) / sr
    rate = math.log(stop_hz / start_hz)
    return np.sin(2 * np.pi * start_hz * seconds / rate * (np.exp(t * rate / seconds) - 1))


PROBES = ("noise", "sweep")


def probe_signal(
    method: str, sample_rate: float, seconds: float, level_dbfs: float, seed: int = 0
) -> np.ndarray:
    """A test signal for measuring a response: white Gaussian noise at ``level_dbfs`` RMS
    (``method="noise"``, seeded) or an exponential sweep peaking at ``level_dbfs``
    (``"sweep"``); ``(round(seconds * sample_rate),)`` float64."""
    sr = check_sample_rate(sample_rate)
    if method not in PROBES:
        raise ValueError(f"method must be one of {PROBES}, got {method!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    amplitude = 10 ** (level_dbfs / 20)
    if method == "noise":
        rng = np.random.default_rng(seed)
        return amplitude * rng.standard_normal(int(round(seconds * sr)))
    return amplitude * exponential_sweep(sr, seconds)


def measure_effect_response(
    effect: Callable[[torch.Tensor], torch.Tensor],
    sample_rate: float,
    method: str = "noise",
    seconds: float = 10.0,
    level_dbfs: float = -18.0,
    n_fft: int = 8192,
    seed: int = 0,
) -> ResponseEstimate:
    """Measure an effect's transfer function (and so its phase) with noise or a sweep.

    Args:
        effect: maps ``(1, 1, samples)`` float32 audio to the same shape (a diffx effect with
            fixed parameters, a neural model, a wrapped pedalboard plug-in, ...).
        sample_rate: Hz.
        method: ``"noise"`` (white Gaussian noise; Welch estimate with coherence) or
            ``"sweep"`` (exponential sweep; ``Y / X`` on the FFT of the whole recording,
            coherence 1 where the sweep has energy). For a nonlinear effect both give the best
            linear approximation at the chosen level.
        seconds: length of the test signal.
        level_dbfs: RMS level of the noise, peak level of the sweep.
        n_fft: frequency resolution of the noise estimate (bins ``sample_rate / n_fft`` apart).
        seed: of the noise.
    """
    sr = check_sample_rate(sample_rate)
    x = probe_signal(method, sr, seconds, level_dbfs, seed)
    with torch.no_grad():
        y = effect(torch.from_numpy(x).float().reshape(1, 1, -1))
    if not isinstance(y, torch.Tensor) or y.shape[-1] != x.size:
        raise ValueError(
            f"effect must return a tensor of {x.size} samples, got "
            f"{getattr(y, 'shape', type(y).__name__)}"
        )
    y = y.detach().cpu().double().reshape(-1).numpy()
    if not np.isfinite(y).all():
        raise ValueError("effect produced NaN or Inf samples on the test signal")
    x = x.astype(np.float32).astype(np.float64)  # what the effect actually heard
    if method == "noise":
        return estimate_response(x, y, sr, n_fft=n_fft)
    size = scipy.fft.next_fast_len(2 * x.size, real=True)
    X, Y = scipy.fft.rfft(x, size), scipy.fft.rfft(y, size)
    freqs = np.fft.rfftfreq(size, 1 / sr)
    power = np.abs(X) ** 2
    # Bins the sweep does not reach carry no information (coherence 0 there).
    covered = (freqs >= 10.0) & (freqs <= 0.49 * sr) & (power > power.max() * 1e-8)
    response = np.where(covered, Y / np.where(covered, X, 1), 0)
    return ResponseEstimate(
        freqs, response, covered.astype(float), np.abs(np.conj(X) * Y), float(sr)
    )
