"""Audio losses: time-domain (ESR, DC), perceptual (NMR, loudness), spectral (auraloss), and the
pre-emphasis filters applied before them. All take ``(batch, channels, samples)`` and a
torch-style ``reduction``."""

from diffx.losses.filters import (
    PRE_EMPHASIS_NAMES,
    AntialiasLowpass,
    AWeighting,
    FirstOrderHighpass,
    a_weighting_db,
    a_weighting_sos,
    antialias_lowpass_taps,
    make_pre_emphasis,
)
from diffx.losses.loudness import (
    LoudnessLoss,
    integrated_loudness,
    k_weighting_sos,
    pyloudnorm_loudness,
)
from diffx.losses.nmr import (
    NMRLoss,
    critical_bands,
    ear_weighting_db,
    masking_patterns,
    noise_to_mask_ratio,
)
from diffx.losses.phase import (
    ComplexSTFTLoss,
    GroupDelayLoss,
    NCCLoss,
    ParallelMixLoss,
    PhaseResponseLoss,
    ncc,
)
from diffx.losses.spectral import (
    MelSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleSpectralLoss,
    SumAndDifferenceSTFTLoss,
    mel_filterbank,
)
from diffx.losses.time_domain import DCLoss, ESRLoss, dc_error, esr

__all__ = [
    "PRE_EMPHASIS_NAMES",
    "AWeighting",
    "AntialiasLowpass",
    "ComplexSTFTLoss",
    "GroupDelayLoss",
    "NCCLoss",
    "ParallelMixLoss",
    "PhaseResponseLoss",
    "DCLoss",
    "ESRLoss",
    "FirstOrderHighpass",
    "LoudnessLoss",
    "MelSTFTLoss",
    "MultiResolutionSTFTLoss",
    "SumAndDifferenceSTFTLoss",
    "MultiScaleSpectralLoss",
    "NMRLoss",
    "a_weighting_db",
    "a_weighting_sos",
    "antialias_lowpass_taps",
    "critical_bands",
    "dc_error",
    "ear_weighting_db",
    "masking_patterns",
    "esr",
    "integrated_loudness",
    "k_weighting_sos",
    "make_pre_emphasis",
    "mel_filterbank",
    "ncc",
    "noise_to_mask_ratio",
    "pyloudnorm_loudness",
]
