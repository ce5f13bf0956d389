"""Convolution reverb and a differentiable noise-shaped multiband reverb.

The noise reverb follows the idea of C. J. Steinmetz, N. J. Bryan and J. D. Reiss, "Style
transfer of audio effects with differentiable signal processing", JAES 70(9), 2022 (also in
dasp-pytorch): an impulse response made of noise split into frequency bands, each band with
its own exponential decay and gain. This implementation is written from that description:
white Gaussian noise is split by a filterbank of FFT-domain masks with raised-cosine
crossovers in log frequency that sum exactly to one, so with equal settings in every band the
IR is the unfiltered noise under one envelope. Each band decays by 60 dB in its ``rt60_s``.
"""

from __future__ import annotations

import math

import torch

from diffx._validation import as_param, check_audio, check_finite, check_sample_rate, wide_dtype
from diffx.functional.utility import db_to_amplitude, fft_convolve

# Accepted ranges. RT60 below 1 ms is shorter than a few samples at any audio rate; above
# 100 s the IR would need millions of taps. Band gains beyond +-120 dB are outside any
# meaningful mix and keep 10 ** (g / 20) well inside float32.
MIN_RT60_S = 1e-3
MAX_RT60_S = 100.0
MAX_ABS_BAND_GAIN_DB = 120.0
DEFAULT_N_BANDS = 8
# Lowest crossover of the default filterbank (Hz); the highest defaults to
# min(DEFAULT_HIGH_CROSSOVER_HZ, sample_rate / 4).
DEFAULT_LOW_CROSSOVER_HZ = 100.0
DEFAULT_HIGH_CROSSOVER_HZ = 8000.0
# ln(10 ** (60 / 20)): an envelope exp(-LN_1000 * t / rt60) falls by 60 dB at t = rt60.
LN_1000 = math.log(1000.0)
# Seed of the noise used when no generator is given, so the IR is a deterministic function of
# its parameters (a fixed target for training and reproducible runs).
DEFAULT_NOISE_SEED = 0


def convolution_reverb(
    x: torch.Tensor, ir: torch.Tensor, mix: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Convolve audio with an impulse response and mix it with the dry signal.

    ``y = (1 - mix) * x + mix * (x * ir)`` where ``*`` is linear convolution truncated to the
    input length (the reverb tail past the end is dropped).

    Args:
        x: ``(batch, channels, samples)`` dry audio.
        ir: ``(batch or 1, channels or 1, taps)`` impulse response(s); a mono IR is applied to
            every channel, a batch of one to every item.
        mix: ``(batch,)`` or scalar wet fraction in [0, 1]; 0 returns ``x`` exactly.

    Returns:
        ``(batch, channels, samples)`` audio (channels broadcast between ``x`` and ``ir``).
    """
    check_audio(x, "x")
    check_audio(ir, "ir")
    B, C, T = x.shape  # batch, channels, samples
    if ir.shape[0] not in (1, B) or (ir.shape[1] not in (1, C) and C != 1):
        raise ValueError(
            f"ir must be shaped (batch or 1, channels or 1, taps) = ({B} or 1, {C} or 1, taps), "
            f"got {tuple(ir.shape)}"
        )
    m = as_param(mix, "mix", B, x, 0.0, 1.0)[:, None, None]
    wet = fft_convolve(x, ir, mode="causal")
    return (1.0 - m) * x + m * wet


def _band_param(
    value: torch.Tensor | float,
    name: str,
    batch_size: int,
    n_bands: int,
    like: torch.Tensor,
    low: float,
    high: float,
) -> torch.Tensor:
    """Broadcast a scalar, ``(batch,)`` or ``(batch, bands)`` parameter to ``(batch, bands)``."""
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        t = value.to(dtype=like.dtype, device=like.device)
        if t.shape[0] not in (1, batch_size) or t.shape[1] != n_bands:
            raise ValueError(
                f"{name} must be shaped (batch, bands) = ({batch_size}, {n_bands}), (batch,) or "
                f"scalar, got shape {tuple(t.shape)}"
            )
        check_finite(t.detach(), name)
        if bool((t < low).any()) or bool((t > high).any()):
            lo, hi = float(t.min()), float(t.max())
            raise ValueError(f"{name} must lie in [{low}, {high}], got {lo:.6g}..{hi:.6g}")
        return t.expand(batch_size, n_bands)
    return as_param(value, name, batch_size, like, low, high)[:, None].expand(-1, n_bands)


def _infer_n_bands(*values, n_bands: int | None) -> int:
    """Number of bands: the last dimension of the 2-D parameters, else ``n_bands``."""
    sizes = {int(v.shape[-1]) for v in values if isinstance(v, torch.Tensor) and v.dim() == 2}
    if n_bands is not None:
        sizes.add(int(n_bands))
    if len(sizes) > 1:
        raise ValueError(
            f"band parameters and n_bands disagree on the number of bands: {sorted(sizes)}"
        )
    return sizes.pop() if sizes else DEFAULT_N_BANDS


def crossover_frequencies(
    n_bands: int,
    sample_rate: float,
    low_crossover_hz: float = DEFAULT_LOW_CROSSOVER_HZ,
    high_crossover_hz: float | None = None,
) -> list[float]:
    """The ``n_bands - 1`` crossover frequencies (Hz), log-spaced from low to high."""
    sr = check_sample_rate(sample_rate)
    if n_bands < 1:
        raise ValueError(f"n_bands must be >= 1, got {n_bands}")
    if high_crossover_hz is None:
        high_crossover_hz = min(DEFAULT_HIGH_CROSSOVER_HZ, sr / 4.0)
    if not (0 < low_crossover_hz <= high_crossover_hz < sr / 2):
        raise ValueError(
            "crossovers must satisfy 0 < low_crossover_hz <= high_crossover_hz < sample_rate / 2,"
            f" got {low_crossover_hz}, {high_crossover_hz} at {sr} Hz"
        )
    if n_bands == 1:
        return []
    if n_bands == 2:
        return [math.sqrt(low_crossover_hz * high_crossover_hz)]
    ratio = high_crossover_hz / low_crossover_hz
    return [low_crossover_hz * ratio ** (i / (n_bands - 2)) for i in range(n_bands - 1)]


def band_masks(
    n_bins: int,
    sample_rate: float,
    crossovers_hz: list[float],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Amplitude masks of the filterbank on ``n_bins`` rfft bins from DC to Nyquist.

    Each crossover is a raised-cosine step in log frequency, half as wide (in octaves) as the
    spacing between crossovers (one octave for a single crossover); band ``k`` is the
    difference of consecutive steps, so the masks are non-negative and sum to exactly one.

    Returns:
        ``(bands, n_bins)`` masks, ``bands = len(crossovers_hz) + 1``.
    """
    # float64 (the masks of long IRs have closely spaced bins in log frequency near DC).
    wide = wide_dtype(device or "cpu", "band_masks' filterbank masks")
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_bins, dtype=wide, device=device)
    if not crossovers_hz:
        return torch.ones(1, n_bins, dtype=dtype, device=device)
    log_c = torch.tensor([math.log2(c) for c in crossovers_hz], dtype=wide, device=device)
    width = float(log_c[1] - log_c[0]) / 2.0 if len(crossovers_hz) > 1 else 1.0
    # log2(0) = -inf at DC is fine: the clamp below sends it to the bottom of every step.
    log_f = torch.log2(freqs)
    pos = ((log_f[None, :] - log_c[:, None]) / width + 0.5).clamp(0.0, 1.0)
    steps = 0.5 - 0.5 * torch.cos(math.pi * pos)  # (crossovers, bins), 0 below, 1 above
    ones = torch.ones(1, n_bins, dtype=wide, device=device)
    zeros = torch.zeros(1, n_bins, dtype=wide, device=device)
    upper = torch.cat([ones, steps], dim=0)
    lower = torch.cat([steps, zeros], dim=0)
    return (upper - lower).to(dtype)


def _noise_bands(
    n_channels: int,
    length: int,
    masks: torch.Tensor,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """White Gaussian noise ``(channels, length)`` split into ``(channels, bands, length)``."""
    if generator is None:
        generator = torch.Generator(device="cpu").manual_seed(DEFAULT_NOISE_SEED)
    gen_device = generator.device
    noise = torch.randn(
        n_channels,
        length,
        generator=generator,
        dtype=wide_dtype(gen_device, "noise_reverb_ir's noise"),
        device=gen_device,
    )
    # The bands are split in float64 on the IR's device, then rounded once to its dtype.
    noise = noise.to(device, wide_dtype(device, "noise_reverb_ir's noise bands"))
    # Circular filtering keeps each band stationary over the whole IR (no filter start-up).
    spec = torch.fft.rfft(noise, n=length)[:, None, :] * masks.to(device)[None]
    return torch.fft.irfft(spec, n=length).to(dtype)


def noise_reverb_ir(
    rt60_s: torch.Tensor | float,
    band_gains_db: torch.Tensor | float,
    sample_rate: float,
    length: int,
    n_bands: int | None = None,
    n_channels: int = 1,
    batch_size: int | None = None,
    low_crossover_hz: float = DEFAULT_LOW_CROSSOVER_HZ,
    high_crossover_hz: float | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A noise-shaped, exponentially decaying multiband impulse response.

    ``ir[b, c, t] = sum_k g[b, k] * s[b, k] * exp(-ln(1000) t / (sr rt60[b, k])) * n_k[c, t]``,
    where ``n_k`` is band ``k`` of white Gaussian noise (unit variance, one independent draw
    per channel, shared by the batch) and ``s = sqrt(1 - exp(-2 ln(1000) / (sr rt60)))``
    normalizes the envelope to unit energy, so ``band_gains_db`` sets each band's energy and
    ``rt60_s`` only its decay: with 0 dB in every band the IR has energy close to 1.

    Args:
        rt60_s: 60 dB decay time in seconds per band, ``(batch, bands)``, ``(batch,)`` or
            scalar, in ``[MIN_RT60_S, MAX_RT60_S]``.
        band_gains_db: band gains in dB, same shapes, within ``+-MAX_ABS_BAND_GAIN_DB``.
        sample_rate: Hz.
        length: IR length in samples.
        n_bands: number of bands when neither parameter is 2-D (default ``DEFAULT_N_BANDS``).
        n_channels: independent noise channels (decorrelated stereo for 2).
        batch_size: batch size when neither parameter is a tensor with a batch dimension.
        low_crossover_hz, high_crossover_hz: lowest and highest crossover (Hz); the others are
            log-spaced between (see ``crossover_frequencies``).
        generator: source of the noise; ``None`` uses a fixed seed (``DEFAULT_NOISE_SEED``) so
            the IR depends only on its parameters.
        dtype, device: of the result when no parameter is a tensor (default float32, CPU).

    Returns:
        ``(batch, n_channels, length)`` impulse responses.
    """
    sr = check_sample_rate(sample_rate)
    if int(length) != length or length < 1:
        raise ValueError(f"length must be a positive number of samples, got {length}")
    length = int(length)
    if n_channels < 1:
        raise ValueError(f"n_channels must be >= 1, got {n_channels}")
    tensors = [v for v in (rt60_s, band_gains_db) if isinstance(v, torch.Tensor)]
    if dtype is None:
        floats = [v.dtype for v in tensors if v.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    if device is None:
        device = tensors[0].device if tensors else "cpu"
    like = torch.empty(0, dtype=dtype, device=device)
    n_bands = _infer_n_bands(rt60_s, band_gains_db, n_bands=n_bands)
    if batch_size is None:
        batch_size = max([int(v.shape[0]) for v in tensors if v.dim() >= 1] + [1])
    rt60 = _band_param(rt60_s, "rt60_s", batch_size, n_bands, like, MIN_RT60_S, MAX_RT60_S)
    gains = _band_param(
        band_gains_db,
        "band_gains_db",
        batch_size,
        n_bands,
        like,
        -MAX_ABS_BAND_GAIN_DB,
        MAX_ABS_BAND_GAIN_DB,
    )
    crossovers = crossover_frequencies(n_bands, sr, low_crossover_hz, high_crossover_hz)
    masks = band_masks(length // 2 + 1, sr, crossovers, device=like.device)
    bands = _noise_bands(n_channels, length, masks, generator, like.dtype, like.device)

    rate = LN_1000 / (rt60 * sr)  # (batch, bands) amplitude decay per sample (nepers)
    t = torch.arange(length, dtype=like.dtype, device=like.device)
    # -expm1 keeps the normalization accurate when the decay per sample is tiny (long RT60).
    scale = db_to_amplitude(gains) * torch.sqrt(-torch.expm1(-2.0 * rate))
    envelopes = scale[..., None] * torch.exp(-rate[..., None] * t)  # (batch, bands, length)
    return torch.einsum("bkt,ckt->bct", envelopes, bands)


def noise_reverb(
    x: torch.Tensor,
    sample_rate: float,
    rt60_s: torch.Tensor | float,
    band_gains_db: torch.Tensor | float = 0.0,
    mix: torch.Tensor | float = 0.5,
    length_s: float = 1.0,
    n_bands: int | None = None,
    low_crossover_hz: float = DEFAULT_LOW_CROSSOVER_HZ,
    high_crossover_hz: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reverberate audio with a noise-shaped multiband IR (see ``noise_reverb_ir``).

    Each channel of ``x`` gets its own noise draw, so a stereo input gets a decorrelated
    stereo reverb.

    Args:
        x: ``(batch, channels, samples)`` dry audio.
        sample_rate: Hz.
        rt60_s: ``(batch, bands)``, ``(batch,)`` or scalar 60 dB decay time per band (s).
        band_gains_db: ``(batch, bands)``, ``(batch,)`` or scalar band gains (dB).
        mix: ``(batch,)`` or scalar wet fraction in [0, 1]; 0 returns ``x`` exactly.
        length_s: IR length in seconds.
        n_bands: bands when neither band parameter is 2-D (default ``DEFAULT_N_BANDS``).
        low_crossover_hz, high_crossover_hz: filterbank range, as in ``noise_reverb_ir``.
        generator: noise source; ``None`` uses a fixed seed.

    Returns:
        ``(batch, channels, samples)`` audio.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    B, C, T = x.shape  # batch, channels, samples
    if not (length_s > 0 and math.isfinite(length_s)):
        raise ValueError(f"length_s must be a positive number of seconds, got {length_s}")
    length = max(1, round(length_s * sr))
    ir = noise_reverb_ir(
        rt60_s,
        band_gains_db,
        sr,
        length,
        n_bands=n_bands,
        n_channels=C,
        batch_size=B,
        low_crossover_hz=low_crossover_hz,
        high_crossover_hz=high_crossover_hz,
        generator=generator,
        dtype=x.dtype,
        device=x.device,
    )
    return convolution_reverb(x, ir, mix)
