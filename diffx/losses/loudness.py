"""Differentiable integrated loudness (ITU-R BS.1770-4, EBU R 128) and a loudness loss.

BS.1770-4 measures loudness in four steps: K-weighting (a high shelf then a high pass), the
mean square of each channel over 400 ms blocks that overlap by 75 %, a channel-weighted sum
per block ``l_j = -0.691 + 10 log10(sum_i G_i z_ij)`` in LUFS, and a two-stage gate: blocks
below -70 LUFS are dropped, then blocks more than 10 LU below the loudness of the remaining
ones; the result is the loudness of the mean power of the blocks that pass both gates.

The hard gates are step functions of the signal, so here each is replaced by a logistic
weight ``sigmoid((l_j - threshold) / gate_temperature_lu)``: a block 1 LU above a gate counts
with weight 0.99995 at the default temperature of 0.1 LU, one exactly at it with 0.5, and the
value tends to BS.1770's as the temperature goes to 0. Gradients therefore reach every block,
including through the relative threshold.

Silence and near-silence: block powers and the gated mean power get :data:`POWER_EPS` added
inside the logarithm, so digital silence reads the documented floor :data:`SILENCE_LUFS`
(-120.691 LUFS) with finite (zero) gradients, where BS.1770 (and pyloudnorm) give -inf. A
signal whose blocks all lie far below the -70 LUFS gate also reads close to that floor.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffx._validation import check_audio, check_sample_rate
from diffx.functional import sosfilt
from diffx.losses._reduction import check_reduction, reduce
from diffx.losses.time_domain import check_pair

#: Gating block duration (s) and the step between blocks (s): 400 ms, 75 % overlap (BS.1770-4).
BLOCK_S = 0.4
STEP_S = 0.1

#: Absolute gate (LUFS) and relative gate (LU below the absolutely gated loudness), BS.1770-4.
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0

#: Offset of the loudness formula, BS.1770-4 eq. 2: it makes a 997 Hz sine at 0 dBFS in one
#: channel read -3.01 LKFS once the K-weighting's +0.691 dB at that frequency is included.
LOUDNESS_OFFSET_DB = -0.691

#: Channel weights G_i for [left, right, centre, left surround, right surround] (BS.1770-4
#: Table 3; the LFE channel is not measured). Mono and stereo use the first one or two.
CHANNEL_WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)

#: Added to mean-square powers before the logarithm (full scale = 1): keeps silence finite.
#: It is 110 dB below the -70 LUFS gate, so measured values move by less than 1e-4 LU there.
POWER_EPS = 1e-12

#: What digital silence reads, in LUFS: LOUDNESS_OFFSET_DB + 10 log10(POWER_EPS).
SILENCE_LUFS = LOUDNESS_OFFSET_DB + 10 * math.log10(POWER_EPS)

#: Added to the sum of gate weights before dividing by it, so a signal with no block above the
#: gates gives 0 / eps (then the silence floor) instead of 0 / 0. Gate weights sum to about the
#: number of passing blocks (at least ~1 for any audible signal), so the bias is below 1e-5 LU.
WEIGHT_EPS = 1e-6

#: Default width of the logistic gates, in LU; see the module docstring.
DEFAULT_GATE_TEMPERATURE_LU = 0.1

# K-weighting as analog prototypes mapped with the bilinear transform prewarped at each
# section's corner frequency, with the parameters derived by Brecht De Man (loudness.py, 2014;
# pyloudnorm's "DeMan" filter class) so that at 48 kHz the two biquads reproduce the
# coefficients of BS.1770-4 Tables 1 and 2, while staying exact at any other sample rate.
# Stage 1, high shelf: H(s) = (Vh s^2 + Vb (w/Q) s + w^2) / (s^2 + (w/Q) s + w^2).
_SHELF_HZ = 1681.974450955533
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_VB_EXPONENT = 0.4996667741545416  # Vb = Vh ** this (the shelf's mid-band gain)
# Stage 2, high pass: H(s) = s^2 / (s^2 + (w/Q) s + w^2); BS.1770 fixes b = [1, -2, 1].
_HIGHPASS_HZ = 38.13547087613982
_HIGHPASS_Q = 0.5003270373253953


def k_weighting_sos(sample_rate: float) -> np.ndarray:
    """The two K-weighting biquads of BS.1770-4 designed for ``sample_rate``.

    Args:
        sample_rate: Hz, above twice the shelf's 1682 Hz corner (3364 Hz).

    Returns:
        ``(2, 6)`` float64 array in ``scipy.signal.sosfilt`` layout: the high shelf, then the
        high pass. At 48 kHz these are the coefficients printed in BS.1770-4.
    """
    sr = check_sample_rate(sample_rate)
    if sr <= 2 * _SHELF_HZ:
        raise ValueError(
            f"sample_rate must exceed {2 * _SHELF_HZ:.0f} Hz for the K-weighting, got "
            f"{sample_rate!r}"
        )
    k = math.tan(math.pi * _SHELF_HZ / sr)
    vh = 10 ** (_SHELF_GAIN_DB / 20)
    vb = vh**_SHELF_VB_EXPONENT
    norm = 1 + k / _SHELF_Q + k * k
    shelf = [
        (vh + vb * k / _SHELF_Q + k * k) / norm,
        2 * (k * k - vh) / norm,
        (vh - vb * k / _SHELF_Q + k * k) / norm,
        1.0,
        2 * (k * k - 1) / norm,
        (1 - k / _SHELF_Q + k * k) / norm,
    ]
    k = math.tan(math.pi * _HIGHPASS_HZ / sr)
    norm = 1 + k / _HIGHPASS_Q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / norm, (1 - k / _HIGHPASS_Q + k * k) / norm]
    return np.array([shelf, highpass])


def _block_sizes(sample_rate: float) -> tuple[int, int]:
    return round(BLOCK_S * sample_rate), round(STEP_S * sample_rate)


def _loudness_db(power: torch.Tensor) -> torch.Tensor:
    return LOUDNESS_OFFSET_DB + 10 * torch.log10(power + POWER_EPS)


def _gated_mean(power: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (weights * power).sum(-1) / (weights.sum(-1) + WEIGHT_EPS)


def integrated_loudness(
    x: torch.Tensor,
    sample_rate: float,
    gate_temperature_lu: float = DEFAULT_GATE_TEMPERATURE_LU,
) -> torch.Tensor:
    """Integrated loudness per item, BS.1770-4 with smooth (logistic) gates.

    Blocks are the complete 400 ms windows starting every 100 ms (a trailing partial block is
    not measured). Full scale is 1.0. Differs from BS.1770 only by the soft gates (see the
    module docstring) and the silence floor :data:`SILENCE_LUFS`.

    Args:
        x: ``(batch, channels, samples)`` audio with 1-5 channels, ordered [L, R, C, Ls, Rs].
        sample_rate: Hz, above 3364 Hz.
        gate_temperature_lu: width of the logistic gates in LU (> 0); smaller is closer to the
            hard gates, larger spreads the gradient over more blocks near the thresholds.

    Returns:
        ``(batch,)`` loudness in LUFS, the dtype of ``x``.
    """
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    tau = float(gate_temperature_lu)
    if not (0 < tau < math.inf):
        raise ValueError(f"gate_temperature_lu must be positive and finite, got {tau!r}")
    B, C, T = x.shape  # batch, channels, samples
    if C > len(CHANNEL_WEIGHTS):
        raise ValueError(
            f"x has {C} channels; BS.1770 loudness is defined here for at most "
            f"{len(CHANNEL_WEIGHTS)} ([L, R, C, Ls, Rs])"
        )
    block, step = _block_sizes(sr)
    if T < block:
        raise ValueError(
            f"x has {T} samples, shorter than one {BLOCK_S * 1000:.0f} ms gating block "
            f"({block} samples at {sr:g} Hz)"
        )
    sos = torch.from_numpy(k_weighting_sos(sr)).to(x.device)
    y = sosfilt(x, sos)
    z = F.avg_pool1d(y.square(), kernel_size=block, stride=step)  # (B, C, blocks)
    weights = torch.tensor(CHANNEL_WEIGHTS[:C], dtype=x.dtype, device=x.device)
    power = torch.einsum("c,bcj->bj", weights, z)
    block_lufs = _loudness_db(power)
    absolute = torch.sigmoid((block_lufs - ABSOLUTE_GATE_LUFS) / tau)
    relative_gate = _loudness_db(_gated_mean(power, absolute)) + RELATIVE_GATE_LU
    gate = absolute * torch.sigmoid((block_lufs - relative_gate.unsqueeze(-1)) / tau)
    return _loudness_db(_gated_mean(power, gate))


class LoudnessLoss(nn.Module):
    """L1 distance in LU between the integrated loudness of prediction and target.

    Args:
        sample_rate: Hz, above 3364 Hz.
        gate_temperature_lu: see :func:`integrated_loudness`.
        reduction: ``"mean"`` or ``"sum"`` over the batch, or ``"none"``.

    Shapes:
        ``pred`` and ``target``: ``(batch, channels, samples)``, at least 400 ms long; output:
        a scalar, or ``(batch,)`` with ``reduction="none"``.
    """

    def __init__(
        self,
        sample_rate: float,
        gate_temperature_lu: float = DEFAULT_GATE_TEMPERATURE_LU,
        reduction: str = "mean",
    ):
        super().__init__()
        self.sample_rate = check_sample_rate(sample_rate)
        k_weighting_sos(self.sample_rate)  # fail now, not at the first batch
        self.gate_temperature_lu = float(gate_temperature_lu)
        if not (0 < self.gate_temperature_lu < math.inf):
            raise ValueError(
                f"gate_temperature_lu must be positive and finite, got {gate_temperature_lu!r}"
            )
        self.reduction = check_reduction(reduction)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        lufs_pred = integrated_loudness(pred, self.sample_rate, self.gate_temperature_lu)
        lufs_target = integrated_loudness(target, self.sample_rate, self.gate_temperature_lu)
        return reduce((lufs_pred - lufs_target).abs(), self.reduction)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate:g}, gate_temperature_lu={self.gate_temperature_lu}, "
            f"reduction={self.reduction!r}"
        )


def pyloudnorm_loudness(
    x: torch.Tensor | np.ndarray, sample_rate: float, filter_class: str = "K-weighting"
) -> np.ndarray:
    """Integrated loudness per item measured by pyloudnorm (not differentiable), for metrics.

    Args:
        x: ``(batch, channels, samples)`` audio (tensor or array) with 1-5 channels.
        sample_rate: Hz.
        filter_class: pyloudnorm's weighting: its default ``"K-weighting"`` (RBJ-cookbook
            biquads, about 0.04 dB below BS.1770's K-weighting through the mid band) or
            ``"DeMan"`` (BS.1770's coefficients, as :func:`integrated_loudness` uses).

    Returns:
        ``(batch,)`` float64 LUFS; ``-inf`` where no block passes the gates (e.g. silence).
    """
    import pyloudnorm

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    check_audio(x, "x")
    sr = check_sample_rate(sample_rate)
    B, C, T = x.shape  # batch, channels, samples
    if C > len(CHANNEL_WEIGHTS):
        raise ValueError(f"x has {C} channels; pyloudnorm measures at most 5")
    block, _ = _block_sizes(sr)
    if T < block:
        raise ValueError(f"x has {T} samples, shorter than one 400 ms block ({block} samples)")
    meter = pyloudnorm.Meter(sr, filter_class=filter_class)
    audio = x.detach().cpu().to(torch.float64).numpy()
    return np.array([meter.integrated_loudness(item.T) for item in audio], dtype=np.float64)
