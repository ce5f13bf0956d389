"""Pre-emphasis filters applied to both signals before a loss.

Wright and Välimäki, "Perceptual loss function for neural modelling of audio systems" (ICASSP
2020, arXiv 1911.08922) filter prediction and target before the error-to-signal ratio so the
loss weighs frequencies the way a listener does. Carson, Wright and Bilbao, "Anti-aliasing of
neural distortion effects via model fine tuning" (DAFx 2025, arXiv 2505.11375) instead low-pass
both signals (pass band to 12 kHz, stop band from 16 kHz, 80 dB) so the loss ignores the band
where aliases are to be removed.

Every filter here is a fixed (not trained) ``nn.Module`` mapping ``(batch, channels, samples)``
to the same shape; gradients flow to the input. Alignment differs and is stated per class:
:class:`FirstOrderHighpass` and :class:`AWeighting` are causal (zero initial state), while
:class:`AntialiasLowpass` is a linear-phase FIR centred on the input (its group delay removed,
like a ``"same"`` convolution), so its output lines up with its input sample for sample.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from diffx._validation import check_audio, check_sample_rate
from diffx.functional import sosfilt
from diffx.losses._chunking import BLOCK_BYTES, MAX_DIRECT_BYTES, block_plan, check_chunking

#: Pole frequencies (Hz) of the analog A-weighting, IEC 61672-1:2013 Annex E (eqs. E.1-E.5,
#: the exact values that round to 20.6, 107.7, 737.9 and 12194 Hz).
A_WEIGHTING_POLES_HZ = (20.598997, 107.65265, 737.86223, 12194.217)

#: The A-weighting is normalised to 0 dB at this frequency (IEC 61672-1 reference frequency).
A_WEIGHTING_REFERENCE_HZ = 1000.0

#: The high-frequency section of the digital A-weighting is fitted to the analog response over
#: [0, this fraction of Nyquist]; see :func:`a_weighting_sos`.
_A_WEIGHTING_FIT_FRACTION = 0.95

#: Frequency points of the fit and of the stop-band measurement (dense enough that the largest
#: side lobe is resolved to far below 0.01 dB).
_GRID_POINTS = 4096

PRE_EMPHASIS_NAMES = ("hp", "aw", "lp")


class FirstOrderHighpass(nn.Module):
    """First-order high-pass pre-emphasis ``y[n] = x[n] - coefficient * x[n-1]``.

    The pre-emphasis of Wright and Välimäki (2020); 0.85 is their value for 44.1 kHz audio.
    Causal, with ``x[-1] = 0`` (as ``scipy.signal.lfilter([1, -coefficient], [1], x)``).

    Args:
        coefficient: the tap ``c`` in [0, 1]; 0 is the identity, values near 1 cut low
            frequencies hardest (the gain at DC is ``1 - c``, at Nyquist ``1 + c``).

    Shapes:
        input ``(batch, channels, samples)``; output the same.
    """

    def __init__(self, coefficient: float = 0.85):
        super().__init__()
        c = float(coefficient)
        if not (0.0 <= c <= 1.0):
            raise ValueError(f"coefficient must be in [0, 1], got {coefficient!r}")
        self.coefficient = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_audio(x, "x")
        return x - self.coefficient * F.pad(x, (1, 0))[..., :-1]

    def extra_repr(self) -> str:
        return f"coefficient={self.coefficient}"


def a_weighting_db(freqs_hz: np.ndarray) -> np.ndarray:
    """Analog A-weighting in dB (IEC 61672-1 eq. E.6), 0 dB at 1 kHz; ``-inf`` at 0 Hz."""
    f1, f2, f3, f4 = A_WEIGHTING_POLES_HZ

    def magnitude(f: np.ndarray) -> np.ndarray:
        f2_ = np.square(f)
        return (f4**2 * f2_**2) / (
            (f2_ + f1**2) * np.sqrt((f2_ + f2**2) * (f2_ + f3**2)) * (f2_ + f4**2)
        )

    freqs_hz = np.asarray(freqs_hz, dtype=np.float64)
    with np.errstate(divide="ignore"):  # 0 Hz is -inf dB (no DC passes), on purpose
        return 20 * np.log10(magnitude(freqs_hz) / magnitude(np.array(A_WEIGHTING_REFERENCE_HZ)))


def a_weighting_sos(sample_rate: float) -> np.ndarray:
    """Digital A-weighting as second-order sections, 0 dB at 1 kHz.

    The analog IEC 61672-1 weighting is ``s^4 / ((s + w1)^2 (s + w2) (s + w3) (s + w4)^2)``.
    Its low-frequency part (the four zeros at DC and the poles at 20.6, 107.7 and 737.9 Hz) is
    mapped with the bilinear transform, which is accurate there. The bilinear transform of the
    double pole at 12194 Hz is not: it puts two zeros at Nyquist and reads 8.5 dB low at 16 kHz
    for 44.1 kHz audio (6.4 dB at 48 kHz; measured against the analog response). That section
    instead keeps its poles where impulse invariance puts them (``z = exp(-w4 / sample_rate)``)
    and gets a second-order numerator whose squared magnitude is fitted by least squares, in
    relative terms, to the analog ``1 / (1 + (f / f4)^2)^2`` over [0, 0.95 Nyquist], then
    factored to minimum phase. At 8-192 kHz the cascade stays within 0.2 dB of the analog
    weighting up to 0.9 Nyquist (about 1 dB off right at Nyquist); the tests check it against
    IEC 61672-1 Table 3 and eq. E.6.

    Args:
        sample_rate: Hz, above 2 kHz (the 1 kHz normalisation point must lie below Nyquist).

    Returns:
        ``(4, 6)`` float64 array in ``scipy.signal.sosfilt`` layout.
    """
    sr = check_sample_rate(sample_rate)
    if sr <= 2 * A_WEIGHTING_REFERENCE_HZ:
        raise ValueError(
            f"sample_rate must exceed {2 * A_WEIGHTING_REFERENCE_HZ:g} Hz for the A-weighting "
            f"(normalised at {A_WEIGHTING_REFERENCE_HZ:g} Hz), got {sample_rate!r}"
        )
    f1, f2, f3, f4 = A_WEIGHTING_POLES_HZ
    poles = [-2 * math.pi * f for f in (f1, f1, f2, f3)]
    z, p, k = scipy.signal.bilinear_zpk([0.0] * 4, poles, 1.0, sr)
    low = scipy.signal.zpk2sos(z, p, k)

    pole = math.exp(-2 * math.pi * f4 / sr)
    a = np.array([1.0, -2.0 * pole, pole * pole])
    w = np.linspace(0.0, _A_WEIGHTING_FIT_FRACTION * math.pi, _GRID_POINTS)
    analog_power = 1.0 / (1.0 + np.square(w * sr / (2 * math.pi * f4))) ** 2
    _, a_response = scipy.signal.freqz(a, 1.0, worN=w)
    target = analog_power * np.abs(a_response) ** 2
    # |b0 + b1 z^-1 + b2 z^-2|^2 = r0 + 2 r1 cos(w) + 2 r2 cos(2w): linear in (r0, r1, r2).
    # Dividing each row by the target makes the fit minimise relative (dB-like) error.
    basis = np.stack([np.ones_like(w), 2 * np.cos(w), 2 * np.cos(2 * w)], axis=1)
    r, *_ = np.linalg.lstsq(basis / target[:, None], np.ones_like(w), rcond=None)
    roots = np.roots([r[2], r[1], r[0], r[1], r[2]])
    inside = roots[np.abs(roots) < 1.0]
    if len(inside) != 2:  # a non-positive fitted power would put roots on the unit circle
        raise RuntimeError(f"A-weighting fit failed at sample_rate={sr:g} Hz")
    b = np.real(np.poly(inside))  # its gain is set below, by the 1 kHz normalisation
    high = np.concatenate([b, a])[None, :]

    sos = np.concatenate([low, high], axis=0)
    _, h_ref = scipy.signal.sosfreqz(sos, worN=[A_WEIGHTING_REFERENCE_HZ], fs=sr)
    sos[0, :3] /= abs(h_ref[0])
    return sos


class AWeighting(nn.Module):
    """A-weighting pre-emphasis (IEC 61672-1): an IIR cascade run by ``diffx.functional.sosfilt``.

    Causal with zero initial state, like ``scipy.signal.sosfilt(a_weighting_sos(sr), x)``;
    0 dB at 1 kHz. See :func:`a_weighting_sos` for the design.

    Args:
        sample_rate: Hz, above 2 kHz.

    Shapes:
        input ``(batch, channels, samples)``; output the same.
    """

    sos: torch.Tensor

    def __init__(self, sample_rate: float):
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        sos = torch.from_numpy(a_weighting_sos(self.sample_rate))
        # Not persistent: the filter follows from sample_rate, so checkpoints need not hold it.
        self.register_buffer("sos", sos, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_audio(x, "x")
        return sosfilt(x, self.sos)

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate:g}"


def _stopband_peak_db(taps: np.ndarray, stopband_hz: float, sample_rate: float) -> float:
    freqs = np.linspace(stopband_hz, sample_rate / 2, _GRID_POINTS)
    _, h = scipy.signal.freqz(taps, 1.0, worN=freqs, fs=sample_rate)
    return float(20 * np.log10(np.abs(h).max() + 1e-300))


def antialias_lowpass_taps(
    sample_rate: float,
    passband_hz: float = 12000.0,
    stopband_hz: float = 16000.0,
    attenuation_db: float = 80.0,
) -> np.ndarray:
    """Kaiser-window linear-phase FIR low-pass, as used by Carson, Wright and Bilbao (2025).

    The cut-off is the middle of the transition band and the Kaiser ``beta`` comes from the
    attenuation (``scipy.signal.kaiser_beta``); the length starts at the Kaiser estimate
    (``scipy.signal.kaiserord``, rounded up to odd so the delay is a whole number of samples).
    That estimate misses the attenuation by up to about 1 dB (e.g. -79.7 dB with 57 taps at
    44.1 kHz), so the length grows two taps at a time until the measured stop-band peak is at
    or below ``-attenuation_db`` (63 taps at 44.1 kHz, 69 at 48 kHz for the defaults).

    Args:
        sample_rate: Hz.
        passband_hz: pass-band edge in Hz, ``0 < passband_hz < stopband_hz``.
        stopband_hz: stop-band edge in Hz, below Nyquist.
        attenuation_db: least stop-band attenuation in dB (positive).

    Returns:
        Odd-length symmetric float64 taps; the group delay is ``(len - 1) / 2`` samples.
    """
    sr = check_sample_rate(sample_rate)
    nyquist = sr / 2
    if not (stopband_hz < nyquist):
        raise ValueError(
            f"stopband_hz must be below Nyquist ({nyquist:g} Hz at sample_rate={sr:g}), "
            f"got {stopband_hz!r}"
        )
    if not (0 < passband_hz < stopband_hz):
        raise ValueError(
            f"passband_hz must be in (0, stopband_hz={stopband_hz:g}) Hz, got {passband_hz!r}"
        )
    if not (0 < attenuation_db < math.inf):
        raise ValueError(f"attenuation_db must be positive and finite, got {attenuation_db!r}")

    width = (stopband_hz - passband_hz) / nyquist
    num_taps, _ = scipy.signal.kaiserord(attenuation_db, width)
    num_taps += 1 - num_taps % 2
    beta = scipy.signal.kaiser_beta(attenuation_db)
    cutoff = (passband_hz + stopband_hz) / 2
    max_taps = 4 * num_taps + 101  # far beyond the ~10 % the Kaiser estimate ever needs
    while num_taps <= max_taps:
        taps = scipy.signal.firwin(num_taps, cutoff, window=("kaiser", beta), fs=sr)
        if _stopband_peak_db(taps, stopband_hz, sr) <= -attenuation_db:
            return taps
        num_taps += 2
    raise RuntimeError(
        f"no Kaiser low-pass up to {max_taps} taps reaches {attenuation_db:g} dB "
        f"(passband_hz={passband_hz:g}, stopband_hz={stopband_hz:g}, sample_rate={sr:g})"
    )


def _unfold_bytes_per_sample(kernel: torch.Tensor) -> int:
    """Bytes conv1d's unfolding takes per output sample: one value per tap."""
    return kernel.numel() * kernel.element_size()


def _fir_blocks(x: torch.Tensor, kernel: torch.Tensor, left: int, block_bytes: int):
    """``conv1d(x, kernel)`` of ``x (rows, samples)`` with ``left`` zeros before and
    ``taps - 1 - left`` after, so the output has ``samples`` samples; computed in blocks of
    rows and samples whose unfolding takes at most ``block_bytes``. Not differentiable."""
    rows, T = x.shape
    K = kernel.numel()  # taps
    row_runs, sample_runs = block_plan(rows, T, _unfold_bytes_per_sample(kernel), block_bytes)
    weight = kernel.view(1, 1, K)
    y = x.new_empty(rows, T)
    for r0, r1 in row_runs:
        padded = F.pad(x[r0:r1], (left, K - 1 - left))  # a copy of this run of rows only
        for a, b in sample_runs:
            # Output samples a..b-1 read padded samples a..b+K-2.
            y[r0:r1, a:b] = F.conv1d(padded[:, None, a : b + K - 1], weight)[:, 0]
    return y


class _BlockFIR(torch.autograd.Function):
    """FIR filtering in blocks (see :func:`_fir_blocks`); the kernel is a constant.

    The adjoint of "pad ``left`` before, correlate with ``kernel``" is "pad ``taps - 1 - left``
    before, correlate with the reversed kernel", so the backward pass is the same blockwise
    filter and saves nothing but the kernel.
    """

    @staticmethod
    def forward(ctx, x, kernel, left, block_bytes):  # type: ignore[override]
        ctx.save_for_backward(kernel)
        ctx.left, ctx.block_bytes = left, block_bytes
        return _fir_blocks(x, kernel, left, block_bytes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # type: ignore[override]
        (kernel,) = ctx.saved_tensors
        right = kernel.numel() - 1 - ctx.left
        grad_x = _fir_blocks(grad_y.contiguous(), kernel.flip(-1), right, ctx.block_bytes)
        return grad_x, None, None, None


class AntialiasLowpass(nn.Module):
    """Linear-phase Kaiser FIR low-pass, centred so the output lines up with the input.

    The filter of Carson, Wright and Bilbao (2025), applied to prediction and target so the
    loss ignores the band above ``stopband_hz``. Taps from :func:`antialias_lowpass_taps`.
    The group delay ``(taps - 1) / 2`` is removed (a ``"same"`` convolution with zeros beyond
    both ends), so the filter is zero-phase and non-causal by that many samples.

    Args:
        sample_rate: Hz.
        passband_hz: pass-band edge in Hz.
        stopband_hz: stop-band edge in Hz, below Nyquist.
        attenuation_db: least stop-band attenuation in dB.
        max_direct_bytes: inputs whose ``conv1d`` unfolding (rows x samples x taps values)
            takes at most this many bytes are filtered in one ``conv1d`` call; longer ones in
            blocks of samples, with the same result to float rounding and a peak of a few
            times the input. ``math.inf``: never chunk, 0: always.
        block_bytes: most bytes of unfolding per block when chunking.

    Shapes:
        input ``(batch, channels, samples)``; output the same.
    """

    taps: torch.Tensor

    def __init__(
        self,
        sample_rate: float,
        passband_hz: float = 12000.0,
        stopband_hz: float = 16000.0,
        attenuation_db: float = 80.0,
        *,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ):
        super().__init__()
        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)
        self.sample_rate = check_sample_rate(sample_rate)
        self.passband_hz = float(passband_hz)
        self.stopband_hz = float(stopband_hz)
        self.attenuation_db = float(attenuation_db)
        taps = antialias_lowpass_taps(
            self.sample_rate, self.passband_hz, self.stopband_hz, self.attenuation_db
        )
        self.delay = (len(taps) - 1) // 2
        self.register_buffer("taps", torch.from_numpy(taps), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_audio(x, "x")
        B, C, T = x.shape  # batch, channels, samples
        # conv1d correlates; flipping makes it a convolution (a no-op for symmetric taps, kept
        # so the code stays right for any taps). A few dozen taps: direct beats FFT here.
        kernel = self.taps.flip(-1).to(dtype=x.dtype, device=x.device)
        rows = x.reshape(B * C, T)
        # On the CPU, conv1d without a oneDNN kernel (float64) unfolds the whole batch into a
        # (taps x samples) matrix per row: 7.4 GB for (7, 2, 2^20) float64, 66x the input.
        if B * C * T * _unfold_bytes_per_sample(kernel) > self.max_direct_bytes:
            return _BlockFIR.apply(rows, kernel, self.delay, self.block_bytes).reshape(B, C, T)
        y = F.conv1d(rows.unsqueeze(1), kernel.view(1, 1, -1), padding=self.delay)
        return y.reshape(B, C, T)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate:g}, passband_hz={self.passband_hz:g}, "
            f"stopband_hz={self.stopband_hz:g}, attenuation_db={self.attenuation_db:g}, "
            f"taps={self.taps.numel()}"
        )


def make_pre_emphasis(
    name: str | None, sample_rate: float | None = None, **kwargs: float
) -> nn.Module:
    """Build a pre-emphasis filter from its short name, for configs.

    Args:
        name: ``"hp"`` (:class:`FirstOrderHighpass`), ``"aw"`` (:class:`AWeighting`), ``"lp"``
            (:class:`AntialiasLowpass`), or ``None``/``"none"`` for the identity.
        sample_rate: Hz; required by ``"aw"`` and ``"lp"``.
        **kwargs: passed to the class (e.g. ``coefficient=0.95`` for ``"hp"``,
            ``passband_hz=...`` for ``"lp"``).

    Returns:
        The filter module (``nn.Identity`` for ``None``).
    """
    if name is None or name == "none":
        if kwargs:
            raise ValueError(f"pre-emphasis None takes no arguments, got {sorted(kwargs)}")
        return nn.Identity()
    if name not in PRE_EMPHASIS_NAMES:
        raise ValueError(f"name must be one of {PRE_EMPHASIS_NAMES} or None, got {name!r}")
    if name == "hp":
        return FirstOrderHighpass(**kwargs)
    if sample_rate is None:
        raise ValueError(f"sample_rate is required for pre-emphasis {name!r}")
    if name == "aw":
        return AWeighting(sample_rate, **kwargs)
    return AntialiasLowpass(sample_rate, **kwargs)
