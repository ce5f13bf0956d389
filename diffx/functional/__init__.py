"""Pure differentiable audio functions in physical units (no state, no modules)."""

from diffx.functional.distortion import (
    adaa1,
    adaa_tolerance,
    hard_clip,
    soft_clip,
    tanh_distortion,
)
from diffx.functional.filters import (
    FILTER_TYPES,
    biquad,
    normalize_sos,
    parametric_eq,
    parametric_eq_sos,
    sos_frequency_response,
    sosfilt,
)
from diffx.functional.reverb import (
    band_masks,
    convolution_reverb,
    crossover_frequencies,
    noise_reverb,
    noise_reverb_ir,
)
from diffx.functional.synth import filtered_noise, harmonic_synth, upsample_frames
from diffx.functional.utility import db_to_amplitude, fft_convolve, fractional_delay, gain

__all__ = [
    "FILTER_TYPES",
    "adaa1",
    "adaa_tolerance",
    "band_masks",
    "biquad",
    "convolution_reverb",
    "crossover_frequencies",
    "db_to_amplitude",
    "fft_convolve",
    "filtered_noise",
    "fractional_delay",
    "gain",
    "hard_clip",
    "harmonic_synth",
    "noise_reverb",
    "noise_reverb_ir",
    "normalize_sos",
    "parametric_eq",
    "parametric_eq_sos",
    "soft_clip",
    "sos_frequency_response",
    "sosfilt",
    "tanh_distortion",
    "upsample_frames",
]
