"""Noise-to-mask ratio (NMR) of ITU-R BS.1387 (PEAQ, basic version), differentiable.

The model follows the FFT ear model of BS.1387 as examined by Kabal, "An examination and
interpretation of ITU-R BS.1387: Perceptual evaluation of audio quality" (McGill TSP report,
2003; section numbers below refer to it), in the form Carson, Wright and Bilbao use as a training
loss and metric ("Anti-aliasing of neural distortion effects via model fine tuning", DAFx 2025,
eqs. 14-16):

1. Hann-windowed STFT, 2048 points, 50 % overlap, no centring (frames start at sample 0).
2. Level calibration: a full-scale (amplitude 1) sine at 1019.5 Hz reads 92 dB SPL.
3. Outer and middle ear weighting, A(f) = -2.184 f^-0.8 + 6.5 exp(-0.6 (f - 3.3)^2)
   - 0.001 f^3.6 dB with f in kHz, applied to the magnitude spectrum.
4. Grouping of the FFT bins into the 109 quarter-Bark critical bands of BS.1387 (80 Hz-18 kHz),
   each bin weighted by its overlap with the band (Kabal eq. 13).
5. Noise pattern: the band energies of (|X_test| - |X_ref|)^2 (weighted magnitudes).
6. Mask from the reference: band energies plus the ear's internal noise
   10^(0.1456 f^-0.8) (f in kHz), spread across bands with the level-dependent
   two-sided slopes of BS.1387 (lower 27 dB/Bark; upper 24 + 230/f_c - 2 log10(E) dB/Bark,
   combined with exponent 0.4 and normalised so a flat unit pattern stays flat),
   then lowered by the masking offset (3 dB up to 12 Bark, 0.25 z dB above).
   There is no spreading in time: the mask uses the unsmeared excitation, as in BS.1387's NMR.
7. NMR = mean over frames and bands of noise pattern / mask.

Two documented departures from a literal PEAQ run, shared with Carson et al.'s code: the input is
not quantised to 16 bits first, and band energies are floored at 1e-12 (BS.1387's floor) so the
ratio and its gradient stay finite when test and reference are identical (the NMR "floor") or the
reference is silent (the mask is then the internal noise alone, a finite result).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from diffx._validation import check_sample_rate, wide_dtype
from diffx.losses._chunking import (
    BLOCK_BYTES,
    MAX_DIRECT_BYTES,
    Framing,
    check_chunking,
    framewise_sums,
)
from diffx.losses._reduction import check_reduction, reduce
from diffx.losses.time_domain import check_pair

#: STFT size and hop of the BS.1387 FFT ear model (Kabal section 2.1.1).
N_FFT = 2048
HOP = 1024
#: Sound pressure level of a full-scale sine in the calibration of BS.1387 (dB SPL).
LISTENING_LEVEL_DB = 92.0
#: Frequency of the calibration sine (Hz).
CALIBRATION_HZ = 1019.5
#: Band-energy floor of BS.1387; keeps noise / mask finite and differentiable.
ENERGY_FLOOR = 1e-12
#: Width of one critical band in Bark.
BAND_STEP_BARK = 0.25
#: Exponent of the level-dependent addition of spread energies (BS.1387, Kabal section 2.1.7).
SPREAD_EXPONENT = 0.4
#: The level dependence of the upper slope makes it flatter as the band energy grows; past about
#: 120 dB SPL in one band (a signal ~28 dB over full scale) the slope would reach 0 dB/Bark and
#: the normalisation divide by zero, so the slope's decay factor is held below this.
MAX_UPPER_DECAY = 1.0 - 1e-6
OUTPUTS = ("linear", "db")

_BS1387_LOWER_HZ = (
    80.000,
    103.445,
    127.023,
    150.762,
    174.694,
    198.849,
    223.257,
    247.950,
    272.959,
    298.317,
    324.055,
    350.207,
    376.805,
    403.884,
    431.478,
    459.622,
    488.353,
    517.707,
    547.721,
    578.434,
    609.885,
    642.114,
    675.161,
    709.071,
    743.884,
    779.647,
    816.404,
    854.203,
    893.091,
    933.119,
    974.336,
    1016.797,
    1060.555,
    1105.666,
    1152.187,
    1200.178,
    1249.700,
    1300.816,
    1353.592,
    1408.094,
    1464.392,
    1522.559,
    1582.668,
    1644.795,
    1709.021,
    1775.427,
    1844.098,
    1915.121,
    1988.587,
    2064.590,
    2143.227,
    2224.597,
    2308.806,
    2395.959,
    2486.169,
    2579.551,
    2676.223,
    2776.309,
    2879.937,
    2987.238,
    3098.350,
    3213.415,
    3332.579,
    3455.993,
    3583.817,
    3716.212,
    3853.817,
    3995.399,
    4142.547,
    4294.979,
    4452.890,
    4616.482,
    4785.962,
    4961.548,
    5143.463,
    5331.939,
    5527.217,
    5729.545,
    5939.183,
    6156.396,
    6381.463,
    6614.671,
    6856.316,
    7106.708,
    7366.166,
    7635.020,
    7913.614,
    8202.302,
    8501.454,
    8811.450,
    9132.688,
    9465.574,
    9810.536,
    10168.013,
    10538.460,
    10922.351,
    11320.175,
    11732.438,
    12159.670,
    12602.412,
    13061.229,
    13536.710,
    14029.458,
    14540.103,
    15069.295,
    15617.710,
    16186.049,
    16775.035,
    17385.420,
)
_BS1387_CENTER_HZ = (
    91.708,
    115.216,
    138.870,
    162.702,
    186.742,
    211.019,
    235.566,
    260.413,
    285.593,
    311.136,
    337.077,
    363.448,
    390.282,
    417.614,
    445.479,
    473.912,
    502.950,
    532.629,
    562.988,
    594.065,
    625.899,
    658.533,
    692.006,
    726.362,
    761.644,
    797.898,
    835.170,
    873.508,
    912.959,
    953.576,
    995.408,
    1038.511,
    1082.938,
    1128.746,
    1175.995,
    1224.744,
    1275.055,
    1326.992,
    1380.623,
    1436.014,
    1493.237,
    1552.366,
    1613.474,
    1676.641,
    1741.946,
    1809.474,
    1879.310,
    1951.543,
    2026.266,
    2103.573,
    2183.564,
    2266.340,
    2352.008,
    2440.675,
    2532.456,
    2627.468,
    2725.832,
    2827.672,
    2933.120,
    3042.309,
    3155.379,
    3272.475,
    3393.745,
    3519.344,
    3649.432,
    3784.176,
    3923.748,
    4068.324,
    4218.090,
    4373.237,
    4533.963,
    4700.473,
    4872.978,
    5051.700,
    5236.866,
    5428.712,
    5627.484,
    5833.434,
    6046.825,
    6267.931,
    6497.031,
    6734.420,
    6980.399,
    7235.284,
    7499.397,
    7773.077,
    8056.673,
    8350.547,
    8655.072,
    8970.639,
    9297.648,
    9636.520,
    9987.683,
    10351.586,
    10728.695,
    11119.490,
    11524.470,
    11944.149,
    12379.066,
    12829.775,
    13294.850,
    13780.887,
    14282.503,
    14802.338,
    15341.057,
    15899.345,
    16477.914,
    17077.504,
    17690.045,
)
# Each band ends where the next begins, except where the printed table disagrees with itself
# (between bands 28/29, 65/66 and 70/71; the printed upper edges are kept) and for the last
# band, which ends at 18 kHz.
_BS1387_UPPER_HZ = (
    *_BS1387_LOWER_HZ[1:29], 933.113, *_BS1387_LOWER_HZ[30:66], 3853.348,
    *_BS1387_LOWER_HZ[67:71], 4643.482, *_BS1387_LOWER_HZ[72:], 18000.000,
)  # fmt: skip


MIN_SAMPLE_RATE = 2 * _BS1387_UPPER_HZ[-1]


def critical_bands() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 109 critical bands of BS.1387: lower edges, centres and upper edges in Hz.

    The bands are a quarter Bark wide on the scale z = 7 asinh(f / 650 Hz), from 80 Hz to
    18 kHz. The values are the standard's table, misprints included (upper edge of band 28,
    lower edge of band 66, upper edge of band 70, centres of bands 100 and 108 differ from the
    formula by 0.006 to 27 Hz), because every PEAQ implementation, Kabal's and Carson et al.'s
    among them, uses the table as printed.

    Returns:
        Three float64 arrays of shape ``(109,)``.
    """
    return (
        np.array(_BS1387_LOWER_HZ, dtype=np.float64),
        np.array(_BS1387_CENTER_HZ, dtype=np.float64),
        np.array(_BS1387_UPPER_HZ, dtype=np.float64),
    )


def ear_weighting_db(freq_hz: np.ndarray) -> np.ndarray:
    """Outer and middle ear power response of BS.1387 in dB, -inf at 0 Hz.

    A(f) = -2.184 f^-0.8 + 6.5 exp(-0.6 (f - 3.3)^2) - 0.001 f^3.6, with f in kHz.
    """
    f_khz = np.asarray(freq_hz, dtype=np.float64) / 1000.0
    with np.errstate(divide="ignore"):
        low = np.where(f_khz > 0, -2.184 * np.power(np.maximum(f_khz, 1e-300), -0.8), -np.inf)
    return low + 6.5 * np.exp(-0.6 * (f_khz - 3.3) ** 2) - 0.001 * f_khz**3.6


def band_grouping(sample_rate: float, n_fft: int = N_FFT) -> np.ndarray:
    """Weights that group power-spectrum bins into the critical bands, ``(109, n_fft // 2 + 1)``.

    Bin k covers [(k - 1/2) df, (k + 1/2) df] with df = sample_rate / n_fft; its weight in a band
    is the fraction of that interval inside the band (Kabal eq. 13).
    """
    lower_hz, _, upper_hz = critical_bands()
    bin_hz = sample_rate / n_fft
    k = np.arange(n_fft // 2 + 1, dtype=np.float64)
    overlap_hz = np.minimum(upper_hz[:, None], (k + 0.5) * bin_hz) - np.maximum(
        lower_hz[:, None], (k - 0.5) * bin_hz
    )
    return np.maximum(overlap_hz, 0.0) / bin_hz


def internal_noise(center_hz: np.ndarray) -> np.ndarray:
    """Energy of the ear's internal noise per band, 10^(0.1456 f^-0.8) with f in kHz."""
    return 10.0 ** (0.1456 * (np.asarray(center_hz, dtype=np.float64) / 1000.0) ** -0.8)


def mask_offset_db(n_bands: int = len(_BS1387_CENTER_HZ)) -> np.ndarray:
    """Masking offset per band in dB: 3 dB up to 12 Bark above 80 Hz, 0.25 z dB beyond."""
    z_bark = np.arange(n_bands) * BAND_STEP_BARK
    return np.where(z_bark <= 12.0, 3.0, 0.25 * z_bark)


def _hann_peak_factor(freq_normalised: float, n_fft: int) -> float:
    """Largest Hann-windowed DFT bin of a unit sine relative to its on-bin value.

    A sine between bins reads lower than on a bin; BS.1387 calibrates the level with the
    actual peak (Kabal, the function he calls PQ_gp).
    """
    bin_width = 1.0 / n_fft
    k = math.floor(freq_normalised / bin_width)
    offset = min((k + 1) * bin_width - freq_normalised, freq_normalised - k * bin_width)
    offset_bins = offset * (n_fft - 1)
    if offset_bins == 0.0:
        return 1.0
    return math.sin(math.pi * offset_bins) / (math.pi * offset_bins * (1.0 - offset_bins**2))


def calibration_gain(
    sample_rate: float, n_fft: int = N_FFT, level_db: float = LISTENING_LEVEL_DB
) -> float:
    """Scale of the Hann-windowed DFT magnitudes so a full-scale 1019.5 Hz sine reads level_db.

    A unit sine gives a peak bin of (n_fft - 1) / 4 times the peak factor with the symmetric
    Hann window, and the calibrated peak is 10^(level_db / 20).
    """
    peak = _hann_peak_factor(CALIBRATION_HZ / sample_rate, n_fft) * (n_fft - 1) / 4.0
    return 10.0 ** (level_db / 20.0) / peak


class _EarModel(nn.Module):
    """The BS.1387 FFT ear model's constants as buffers, and the NMR computed with them."""

    def __init__(self, sample_rate: float, n_fft: int = N_FFT, hop_length: int = HOP):
        super().__init__()
        sample_rate = check_sample_rate(sample_rate)
        if sample_rate < MIN_SAMPLE_RATE:
            raise ValueError(
                f"sample_rate {sample_rate:g} Hz is too low for the BS.1387 critical bands, "
                f"which reach {_BS1387_UPPER_HZ[-1]:g} Hz; resample to at least "
                f"{MIN_SAMPLE_RATE:g} Hz (44.1 or 48 kHz)"
            )
        if int(n_fft) != n_fft or n_fft < 16 or int(hop_length) != hop_length or hop_length < 1:
            raise ValueError(f"n_fft ({n_fft}) and hop_length ({hop_length}) must be integers")
        self.sample_rate = float(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)

        _, center_hz, _ = critical_bands()
        n_bands = center_hz.size
        bin_hz = np.arange(self.n_fft // 2 + 1) * self.sample_rate / self.n_fft
        # Level calibration folded into the ear weighting: both scale the magnitude spectrum.
        magnitude_weight = calibration_gain(self.sample_rate, self.n_fft) * 10.0 ** (
            ear_weighting_db(bin_hz) / 20.0
        )

        # Spreading constants (BS.1387 frequency spreading; Kabal section 2.1.7). With lower
        # decay a_L per band and upper decay a_U(m) E(m)^(0.2 dz) per band, the energy of band m
        # spreads to band i as a_L^(m - i) (i <= m) or a_U^(i - m) (i > m); the contributions
        # add as powers 0.4, and each band's energy is first divided by its spread's total.
        lower_decay = 10.0 ** (-2.7 * BAND_STEP_BARK)
        upper_decay_log = np.log(10.0) * (-2.4 - 23.0 / center_hz) * BAND_STEP_BARK
        m = np.arange(n_bands)
        lower_sum = (1.0 - lower_decay ** (m + 1)) / (1.0 - lower_decay)
        distance = m[None, :] - m[:, None]  # [source m, destination i] = i - m
        lower_matrix = np.where(
            distance <= 0, lower_decay ** (SPREAD_EXPONENT * np.maximum(-distance, 0)), 0.0
        )

        self.register_buffer(
            "window", torch.hann_window(self.n_fft, periodic=False, dtype=torch.float64)
        )
        self.register_buffer("magnitude_weight", torch.from_numpy(magnitude_weight))
        self.register_buffer("grouping", torch.from_numpy(band_grouping(sample_rate, n_fft)).T)
        self.register_buffer("internal_noise", torch.from_numpy(internal_noise(center_hz)))
        self.register_buffer("mask_gain", torch.from_numpy(10.0 ** (-mask_offset_db(n_bands) / 10)))
        self.register_buffer("upper_decay_log", torch.from_numpy(upper_decay_log))
        self.register_buffer("lower_sum", torch.from_numpy(lower_sum))
        self.register_buffer("lower_matrix", torch.from_numpy(lower_matrix))
        self.register_buffer("distance", torch.from_numpy(np.maximum(distance, 0).astype(float)))
        self.register_buffer("remaining_bands", torch.from_numpy((n_bands - m).astype(float)))
        ones = torch.ones(1, n_bands, dtype=torch.float64)
        self.register_buffer("spread_norm", self._spread(ones, normalise=False)[0])

    def _spread(self, energy: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """Spread band energies ``(..., bands)`` across bands; returns the excitation pattern."""
        dtype = energy.dtype
        upper_log = self.upper_decay_log.to(dtype) + (0.2 * BAND_STEP_BARK) * energy.log()
        upper_log = upper_log.clamp(max=math.log(MAX_UPPER_DECAY))
        # Σ_{k < n} a^k = (1 - a^n) / (1 - a), written with expm1 to stay accurate as a -> 1.
        upper_sum = torch.expm1(self.remaining_bands.to(dtype) * upper_log) / torch.expm1(upper_log)
        per_band = (energy / (self.lower_sum.to(dtype) + upper_sum - 1.0)).pow(SPREAD_EXPONENT)
        spread_down = per_band @ self.lower_matrix.to(dtype)
        # Upward weights depend on the source band's level: an (bands x bands) matrix per frame.
        # Only the upper triangle (destination above source) is kept; exp_ reuses the product's
        # memory, which autograd allows because the product's backward does not need it.
        up_weights = (self.distance.to(dtype) * (SPREAD_EXPONENT * upper_log).unsqueeze(-1)).exp_()
        up_weights = up_weights.triu(diagonal=1)
        spread_up = (per_band.unsqueeze(-2) @ up_weights).squeeze(-2)
        excitation = (spread_down + spread_up).pow(1.0 / SPREAD_EXPONENT)
        return excitation / self.spread_norm.to(dtype) if normalise else excitation

    def _weighted_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated, ear-weighted STFT magnitudes ``(rows, frames, bins)`` of ``(rows, T)``."""
        window = self.window.to(x.dtype)
        spectrum = torch.stft(
            x, self.n_fft, self.hop_length, window=window, center=False, return_complex=True
        )
        return (spectrum.abs() * self.magnitude_weight.to(x.dtype).unsqueeze(-1)).transpose(1, 2)

    def patterns(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise pattern and mask, each ``(rows, frames, bands)``, of ``(rows, T)`` signals
        (STFT frames start at sample 0, no padding)."""
        dtype = pred.dtype
        grouping = self.grouping.to(dtype)
        target_mag = self._weighted_magnitude(target)
        noise = ((self._weighted_magnitude(pred) - target_mag).square() @ grouping).clamp(
            min=ENERGY_FLOOR
        )
        pitch = (target_mag.square() @ grouping).clamp(min=ENERGY_FLOOR)
        excitation = self._spread(pitch + self.internal_noise.to(dtype))
        return noise, excitation * self.mask_gain.to(dtype)

    def _noise_to_mask(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Noise / mask ``(rows, frames, bands)`` of the STFT frames of ``(rows, T)`` signals."""
        noise, mask = self.patterns(pred, target)
        return noise / mask

    def _block_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(rows, 1)``: noise / mask summed over the frames and bands of a block."""
        return self._noise_to_mask(pred, target).sum(dim=(-2, -1)).unsqueeze(-1)

    def bytes_per_frame(self, dtype: torch.dtype) -> int:
        """Memory of one frame of one signal inside the model: its complex spectrum and the
        ``bands x bands`` upward-spreading weights, the largest per-frame tensor."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        bins, bands = self.grouping.shape
        return (2 * bins + bands * bands) * itemsize

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ) -> torch.Tensor:
        """Linear NMR per item of ``(..., samples)`` inputs; returns shape ``(...)``.

        While ``rows x frames x bytes_per_frame`` is at most ``max_direct_bytes`` the NMR is
        one autograd pass; beyond, blocks of frames of at most ``block_bytes`` are summed and
        recomputed in the backward pass (:mod:`diffx.losses._chunking`), which keeps the
        peak memory a few times the input's size instead of tens of times.
        """
        lead = pred.shape[:-1]
        out_dtype = pred.dtype if pred.dtype == torch.float64 else torch.float32
        pred, target = self.rows(pred, target)
        return self._nmr(pred, target, max_direct_bytes, block_bytes).to(out_dtype).reshape(lead)

    def rows(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., samples)`` inputs as ``(rows, samples)`` in the dtype the model computes in:
        float64 for float64 input, else float32, or float64 where float32 band powers of audio
        this loud would overflow (inf / inf = NaN)."""
        if pred.shape[-1] < self.n_fft:
            raise ValueError(
                f"pred and target have {pred.shape[-1]} samples; the NMR needs at least one "
                f"STFT frame of n_fft={self.n_fft} samples"
            )
        dtype = pred.dtype if pred.dtype == torch.float64 else torch.float32
        if dtype == torch.float32 and _peak(pred, target) > FLOAT32_SAFE_PEAK:
            dtype = wide_dtype(pred.device, "the NMR's band powers of audio this loud")
        return (pred.reshape(-1, pred.shape[-1]).to(dtype),
                target.reshape(-1, target.shape[-1]).to(dtype))  # fmt: skip

    def _nmr(self, pred, target, max_direct_bytes, block_bytes) -> torch.Tensor:
        """Linear NMR ``(rows,)`` of ``(rows, samples)`` signals in their dtype."""
        dtype = pred.dtype
        framing = Framing(self.n_fft, self.hop_length)
        frames = framing.frames(pred.shape[-1])
        per_frame = self.bytes_per_frame(dtype)
        if pred.shape[0] * frames * per_frame <= max_direct_bytes:
            return self._noise_to_mask(pred, target).mean(dim=(-2, -1))
        sums = framewise_sums(self._block_sums, pred, target, framing, per_frame, block_bytes)
        return sums[:, 0] / (frames * self.grouping.shape[-1])


#: Largest peak amplitude of float32 input whose NMR is computed in float32. A band's power
#: sums up to ~1000 bins of (peak x n_fft)^2: at 1e9 (180 dBFS) that is about 4e27, far
#: inside float32's 3.4e38; louder input is computed in float64 and the result cast back.
FLOAT32_SAFE_PEAK = 1e9


def _peak(*signals: torch.Tensor) -> float:
    return max(float(s.detach().abs().max()) for s in signals)


@functools.lru_cache(maxsize=8)
def _cached_ear_model(sample_rate: float, n_fft: int, hop_length: int) -> _EarModel:
    return _EarModel(sample_rate, n_fft, hop_length)


def _ear_model_for(
    pred: torch.Tensor, target: torch.Tensor, sample_rate: float, n_fft: int, hop_length: int
) -> _EarModel:
    """The (cached) ear model for a checked pair, on the pair's device."""
    check_pair(pred, target)
    model = _cached_ear_model(float(check_sample_rate(sample_rate)), int(n_fft), int(hop_length))
    return model if model.window.device == pred.device else model.to(pred.device)


def noise_to_mask_ratio(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_rate: float,
    n_fft: int = N_FFT,
    hop_length: int = HOP,
) -> torch.Tensor:
    """Noise-to-mask ratio of ``pred`` against the reference ``target`` (linear, per item).

    Args:
        pred: the signal under test, shaped ``(..., samples)``, amplitude 1 = full scale.
        target: the reference, same shape.
        sample_rate: in Hz, at least 36 kHz (the critical bands reach 18 kHz).
        n_fft: STFT size (2048 in BS.1387).
        hop_length: STFT hop (1024, i.e. 50 % overlap, in BS.1387).

    Returns:
        NMR per item, shaped ``(...)``: the mean over frames and bands of noise / mask, linear
        (10 log10 of it is the NMR in dB). Identical inputs give the floor, about 1e-12 over the
        mask; a silent reference gives a finite value against the internal noise.
    """
    return _ear_model_for(pred, target, sample_rate, n_fft, hop_length)(pred, target)


def masking_patterns(
    pred: torch.Tensor,
    target: torch.Tensor,
    sample_rate: float,
    n_fft: int = N_FFT,
    hop_length: int = HOP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two patterns the NMR divides, per STFT frame and critical band, for plots.

    Args:
        pred: the signal under test, ``(..., samples)``, amplitude 1 = full scale.
        target: the reference, same shape.
        sample_rate: Hz, at least 36 kHz.
        n_fft, hop_length: STFT size and hop (BS.1387: 2048 and 1024).

    Returns:
        ``(noise, mask)``, each ``(..., frames, 109)`` energies on the ear model's calibrated
        scale (a full-scale 1019.5 Hz sine at 92 dB SPL): the band energies of the magnitude
        difference, and the masking threshold the reference casts (spread excitation lowered
        by the masking offset). ``noise / mask`` averaged over frames and bands is
        :func:`noise_to_mask_ratio`; band ``k`` is centred at ``critical_bands()[1][k]`` Hz.
        Computed in float64 for float64 inputs, else float32 (float64 for float32 audio too loud
        for its band powers); differentiable.
    """
    model = _ear_model_for(pred, target, sample_rate, n_fft, hop_length)
    lead = pred.shape[:-1]
    noise, mask = model.patterns(*model.rows(pred, target))
    return noise.reshape(*lead, *noise.shape[1:]), mask.reshape(*lead, *mask.shape[1:])


class NMRLoss(nn.Module):
    """Noise-to-mask ratio loss (BS.1387 / Kabal), differentiable; see the module docstring.

    Args:
        sample_rate: in Hz, at least 36 kHz.
        output: ``"linear"`` (noise / mask) or ``"db"`` (10 log10 of it) per item.
        reduction: ``"mean"`` or ``"sum"`` over the ``(batch, channels)`` values, or ``"none"``.
        n_fft: STFT size (2048 in BS.1387).
        hop_length: STFT hop (1024 in BS.1387).
        max_direct_bytes: largest memory (bytes) of the per-frame tensors of all signals, as
            :meth:`_EarModel.bytes_per_frame` counts it, computed in one autograd pass; beyond
            it the NMR is summed in blocks of frames and recomputed in the backward pass (same
            value to float rounding, peak a few times the input). ``math.inf``: never chunk.
        block_bytes: most bytes of per-frame tensors per block when chunking.

    Shapes:
        ``pred`` (signal under test) and ``target`` (reference): ``(batch, channels, samples)``
        with samples >= n_fft; output: a scalar, or ``(batch, channels)`` with
        ``reduction="none"``. Computed in float64 for float64 inputs, else in float32.

    Carson et al. train with 10^(mean over the batch of NMR in dB / 10); that is
    ``10 ** (NMRLoss(sr, output="db")(pred, target) / 10)``.
    """

    def __init__(
        self,
        sample_rate: float,
        output: str = "linear",
        reduction: str = "mean",
        n_fft: int = N_FFT,
        hop_length: int = HOP,
        *,
        max_direct_bytes: float = MAX_DIRECT_BYTES,
        block_bytes: int = BLOCK_BYTES,
    ):
        super().__init__()
        self.max_direct_bytes, self.block_bytes = check_chunking(max_direct_bytes, block_bytes)
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.output = output
        self.reduction = check_reduction(reduction)
        self.ear_model = _EarModel(sample_rate, n_fft, hop_length)

    @property
    def sample_rate(self) -> float:
        return self.ear_model.sample_rate

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_pair(pred, target, min_dim=3)
        nmr = self.ear_model(pred, target, self.max_direct_bytes, self.block_bytes)
        if self.output == "db":
            nmr = 10.0 * torch.log10(nmr)
        return reduce(nmr, self.reduction)
