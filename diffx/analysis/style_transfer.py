"""Audio-effect style transfer: descriptors, evaluation metrics and a rule-based baseline.

Style transfer in the sense of Steinmetz, Bryan and Reiss ("Style transfer of audio effects
with differentiable signal processing", JAES 2022, DeepAFx-ST): given an input and a reference
recording, predict the parameters of an effect chain (here a 6-band parametric EQ, then a
compressor) so that the processed input sounds like the reference. This module measures how
close an output is to a target, and provides the paper's classical baseline to compare trained
models against:

- :func:`spectral_centroid_hz` and :func:`crest_factor_db`, the two descriptors of spectral
  balance and of dynamics;
- :func:`style_metrics` (multi-resolution STFT distance, loudness, centroid and crest-factor
  errors) and :func:`parameter_error` (mean absolute error of normalized parameters);
- :func:`rule_based_match`: loudness matching, an EQ fitted to the reference's average
  spectrum and a compressor set from its crest factor, returning the normalized parameters of
  ``EffectChain([ParametricEQ(sample_rate), Compressor(sample_rate)])`` (default ranges) so its
  physical values print the same way as a trained model's.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from diffx import functional as F
from diffx._validation import check_audio, check_integer, check_sample_rate, wide_dtype
from diffx.effects.base import Effect
from diffx.effects.processors import Compressor, ParametricEQ
from diffx.losses.loudness import BLOCK_S, CHANNEL_WEIGHTS, SILENCE_LUFS, pyloudnorm_loudness
from diffx.losses.spectral import MultiResolutionSTFTLoss

# ------------------------------------------------------------------------ rule-based baseline
#: Welch analysis window of the EQ fit, in seconds; the FFT length is the next power of two
#: (4096 samples at 24 kHz, 8192 at 44.1 or 48 kHz): bins under 6 Hz apart, fine enough to
#: resolve the low shelf's transition around its 100 Hz default. Hann, 50 % overlap.
WELCH_WINDOW_S = 0.1

#: Width of the spectral smoothing (full width at half maximum of a Gaussian in log frequency),
#: in octaves: the usual 1/3-octave smoothing, narrower than any band of the EQ at its default
#: Q of 0.707 (about 1.9 octaves between the -3 dB points), so it never hides what the EQ can fit.
SMOOTHING_OCTAVES = 1.0 / 3.0

#: Points of the log-frequency grid on which the EQ is fitted, from :data:`FIT_MIN_HZ` to
#: ``min(FIT_MAX_HZ, 0.45 sample_rate)`` (0.45 sample_rate is the PEQ's own frequency ceiling).
FIT_POINTS = 256
FIT_MIN_HZ = 20.0
FIT_MAX_HZ = 20000.0

#: Grid points where either smoothed spectrum lies more than this many dB below its own maximum
#: get no weight in the fit. About the dynamic range of 16-bit audio, so only rounding noise and
#: digital silence are ignored; 60 dB would drop the quiet top octaves of dark recordings, where
#: the high shelf acts (guitar_clean at 24 kHz lies 60-90 dB down above 5 kHz).
FIT_RANGE_DB = 100.0

#: The target EQ curve (the level-free dB ratio of the spectra) is limited to +-24 dB, the
#: gain range of the EQ's bands.
TARGET_LIMIT_DB = 24.0

#: Ridge (Tikhonov) penalty on the band gains, in two parts. The relative part adds this
#: fraction of each gain's own curvature in the fit (the diagonal of the Gauss-Newton normal
#: matrix, as in Levenberg-Marquardt scaling), so a gain is shrunk by about the same fraction
#: whether its band covers many grid points or few (the 8 kHz high shelf covers few at 24 kHz).
#: The absolute part (dB^-2, times the summed grid weights) keeps a gain that nothing in the
#: spectra determines at 0 dB: a band where neither signal has energy, or the split between
#: the 8 kHz peaking band and the 8 kHz high shelf (both at their defaults), which act alike.
#: Chosen on 21 random 6-band EQ matches (gains uniform in +-9 dB) of seven demo recordings at
#: 24 kHz: the mean gain error is 3.2 dB with the reference cut 0.5 s later than the input (the
#: recordings' own spectra differ that much) and 1.2 dB with the same cut; weaker ridges let
#: the gains drift into boosts of every band offset by a cut of level, stronger ones shrink them.
GAIN_RIDGE_RELATIVE = 0.03
GAIN_RIDGE_ABSOLUTE = 1e-3

#: Power floor of the average spectra, relative to their maximum (-200 dB): keeps the logarithm
#: finite; far below :data:`FIT_RANGE_DB`, so it never changes a weighted point.
SPECTRUM_FLOOR = 1e-20

#: Crest factors differing by less than this (dB) are left alone (compressor ratio 1): so
#: small a reduction would need a ratio barely above 1, and leaving the compressor off keeps
#: a reference equal to the input an exact identity when the EQ moves the crest factor a hair.
CREST_TOLERANCE_DB = 0.5

#: Ballistics and knee of the baseline's compressor. The crest factor is set by sample peaks,
#: and diffx's compressor detects the level per sample, so only the fastest attack of the
#: Compressor's range (0.1 ms) brings those peaks down: at 1 ms the first milliseconds of each
#: transient pass before the gain falls, and compressing harder raises the crest factor instead
#: (guitar_clean at 24 kHz, 13.1 dB: threshold 10 dB under its RMS level, 1 ms attack, ratio
#: 1.5 -> 12.1 dB but ratio 20 -> 15.3 dB; with 0.1 ms, 11.2 dB -> 8.8 dB). The release is long
#: enough not to follow the waveform of low notes (an 82 Hz E has 12 ms periods); the knee is
#: a 6 dB soft knee.
ATTACK_MS = 0.1
RELEASE_MS = 100.0
KNEE_DB = 6.0

#: Added to the diagonal of the fit's normal equations, so that they stay solvable for an item
#: with no weighted grid point (it then keeps 0 dB gains).
_SOLVE_EPS = 1e-9

#: Step of the central differences that give the EQ fit its Jacobian, dB: in float64 the
#: derivative is then exact to about 1e-8 dB per dB (rounding and truncation both).
_GAIN_STEP_DB = 1e-3

#: Bisection steps on log(ratio) between 1 and the ratio's maximum (20): 10 steps set the ratio
#: to within a factor of 20 ** (1 / 2048), far below what the crest factor can resolve.
RATIO_SEARCH_STEPS = 10


def _check_measurable(x: torch.Tensor, name: str, sample_rate: float, minimum: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless BS.1770 can measure ``x``: at most 5 channels and
    at least ``minimum`` samples (one 400 ms gating block, or more)."""
    if x.shape[1] > len(CHANNEL_WEIGHTS):
        raise ValueError(
            f"{name} has {x.shape[1]} channels; loudness is measured for at most "
            f"{len(CHANNEL_WEIGHTS)} ([L, R, C, Ls, Rs])"
        )
    if x.shape[-1] < minimum:
        raise ValueError(
            f"{name} has {x.shape[-1]} samples; at least {minimum} ({minimum / sample_rate:.3g} s "
            f"at {sample_rate:g} Hz) are needed"
        )


def _safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0, with finite gradients everywhere."""
    positive = den > 0
    return torch.where(positive, num / torch.where(positive, den, torch.ones_like(den)), 0.0)


def spectral_centroid_hz(
    x: torch.Tensor, sample_rate: float, n_fft: int = 2048, hop_length: int = 512
) -> torch.Tensor:
    """Spectral centroid: the magnitude-weighted mean frequency, averaged over the clip.

    For each STFT frame (Hann window of ``n_fft`` samples, ``hop_length`` apart, zero padding
    of ``n_fft // 2`` at both ends so every sample is covered) the centroid is
    ``sum_k f_k |X_k| / sum_k |X_k|`` over the one-sided bins. The clip's centroid is the mean of
    the frames' centroids weighted by the frames' energies ``sum_k |X_k|^2``, so quiet frames
    (fades, the noise between notes) count little. Channels are combined through their mean
    power per bin (``|X_k|^2`` averaged over channels), so channels in opposite phase do not
    cancel. A silent frame has no weight, and a silent item reads 0 Hz (not NaN).

    Args:
        x: ``(batch, channels, samples)`` audio.
        sample_rate: Hz.
        n_fft: STFT frame length, samples (>= 2).
        hop_length: STFT hop, samples (>= 1).

    Returns:
        ``(batch,)`` centroid in Hz, the dtype of ``x``; differentiable in ``x``.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    n_fft = check_integer(n_fft, "n_fft", 2)
    hop_length = check_integer(hop_length, "hop_length", 1)
    B, C, T = x.shape  # batch, channels, samples
    window = torch.hann_window(n_fft, dtype=x.dtype, device=x.device)
    spec = torch.stft(x.reshape(B * C, T), n_fft, hop_length, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # fmt: skip
    power = spec.abs().square().reshape(B, C, *spec.shape[-2:]).mean(dim=1)  # (B, bins, frames)
    magnitude = power.sqrt()
    freqs = torch.linspace(0, sr / 2, power.shape[1], dtype=x.dtype, device=x.device)
    frame_centroid = _safe_ratio(torch.einsum("k,bkf->bf", freqs, magnitude), magnitude.sum(1))
    frame_energy = power.sum(1)
    return _safe_ratio((frame_energy * frame_centroid).sum(-1), frame_energy.sum(-1))


def crest_factor_db(x: torch.Tensor) -> torch.Tensor:
    """Crest factor ``20 log10(peak / RMS)`` per item, over all channels and samples.

    A sine reads 3.0103 dB (when a sample falls on its peak), a square wave 0 dB, white noise
    typically 10-15 dB, a hard-limited mix a few dB. A silent item reads 0 dB (not NaN). The
    signal is divided by its peak before squaring, so tiny signals do not underflow.

    Args:
        x: ``(batch, channels, samples)`` audio.

    Returns:
        ``(batch,)`` crest factor in dB (>= 0), the dtype of ``x``; differentiable in ``x``
        (almost everywhere: the peak is a maximum).
    """
    check_audio(x, "x")
    peak = x.abs().amax(dim=(1, 2))
    silent = peak == 0
    scale = torch.where(silent, 0.0, 1.0 / torch.where(silent, 1.0, peak))
    mean_square = (x * scale[:, None, None]).square().mean(dim=(1, 2))
    return torch.where(silent, 0.0, -10 * torch.log10(torch.where(silent, 1.0, mean_square)))


#: Floor of :func:`side_to_mid_db`: a mono mix (no side) reads -60 dB instead of -inf.
SIDE_TO_MID_FLOOR_DB = -60.0


def side_to_mid_db(x: torch.Tensor) -> torch.Tensor:
    """Stereo width as the energy of the side over the mid, ``10 log10(E_S / E_M)`` per item.

    With ``M = (L + R) / 2`` and ``S = (L - R) / 2``: a mono mix (L = R) reads the floor
    :data:`SIDE_TO_MID_FLOOR_DB` = -60 dB, uncorrelated channels of equal level 0 dB, a
    polarity-inverted pair (L = -R) the ceiling +60 dB; a width of ``w``
    (:func:`diffx.functional.stereo_width`) adds ``20 log10 w`` dB.

    Args:
        x: ``(batch, 2, samples)`` stereo audio [left, right].

    Returns:
        ``(batch,)`` dB in [-60, 60]; silence reads the floor.
    """
    check_audio(x, "x")
    if x.shape[1] != 2:
        raise ValueError(f"side_to_mid_db needs stereo x (batch, 2, samples), got {x.shape[1]}")
    mid = (x[:, 0] + x[:, 1]).square().sum(-1)
    side = (x[:, 0] - x[:, 1]).square().sum(-1)
    floor = 10.0 ** (SIDE_TO_MID_FLOOR_DB / 10.0)
    ratio = side / torch.clamp(mid, min=torch.finfo(mid.dtype).tiny)
    # No mid: all side (the ceiling) unless there is no side either (silence: the floor).
    no_mid = torch.where(side > 0, 1.0 / floor, floor).to(ratio.dtype)
    ratio = torch.where(mid > 0, ratio, no_mid).clamp(floor, 1.0 / floor)
    return 10.0 * torch.log10(ratio)


def _finite_loudness(x: torch.Tensor, sample_rate: float) -> np.ndarray:
    """pyloudnorm's integrated loudness, with ``-inf`` (nothing above the gates) at the floor."""
    lufs = pyloudnorm_loudness(x, sample_rate)
    return np.where(np.isfinite(lufs), lufs, SILENCE_LUFS)


@torch.no_grad()
def style_metrics(
    output: torch.Tensor, target: torch.Tensor, sample_rate: float
) -> dict[str, torch.Tensor]:
    """Per-item distances between a processed output and its target, as in DeepAFx-ST.

    - ``mrstft``: ``auraloss.freq.MultiResolutionSTFTLoss`` with auraloss's defaults (FFT
      sizes 1024, 2048, 512; spectral convergence + log-magnitude L1), computed for each item
      alone (see :class:`diffx.losses.MultiResolutionSTFTLoss`, ``reduction="none"``).
    - ``lufs_error_lu``: ``|L(output) - L(target)|``, integrated loudness (ITU-R BS.1770-4)
      measured by pyloudnorm with its default K-weighting. Where pyloudnorm reads ``-inf``
      (no 400 ms block above the -70 LUFS gate, e.g. silence), the value is replaced by
      :data:`diffx.losses.loudness.SILENCE_LUFS` (-120.691 LUFS), so two silent signals differ
      by 0 LU and silence against a -20 LUFS target by about 100 LU, never NaN.
    - ``centroid_error_hz``: ``|centroid(output) - centroid(target)|``, see
      :func:`spectral_centroid_hz` (default STFT settings).
    - ``crest_error_db``: ``|crest(output) - crest(target)|``, see :func:`crest_factor_db`.
    - ``width_error_db`` (stereo pairs only): ``|side_to_mid_db(output) -
      side_to_mid_db(target)|``, see :func:`side_to_mid_db`.

    Evaluation only: nothing here is differentiated (it runs under ``torch.no_grad``).

    Args:
        output: ``(batch, channels, samples)`` processed audio, at most 5 channels.
        target: the same shape, the target (e.g. the input processed with the true parameters).
        sample_rate: Hz.

    Returns:
        ``{"mrstft", "lufs_error_lu", "centroid_error_hz", "crest_error_db"}``, each ``(batch,)``
        in the dtype and on the device of ``output``.

    Raises:
        ValueError: the shapes differ, either holds NaN/Inf, or the clips are shorter than one
            400 ms loudness block or than auraloss's largest FFT (2048 samples).
    """
    check_audio(output, "output")
    check_audio(target, "target")
    if output.shape != target.shape:
        raise ValueError(
            f"output {tuple(output.shape)} and target {tuple(target.shape)} differ in shape"
        )
    sr = check_sample_rate(sample_rate)
    mrstft = MultiResolutionSTFTLoss(reduction="none")
    minimum = max(round(BLOCK_S * sr), mrstft.min_samples)
    _check_measurable(output, "output", sr, minimum)
    loudness_error = np.abs(_finite_loudness(output, sr) - _finite_loudness(target, sr))
    like = {"dtype": output.dtype, "device": output.device}
    target = target.to(output.dtype)
    metrics = {
        "mrstft": mrstft.to(output.device)(output, target).to(**like),
        "lufs_error_lu": torch.as_tensor(loudness_error).to(**like),
        "centroid_error_hz": (
            spectral_centroid_hz(output, sr) - spectral_centroid_hz(target, sr)
        ).abs(),
        "crest_error_db": (crest_factor_db(output) - crest_factor_db(target)).abs(),
    }
    if output.shape[1] == 2:
        metrics["width_error_db"] = (side_to_mid_db(output) - side_to_mid_db(target)).abs()
    return metrics


def parameter_error(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean absolute error between normalized effect parameters, per item.

    Args:
        predicted: ``(batch, n_params)`` normalized parameters in [0, 1].
        true: ``(batch, n_params)`` the true normalized parameters.

    Returns:
        ``(batch,)`` mean over the parameters of ``|predicted - true|``, in [0, 1].

    Raises:
        ValueError: a shape is not ``(batch, n_params)``, the shapes differ, or a value is NaN,
            Inf or outside [0, 1] (e.g. physical values passed by mistake).
    """
    for name, p in (("predicted", predicted), ("true", true)):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point() or p.dim() != 2:
            shape = tuple(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
            raise ValueError(f"{name} must be a float tensor (batch, n_params), got {shape}")
    if predicted.shape != true.shape:
        raise ValueError(
            f"predicted {tuple(predicted.shape)} and true {tuple(true.shape)} differ in shape"
        )
    for name, p in (("predicted", predicted), ("true", true)):
        values = p.detach()
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        outside = (values < 0) | (values > 1)
        if bool(outside.any()):
            column = int(outside.any(dim=0).nonzero()[0])
            raise ValueError(
                f"{name} must hold normalized parameters in [0, 1]; column {column} ranges "
                f"{float(values[:, column].min()):.4g}..{float(values[:, column].max()):.4g}"
            )
    return (predicted - true.to(predicted.dtype)).abs().mean(dim=-1)


# --------------------------------------------------------------------------------------------
# rule-based baseline
# --------------------------------------------------------------------------------------------


def _welch_power(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Average power spectrum ``(batch, n_fft // 2 + 1)`` (Welch, Hann, 50 % overlap).

    Channels and frames are averaged in power. Clips shorter than one window are zero-padded
    to it. The scale is arbitrary but the same for every signal, which is all a ratio needs.
    """
    B, C, T = x.shape  # batch, channels, samples
    if T < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - T))
    frames = x.unfold(-1, n_fft, n_fft // 2)  # (B, C, frames, n_fft)
    window = torch.hann_window(n_fft, periodic=False, dtype=x.dtype, device=x.device)
    return torch.fft.rfft(frames * window, dim=-1).abs().square().mean(dim=(1, 2))


def _fit_grid_hz(sample_rate: float) -> torch.Tensor:
    """The ``(FIT_POINTS,)`` float64 log-spaced frequencies of the EQ fit, Hz."""
    top = min(FIT_MAX_HZ, 0.45 * sample_rate)
    return torch.logspace(math.log10(FIT_MIN_HZ), math.log10(top), FIT_POINTS, dtype=torch.float64)


@functools.lru_cache(maxsize=8)
def _smoothing_matrix(n_fft: int, sample_rate: float) -> torch.Tensor:
    """``(points, bins)`` rows of Gaussian weights in log frequency, each summing to 1, that
    read a power spectrum of ``n_fft`` bins on :func:`_fit_grid_hz` (CPU float64, cached)."""
    grid_hz = _fit_grid_hz(sample_rate)
    bins_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=grid_hz.dtype)
    sigma = SMOOTHING_OCTAVES / (2 * math.sqrt(2 * math.log(2)))  # FWHM -> standard deviation
    distance = torch.log2(grid_hz[:, None]) - torch.log2(bins_hz[None, 1:])  # DC left out
    weights = torch.exp(-0.5 * (distance / sigma).square())
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.nn.functional.pad(weights, (1, 0))


def _smoothed_db(power: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    smoothed = power @ smoothing.T
    floor = SPECTRUM_FLOOR * smoothed.amax(dim=-1, keepdim=True) + torch.finfo(power.dtype).tiny
    return 10 * torch.log10(smoothed + floor)


def _eq_physical(eq: ParametricEQ, gains_db: torch.Tensor) -> dict[str, torch.Tensor]:
    """Physical parameters of ``eq``: defaults, with the gains ``(batch, 2 + n_bands)``
    [low shelf, bands..., high shelf] in dB."""
    p = eq.denormalize(eq.default_parameters(gains_db.shape[0], gains_db.device, gains_db.dtype))
    names = ["low_shelf_gain_db"]
    names += [f"band{i}_gain_db" for i in range(1, eq.n_bands + 1)] + ["high_shelf_gain_db"]
    p.update({name: gains_db[:, i] for i, name in enumerate(names)})
    return p


def _section_responses_db(eq: ParametricEQ, gains_db: torch.Tensor, grid_hz: torch.Tensor):
    """The dB magnitude response of each EQ section, and its derivative in its own gain.

    The cascade's dB response is the sum of its sections' and each section depends on its own
    gain only, so the whole Jacobian is one derivative per section, taken by central differences
    of :data:`_GAIN_STEP_DB` (all three designs in one batch).

    Returns:
        ``(response, jacobian)``, both ``(batch, sections, points)``: dB and dB per dB.
    """
    B = gains_db.shape[0]
    gains = torch.cat([gains_db, gains_db + _GAIN_STEP_DB, gains_db - _GAIN_STEP_DB])
    p = _eq_physical(eq, gains)
    bands = [f"band{i}" for i in range(1, eq.n_bands + 1)]
    sos = F.parametric_eq_sos(
        eq.sample_rate,
        p["low_shelf_freq_hz"],
        p["low_shelf_gain_db"],
        torch.stack([p[f"{b}_freq_hz"] for b in bands], 1),
        torch.stack([p[f"{b}_gain_db"] for b in bands], 1),
        torch.stack([p[f"{b}_q"] for b in bands], 1),
        p["high_shelf_freq_hz"],
        p["high_shelf_gain_db"],
        low_shelf_q=p["low_shelf_q"],
        high_shelf_q=p["high_shelf_q"],
    )
    # each section alone: (3 B, sections, 1, 6) -> (3 B, sections, points)
    response = F.sos_frequency_response(sos.unsqueeze(-2), grid_hz, eq.sample_rate)
    value, plus, minus = (20 * torch.log10(response.abs())).split(B)
    return value, (plus - minus) / (2 * _GAIN_STEP_DB)


def _fit_eq_gains(
    eq: ParametricEQ,
    target_db: torch.Tensor,
    weight: torch.Tensor,
    grid_hz: torch.Tensor,
    n_iterations: int,
) -> torch.Tensor:
    """Gains ``(batch, sections)`` in dB minimizing the weighted squared dB error to the target.

    Gauss-Newton on ``sum_k w_k (H_dB(f_k; g) + c - t_k)^2 + sum_i r_i g_i^2`` with a free
    offset ``c`` (the overall level, left to the make-up gain) and the ridge ``r`` of
    :data:`GAIN_RIDGE_RELATIVE` and :data:`GAIN_RIDGE_ABSOLUTE`; the gains are clipped to the
    EQ's range after each step. The dB response of the RBJ sections is nearly linear in their
    gains, so three steps converge to 0.01 dB on the demo recordings.
    """
    B, G = target_db.shape  # batch, grid points
    n_sections = eq.n_bands + 2
    gains = torch.zeros(B, n_sections, dtype=target_db.dtype, device=target_db.device)
    offset = torch.zeros(B, dtype=target_db.dtype, device=target_db.device)
    gain_spec = {spec.name: spec for spec in eq.param_specs}["low_shelf_gain_db"]
    is_gain = torch.ones(n_sections + 1, dtype=gains.dtype, device=gains.device)
    is_gain[-1] = 0.0  # the offset is free
    absolute = GAIN_RIDGE_ABSOLUTE * weight.sum(-1, keepdim=True)
    for _ in range(n_iterations):
        response, jacobian = _section_responses_db(eq, gains, grid_hz)
        residual = target_db - response.sum(1) - offset[:, None]  # (B, G)
        J = torch.cat([jacobian, torch.ones_like(jacobian[:, :1])], dim=1)  # (B, S + 1, G)
        JW = J * weight[:, None, :]
        normal = JW @ J.transpose(1, 2)
        ridge = is_gain * (GAIN_RIDGE_RELATIVE * normal.diagonal(dim1=1, dim2=2) + absolute)
        # _SOLVE_EPS keeps an item with no weighted point (identity settings) solvable
        system = normal + torch.diag_embed(ridge + _SOLVE_EPS)
        current = torch.cat([gains, offset[:, None]], dim=1)
        rhs = (JW @ residual[..., None]).squeeze(-1) - ridge * current
        step = torch.linalg.solve(system, rhs)
        gains = (gains + step[:, :n_sections]).clamp(gain_spec.minimum, gain_spec.maximum)
        offset = offset + step[:, n_sections]
    return gains


def _normalized(effect: Effect, physical: dict[str, torch.Tensor], like: torch.Tensor):
    """``(batch, parameter_size())`` normalized parameters of ``effect`` in ``like``'s dtype."""
    columns = [
        spec.normalize(physical[spec.name].detach().cpu()).clamp(0.0, 1.0)
        for spec in effect.param_specs
    ]
    return torch.stack(columns, dim=1).to(dtype=like.dtype, device=like.device)


def _rms_db(x: torch.Tensor) -> torch.Tensor:
    rms = x.square().mean(dim=(1, 2)).sqrt()
    return 20 * torch.log10(rms.clamp_min(torch.finfo(x.dtype).tiny))


@torch.no_grad()
def rule_based_match(
    x: torch.Tensor, reference: torch.Tensor, sample_rate: float, n_iterations: int = 5
) -> tuple[torch.Tensor, torch.Tensor]:
    """Classical style-transfer baseline: EQ to the reference's spectrum, compress to its crest
    factor, match its loudness.

    The chain is ``EffectChain([ParametricEQ(sample_rate), Compressor(sample_rate)])`` with the
    default ranges; each item gets its own settings, chosen by these rules:

    1. EQ. The average power spectra of ``x`` and ``reference`` (Welch, window
       :data:`WELCH_WINDOW_S`, channels averaged in power) are smoothed to 1/3 octave and read
       on :data:`FIT_POINTS` log-spaced frequencies from 20 Hz to ``min(20 kHz, 0.45 fs)``. The
       target curve is their dB ratio minus its weighted mean (the level difference is the
       make-up gain's job), limited to +-24 dB. Band frequencies and Qs stay at the EQ's
       defaults; the six gains (plus a free level offset, discarded) are fitted to the target
       by Gauss-Newton (``n_iterations`` steps) on the EQ's exact magnitude response with a
       small ridge (:data:`GAIN_RIDGE_RELATIVE`, :data:`GAIN_RIDGE_ABSOLUTE`), each point
       weighted 1 where both spectra are within :data:`FIT_RANGE_DB` of their maxima and 0
       elsewhere.
    2. Compressor. If the reference's crest factor is lower than the EQ'd input's by more than
       :data:`CREST_TOLERANCE_DB`, the threshold is set to the EQ'd input's RMS level (so the
       compressor acts on what rises above the average: the peaks) and the ratio is searched
       by bisection on log(ratio) in [1, 20] for the compressed crest factor to equal the
       reference's; of the ratios tried (and 1), the one whose crest factor comes closest is
       kept, so compressing never moves the crest factor away from the reference's. Attack
       :data:`ATTACK_MS`, release :data:`RELEASE_MS`, knee :data:`KNEE_DB`. Otherwise (the
       reference is as peaky as the EQ'd input, or more, and a fast compressor only lowers the
       crest factor) the ratio is 1 and the threshold 0 dB.
    3. Make-up. The make-up gain makes the output's integrated loudness (pyloudnorm, BS.1770)
       equal the reference's, clipped to the compressor's range (+-24 dB).

    Silence: an item whose ``x`` or ``reference`` has no 400 ms block above BS.1770's -70 LUFS
    gate (pyloudnorm reads ``-inf``) gets identity settings (all gains 0 dB, ratio 1, make-up
    0 dB), so its output equals its input.

    Args:
        x: ``(batch, channels, samples)`` input audio, at least 400 ms long.
        reference: ``(batch, channels', samples')`` the style reference, one per item, at least
            400 ms long; its length and channel count may differ from ``x``'s (e.g. another
            crop of the same recording).
        sample_rate: Hz, of both.
        n_iterations: Gauss-Newton steps of the EQ fit (0 leaves the EQ flat).

    Returns:
        ``(output, params)``: ``output (batch, channels, samples)``, equal to
        ``chain(x, params)``; ``params (batch, chain.parameter_size())`` normalized, columns in
        ``chain.param_names`` order (print them with ``chain.denormalize(params)``). Both in the
        dtype of ``x``.

    Raises:
        ValueError: NaN/Inf or a bad shape in ``x`` or ``reference``, differing batch sizes, or
            a clip shorter than 400 ms.
    """
    check_audio(x, "x")
    check_audio(reference, "reference")
    sr = check_sample_rate(sample_rate)
    n_iterations = check_integer(n_iterations, "n_iterations", 0)
    if x.shape[0] != reference.shape[0]:
        raise ValueError(
            f"x and reference must hold the same number of items, got batch sizes "
            f"{x.shape[0]} and {reference.shape[0]}"
        )
    block = round(BLOCK_S * sr)
    _check_measurable(x, "x", sr, block)
    _check_measurable(reference, "reference", sr, block)
    B = x.shape[0]
    eq, comp = ParametricEQ(sr), Compressor(sr)  # the chain's two stages, default ranges
    dev = x.device
    # The fits and searches run in float64 (as the rest of this module) on x's device.
    wide = wide_dtype(dev, "rule_based_match's fits")
    x64, ref64 = x.to(wide), reference.to(device=dev, dtype=wide)

    lufs_x, lufs_ref = pyloudnorm_loudness(x, sr), pyloudnorm_loudness(reference, sr)
    active_np = np.isfinite(lufs_x) & np.isfinite(lufs_ref)
    active = torch.as_tensor(active_np, device=dev)

    # 1. EQ fitted to the ratio of the average spectra
    n_fft = 2 ** math.ceil(math.log2(WELCH_WINDOW_S * sr))
    grid_hz = _fit_grid_hz(sr).to(dev)
    smoothing = _smoothing_matrix(n_fft, sr).to(dev)
    x_db = _smoothed_db(_welch_power(x64, n_fft), smoothing)
    ref_db = _smoothed_db(_welch_power(ref64, n_fft), smoothing)
    audible = (x_db > x_db.amax(-1, keepdim=True) - FIT_RANGE_DB) & (
        ref_db > ref_db.amax(-1, keepdim=True) - FIT_RANGE_DB
    )
    weight = (audible & active[:, None]).to(wide)
    ratio_db = ref_db - x_db
    level_db = _safe_ratio((weight * ratio_db).sum(-1), weight.sum(-1))
    target_db = (ratio_db - level_db[:, None]).clamp(-TARGET_LIMIT_DB, TARGET_LIMIT_DB)
    gains_db = _fit_eq_gains(eq, target_db, weight, grid_hz, n_iterations)
    gains_db = torch.where(active[:, None], gains_db, 0.0)
    eq_params = _normalized(eq, _eq_physical(eq, gains_db), x)
    equalized = eq(x, eq_params)

    # 2. compressor from the crest factors
    specs = {spec.name: spec for spec in comp.param_specs}
    # measured in the dtype of x, as the output will be
    crest_eq = crest_factor_db(equalized).to(wide)
    crest_ref = crest_factor_db(ref64)
    compress = active & (crest_eq - crest_ref > CREST_TOLERANCE_DB)
    threshold_spec, ratio_spec = specs["threshold_db"], specs["ratio"]
    threshold_db = torch.where(
        compress,
        _rms_db(equalized.to(wide)).clamp(threshold_spec.minimum, threshold_spec.maximum),
        threshold_spec.maximum,
    )
    physical = {
        "threshold_db": threshold_db,
        "ratio": torch.ones(B, dtype=wide, device=dev),
        "attack_ms": torch.full((B,), ATTACK_MS, dtype=wide, device=dev),
        "release_ms": torch.full((B,), RELEASE_MS, dtype=wide, device=dev),
        "knee_db": torch.full((B,), KNEE_DB, dtype=wide, device=dev),
        "makeup_gain_db": torch.zeros(B, dtype=wide, device=dev),
    }
    if bool(compress.any()):
        # Bisection assumes the crest factor falls as the ratio grows; where it does not (peaks
        # that slip through the attack), the best ratio tried is kept, ratio 1 included, so the
        # compressor never moves the crest factor away from the reference's.
        low = torch.zeros(B, dtype=wide, device=dev)
        high = torch.full_like(low, math.log(ratio_spec.maximum))
        best_ratio = torch.ones_like(low)
        best_miss = (crest_eq - crest_ref).abs()
        for _ in range(RATIO_SEARCH_STEPS):
            middle = 0.5 * (low + high)
            ratio = torch.where(compress, middle.exp(), 1.0)
            trial = {k: v.to(x.dtype) for k, v in dict(physical, ratio=ratio).items()}
            crest = crest_factor_db(comp.process(equalized, **trial)).to(wide)
            miss = (crest - crest_ref).abs()
            better = compress & (miss < best_miss)
            best_ratio = torch.where(better, ratio, best_ratio)
            best_miss = torch.where(better, miss, best_miss)
            too_high = crest > crest_ref
            low, high = torch.where(too_high, middle, low), torch.where(too_high, high, middle)
        physical["ratio"] = best_ratio
        physical["threshold_db"] = torch.where(best_ratio > 1, threshold_db, threshold_spec.maximum)

    # 3. make-up gain for equal integrated loudness
    compressed = comp(equalized, _normalized(comp, physical, x))
    lufs_out = pyloudnorm_loudness(compressed, sr)
    makeup_spec = specs["makeup_gain_db"]
    makeup = np.where(active_np & np.isfinite(lufs_out), lufs_ref - lufs_out, 0.0)
    makeup = np.clip(makeup, makeup_spec.minimum, makeup_spec.maximum)
    physical["makeup_gain_db"] = torch.as_tensor(makeup, dtype=wide, device=dev)
    comp_params = _normalized(comp, physical, x)
    return comp(equalized, comp_params), torch.cat([eq_params, comp_params], dim=1)


__all__ = [
    "crest_factor_db",
    "parameter_error",
    "rule_based_match",
    "spectral_centroid_hz",
    "style_metrics",
]
