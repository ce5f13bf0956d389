"""DDSP synthesizers: a harmonic (additive) oscillator bank and time-varying filtered noise.

After J. Engel, L. Hantrakul, C. Gu and A. Roberts, "DDSP: Differentiable Digital Signal
Processing", ICLR 2020. Controls arrive at a frame rate (e.g. from a network) in linear units;
the conversion of raw network outputs (DDSP's ``exp_sigmoid``) belongs to the caller.
"""

from __future__ import annotations

import math

import scipy.fft
import torch

from diffx._validation import check_finite, check_sample_rate, wide_dtype
from diffx.kernels.harmonic import harmonic_sum

UPSAMPLE_METHODS = ("linear", "window")
# Added to the sum of the surviving harmonic weights before dividing: when every harmonic is
# above Nyquist (or all weights are zero) the distribution is 0 / EPS = 0 and the output silent,
# instead of 0 / 0 = NaN. Far below any weight a network produces.
HARMONIC_NORM_EPS = 1e-7
TWO_PI = 2.0 * math.pi


def _check_control(value: torch.Tensor, name: str, dims: int, nonnegative: bool) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor")
    if value.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(value.shape)}")
    check_finite(value.detach(), name)
    if nonnegative and bool((value < 0).any()):
        raise ValueError(f"{name} must be >= 0, got min {float(value.min()):.6g}")
    return value


def _linear_grid(n_frames: int, n_samples: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation of ``n_frames`` frames to ``n_samples`` samples, first frame on
    sample 0 and last on sample ``n_samples - 1``: each sample's left frame ``(n_samples,)``
    int64 and its weight towards the next frame ``(n_samples,)`` in float64 (in float32 the
    weights of long signals lose bits; a device without float64 is refused, see
    ``wide_dtype``). Equal counts give the identity and one frame its repetition (weights 0)."""
    wide = wide_dtype(torch.device(device), "the frame interpolation grid")
    if n_frames == n_samples or n_frames == 1:
        left = torch.arange(n_samples, device=device) * (n_frames > 1)
        return left, torch.zeros(n_samples, dtype=wide, device=device)
    pos = torch.linspace(0.0, n_frames - 1.0, n_samples, dtype=wide, device=device)
    left = pos.floor().clamp(max=n_frames - 2).long()
    return left, pos - left


def upsample_frames(frames: torch.Tensor, n_samples: int, method: str = "linear") -> torch.Tensor:
    """Upsample frame-rate controls to audio rate.

    Args:
        frames: ``(batch, frames, features)``.
        n_samples: output length.
        method: ``"linear"`` interpolates linearly with the first frame on sample 0 and the
            last on sample ``n_samples - 1`` (``align_corners=True``). ``"window"`` is DDSP's
            overlapping Hann windows: frame ``i`` sits on sample ``i * hop``,
            ``hop = n_samples / (frames - 1)`` (which must be an integer), and neighbouring
            frames cross-fade along a raised cosine (periodic Hann of ``2 * hop``, which sums to
            one); the last frame lies one sample past the end.

    Returns:
        ``(batch, n_samples, features)``.
    """
    B, F, K = frames.shape  # batch, frames, features
    if method not in UPSAMPLE_METHODS:
        raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS}, got {method!r}")
    if F == n_samples:
        return frames
    if F == 1:
        return frames.expand(B, n_samples, K)
    if method == "linear":
        # a + w (b - a) rather than (1 - w) a + w b: exact where neighbouring frames are equal,
        # so a constant f0 stays bit-exact (it decides which harmonics pass the Nyquist mask).
        left, w = _linear_grid(F, n_samples, frames.device)
        w = w.to(frames.dtype)[None, :, None]
        steps = frames[:, 1:] - frames[:, :-1]
        return torch.addcmul(frames.index_select(1, left), w, steps.index_select(1, left))
    channels_first = frames.transpose(1, 2).reshape(B * K, 1, F)
    if n_samples % (F - 1):
        raise ValueError(
            f'upsample="window" needs n_samples ({n_samples}) divisible by frames - 1 ({F - 1})'
        )
    hop = n_samples // (F - 1)
    window = torch.hann_window(2 * hop, periodic=True, dtype=frames.dtype, device=frames.device)
    # Overlap-add of one Hann window per frame is a transposed convolution with stride hop;
    # the window's peak (index hop) must land on sample i * hop, so trim hop from the start.
    out = torch.nn.functional.conv_transpose1d(channels_first, window.view(1, 1, -1), stride=hop)
    out = out[..., hop : hop + n_samples]
    return out.reshape(B, K, n_samples).transpose(1, 2)


# Block length of the phase accumulation (see ``_wrapped_phase_turns``).
PHASE_BLOCK = 512


def _frac(x: torch.Tensor) -> torch.Tensor:
    """``x mod 1`` with the identity as gradient (the whole turns removed are constants)."""
    return x - torch.floor(x.detach())


def _wrapped_phase_turns(increments: torch.Tensor) -> torch.Tensor:
    """Exclusive cumulative sum of per-sample phase increments (in turns), modulo one turn.

    A plain running sum grows to thousands of turns and its rounding error with it (in
    float64 ~1e-9 turns after a few seconds; float32 is useless beyond a few hundred turns).
    Summing within blocks of ``PHASE_BLOCK`` samples and carrying only the fractional part of
    each block's total keeps every partial sum below ``PHASE_BLOCK / 2`` turns, so the error
    stays below ~1e-11 turns for any length.

    Args:
        increments: ``(batch, samples)`` float64 phase increments ``f / sr`` (turns).

    Returns:
        ``(batch, samples)`` phase in turns, in [0, 1), starting at 0.
    """
    B, T = increments.shape  # batch, samples
    # Shift right by one sample first, so the inclusive sum below is the exclusive one.
    shifted = torch.nn.functional.pad(increments[:, :-1], (1, 0))
    n_blocks = -(-T // PHASE_BLOCK)
    padded = torch.nn.functional.pad(shifted, (0, n_blocks * PHASE_BLOCK - T))
    within = torch.cumsum(padded.view(B, n_blocks, PHASE_BLOCK), dim=-1)
    carried = torch.cumsum(_frac(within[..., -1]), dim=-1)  # (B, blocks), < blocks
    offsets = torch.nn.functional.pad(_frac(carried[:, :-1]), (1, 0))
    return _frac(within + offsets[..., None]).reshape(B, -1)[:, :T]


def harmonic_synth(
    f0_hz: torch.Tensor,
    amplitudes: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    sample_rate: float,
    n_samples: int | None = None,
    upsample: str = "linear",
) -> torch.Tensor:
    """Bank of harmonic sinusoids driven by frame-rate controls (DDSP's harmonic synthesizer).

    ``y[n] = a[n] * sum_k c_k[n] sin(k phi[n])``, ``phi[n] = 2 pi sum_{m < n} f0[m] / sr`` (the
    phase starts at 0; it is accumulated in float64 in blocks and wrapped to one turn, see
    ``_wrapped_phase_turns``, so it stays exact over long signals in float32 too). ``c_k`` is
    the harmonic distribution after zeroing, at each frame, every harmonic ``k`` with
    ``k * f0 >= sr / 2`` at that frame or either neighbouring frame, normalized to sum to 1
    (as DDSP, at frame rate), then linearly upsampled. Because f0 is interpolated linearly
    too, no harmonic ever sounds at or above Nyquist (nothing aliases); one that crosses it
    fades out over the preceding frame. ``a`` is the total amplitude.

    Controls are upsampled to audio rate by ``upsample_frames``: f0 and the harmonic
    distribution always linearly, the amplitudes by ``upsample`` (``"linear"``, or DDSP's
    ``"window"`` of overlapping Hann windows, which needs ``n_samples`` divisible by
    ``frames - 1``).

    Args:
        f0_hz: ``(batch, frames)`` fundamental frequency in Hz, ``>= 0``.
        amplitudes: ``(batch, frames)`` linear total amplitude, ``>= 0``.
        harmonic_distribution: ``(batch, frames, n_harmonics)`` non-negative weights.
        sample_rate: Hz.
        n_samples: output length; ``None`` means the controls are already at audio rate
            (``n_samples = frames``).
        upsample: ``"linear"`` or ``"window"`` for the amplitudes.

    Returns:
        ``(batch, 1, n_samples)`` audio.
    """
    sr = check_sample_rate(sample_rate)
    _check_control(f0_hz, "f0_hz", 2, nonnegative=True)
    _check_control(amplitudes, "amplitudes", 2, nonnegative=True)
    _check_control(harmonic_distribution, "harmonic_distribution", 3, nonnegative=True)
    B, F = f0_hz.shape  # batch, frames
    if amplitudes.shape != (B, F) or harmonic_distribution.shape[:2] != (B, F):
        raise ValueError(
            f"f0_hz {tuple(f0_hz.shape)}, amplitudes {tuple(amplitudes.shape)} and "
            f"harmonic_distribution {tuple(harmonic_distribution.shape)} must share "
            "(batch, frames)"
        )
    if upsample not in UPSAMPLE_METHODS:
        raise ValueError(f"upsample must be one of {UPSAMPLE_METHODS}, got {upsample!r}")
    n_samples = F if n_samples is None else int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    dtype = torch.promote_types(
        torch.promote_types(f0_hz.dtype, amplitudes.dtype), harmonic_distribution.dtype
    )
    H = harmonic_distribution.shape[-1]  # harmonics

    f0_frames = f0_hz.to(dtype)
    k = torch.arange(1, H + 1, dtype=dtype, device=f0_hz.device)
    # The Nyquist mask works at frame rate, on the highest f0 of each frame and its two
    # neighbours: f0 is interpolated linearly between frames, so a harmonic that crosses
    # Nyquist anywhere between frames i and i + 1 is off at both and stays exactly zero
    # throughout the segment (it fades out over the frame before instead of clicking off).
    nearby = f0_frames.detach()
    if F > 1:
        padded = torch.nn.functional.pad(nearby[:, None], (1, 1), mode="replicate")[:, 0]
        nearby = torch.maximum(torch.maximum(padded[:, :-2], padded[:, 2:]), nearby)
    audible = nearby[..., None] * k < sr / 2  # (B, F, H)
    dist = torch.where(audible, harmonic_distribution.to(dtype), 0.0)
    dist = dist / (dist.sum(dim=-1, keepdim=True) + HARMONIC_NORM_EPS)

    f0 = upsample_frames(f0_frames[..., None], n_samples, "linear")  # (B, T, 1)
    amp = upsample_frames(amplitudes.to(dtype)[..., None], n_samples, upsample)  # (B, T, 1)

    wide = wide_dtype(f0.device, "harmonic_synth's phase increments")
    turns = _wrapped_phase_turns(f0[..., 0].to(wide) / sr)
    # A convex combination of normalized frames stays normalized, so the distribution is
    # interpolated after normalizing, inside the harmonic sum: on the CPU a fused kernel that
    # never makes the (B, T, H) tensors and takes k * phase in float64 (diffx.kernels.harmonic);
    # elsewhere the same sum from tensor ops with the phase in the audio's dtype.
    left, w = _linear_grid(F, n_samples, f0.device)
    on_cpu = f0.device.type == "cpu"
    phase = TWO_PI * turns if on_cpu else (TWO_PI * turns).to(dtype)  # (B, T) in [0, 2 pi)
    y = amp[..., 0] * harmonic_sum(phase, dist, left, w).to(dtype)
    return y[:, None, :]


def _windowed_fir(magnitudes: torch.Tensor, window_size: int) -> torch.Tensor:
    """Zero-phase FIRs from magnitude responses, Hann-windowed and made causal.

    Args:
        magnitudes: ``(..., n_bands)`` linear magnitudes on ``n_bands`` bins from DC to
            Nyquist.
        window_size: odd number of taps kept, at most ``2 * (n_bands - 1) - 1``.

    Returns:
        ``(..., window_size)`` causal FIRs whose centre tap (delay ``(window_size - 1) / 2``)
        is the zero-phase response's tap 0.
    """
    n_fft = 2 * (magnitudes.shape[-1] - 1)
    zero_phase = torch.fft.irfft(magnitudes, n=n_fft)  # symmetric around tap 0 (circularly)
    half = (window_size - 1) // 2
    # Taps -half..half of the circular zero-phase response, in order.
    causal = torch.cat([zero_phase[..., n_fft - half :], zero_phase[..., : half + 1]], dim=-1)
    # Symmetric Hann whose peak (1) is the centre tap; the +2 keeps the end taps non-zero.
    window = torch.hann_window(window_size + 2, periodic=False, dtype=magnitudes.dtype)[1:-1]
    return causal * window.to(magnitudes.device)


def filtered_noise(
    magnitudes: torch.Tensor,
    n_samples: int,
    window_size: int | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Uniform noise through time-varying FIR filters (DDSP's filtered-noise synthesizer).

    Each frame's magnitude response becomes a linear-phase FIR (inverse FFT to a zero-phase
    response, a Hann window of ``window_size`` taps, shifted to be causal, as DDSP's
    ``frequency_filter``), which filters that frame's block of ``hop = n_samples / frames``
    noise samples; the filtered blocks, each ``hop + window_size - 1`` long, are overlap-added.
    The output is delayed by ``(window_size - 1) / 2`` samples relative to a zero-phase filter.

    A flat magnitude ``m`` gives white noise of variance ``m**2 / 3`` (the variance of uniform
    noise in [-1, 1]).

    Args:
        magnitudes: ``(batch, frames, n_bands)`` linear magnitudes ``>= 0`` on ``n_bands``
            (``>= 2``) frequencies evenly spaced from DC to Nyquist.
        n_samples: output length, a multiple of ``frames``.
        window_size: odd FIR length, at most ``2 * (n_bands - 1) - 1`` (the default).
        generator: source of the noise (``torch.rand``), for reproducibility.
        noise: optional ``(batch, 1, n_samples)`` noise to filter instead of drawing it.

    Returns:
        ``(batch, 1, n_samples)`` audio.
    """
    _check_control(magnitudes, "magnitudes", 3, nonnegative=True)
    B, F, K = magnitudes.shape  # batch, frames, bands
    if K < 2:
        raise ValueError(f"magnitudes needs at least 2 bands, got {K}")
    n_samples = int(n_samples)
    if n_samples < F or n_samples % F:
        raise ValueError(f"n_samples ({n_samples}) must be a positive multiple of frames ({F})")
    max_window = 2 * (K - 1) - 1
    window_size = max_window if window_size is None else int(window_size)
    if window_size < 1 or window_size > max_window or window_size % 2 == 0:
        raise ValueError(f"window_size must be odd and in [1, {max_window}], got {window_size}")
    hop = n_samples // F
    if noise is None:
        gen_device = generator.device if generator is not None else magnitudes.device
        noise = torch.rand(B, 1, n_samples, generator=generator, device=gen_device)
        noise = (2.0 * noise - 1.0).to(device=magnitudes.device, dtype=magnitudes.dtype)
    elif not isinstance(noise, torch.Tensor) or noise.shape != (B, 1, n_samples):
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be shaped ({B}, 1, {n_samples}), got {shape}")
    else:
        check_finite(noise.detach(), "noise")

    dtype = torch.promote_types(magnitudes.dtype, noise.dtype)
    firs = _windowed_fir(magnitudes.to(dtype), window_size)  # (B, F, W)
    blocks = noise.to(dtype).reshape(B, F, hop)
    seg = hop + window_size - 1
    n_fft = scipy.fft.next_fast_len(seg, real=True)
    spec = torch.fft.rfft(blocks, n=n_fft) * torch.fft.rfft(firs, n=n_fft)
    filtered = torch.fft.irfft(spec, n=n_fft)[..., :seg]  # (B, F, seg)
    # Overlap-add with stride hop: fold is the adjoint of unfold and differentiable.
    out = torch.nn.functional.fold(
        filtered.transpose(1, 2),
        output_size=(1, (F - 1) * hop + seg),
        kernel_size=(1, seg),
        stride=(1, hop),
    )
    return out.reshape(B, 1, -1)[..., :n_samples]
