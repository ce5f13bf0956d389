"""Pure differentiable audio functions in physical units (no state, no modules)."""

from diffx.functional.allpass import KINDS as ALLPASS_KINDS  # noqa: I001
from diffx.functional.allpass import (
    allpass_cascade,
    allpass_sos,
    first_order_allpass_sos,
    group_delay,
    phase_response,
    second_order_allpass_sos,
    stretched_allpass_sos,
)
from diffx.functional.circuits import diode_clipper
from diffx.functional.delay import fdn_delays, fdn_reverb, feedback_delay
from diffx.functional.distortion import (
    adaa1,
    adaa_tolerance,
    hard_clip,
    soft_clip,
    tanh_distortion,
)
from diffx.functional.dynamics import compressor, compressor_gain_db
from diffx.functional.gates import expander, expander_gain_db, limiter, noise_gate
from diffx.functional.filters import (
    FILTER_TYPES,
    biquad,
    normalize_sos,
    parametric_eq,
    parametric_eq_sos,
    sos_frequency_response,
    sosfilt,
)
from diffx.functional.postfilter import (
    StreamLayout,
    global_variance,
    moving_average,
    utterance_statistics,
    variance_scaling,
)
from diffx.functional.resampling import fft_downsample, fft_upsample, resample
from diffx.functional.reverb import (
    band_masks,
    convolution_reverb,
    crossover_frequencies,
    noise_reverb,
    noise_reverb_ir,
)
from diffx.functional.synth import filtered_noise, harmonic_synth, upsample_frames
from diffx.functional.stereo import mid_side_decode, mid_side_encode, pan, stereo_width
from diffx.functional.utility import db_to_amplitude, fft_convolve, fractional_delay, gain
from diffx.functional.varying import (
    auto_wah,
    biquad_trajectory,
    modulated_filter,
    sosfilt_varying,
    state_variable_filter,
)

__all__ = [
    "fdn_delays",
    "fdn_reverb",
    "feedback_delay",
    "auto_wah",
    "biquad_trajectory",
    "modulated_filter",
    "sosfilt_varying",
    "state_variable_filter",
    "mid_side_decode",
    "mid_side_encode",
    "pan",
    "stereo_width",
    "StreamLayout",
    "moving_average",
    "utterance_statistics",
    "variance_scaling",
    "diode_clipper",
    "ALLPASS_KINDS",
    "FILTER_TYPES",
    "allpass_cascade",
    "allpass_sos",
    "first_order_allpass_sos",
    "group_delay",
    "phase_response",
    "second_order_allpass_sos",
    "stretched_allpass_sos",
    "adaa1",
    "adaa_tolerance",
    "band_masks",
    "biquad",
    "compressor",
    "expander",
    "expander_gain_db",
    "limiter",
    "noise_gate",
    "compressor_gain_db",
    "convolution_reverb",
    "crossover_frequencies",
    "db_to_amplitude",
    "fft_convolve",
    "fft_downsample",
    "fft_upsample",
    "filtered_noise",
    "fractional_delay",
    "gain",
    "global_variance",
    "hard_clip",
    "harmonic_synth",
    "noise_reverb",
    "noise_reverb_ir",
    "normalize_sos",
    "parametric_eq",
    "parametric_eq_sos",
    "resample",
    "soft_clip",
    "sos_frequency_response",
    "sosfilt",
    "tanh_distortion",
    "upsample_frames",
]
