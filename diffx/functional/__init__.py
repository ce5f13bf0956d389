"""Pure differentiable audio functions in physical units (no state, no modules)."""

from diffx.functional.filters import (
    FILTER_TYPES,
    biquad,
    normalize_sos,
    parametric_eq,
    parametric_eq_sos,
    sos_frequency_response,
    sosfilt,
)

__all__ = [
    "FILTER_TYPES",
    "biquad",
    "normalize_sos",
    "parametric_eq",
    "parametric_eq_sos",
    "sos_frequency_response",
    "sosfilt",
]
