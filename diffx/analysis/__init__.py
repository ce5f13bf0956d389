"""Measurements of audio models: harmonic analysis of tone responses, the aliasing metrics of
Carson et al. (DAFx 2025), their test tones, and plots."""

from diffx.analysis.acoustic import (
    WorldSettings,
    gv_ratio_db,
    mel_cepstral_distortion_db,
    modulation_spectrum_distance_db,
    world_analysis,
    world_synthesis,
)
from diffx.analysis.harmonic import (
    HarmonicAnalysis,
    bandlimit,
    chebyshev_spectrum,
    chebyshev_window,
    harmonic_analysis,
    synthesise_harmonics,
)
from diffx.analysis.metrics import (
    AUDIBILITY_NMR_DB,
    AliasingReport,
    aliasing_metrics,
    comparison_metrics,
    harmonic_esr,
    self_metrics,
)
from diffx.analysis.plots import (
    plot_aliasing_metrics,
    plot_spectra,
    plot_timbre_transfer,
    plot_tone_spectrum,
)
from diffx.analysis.style_transfer import (
    crest_factor_db,
    parameter_error,
    rule_based_match,
    side_to_mid_db,
    spectral_centroid_hz,
    style_metrics,
)
from diffx.analysis.tones import (
    SineToneDataset,
    ToneSet,
    chromatic_test_set,
    hz_to_midi,
    midi_to_hz,
    random_training_tones,
)

__all__ = [
    "WorldSettings",
    "gv_ratio_db",
    "mel_cepstral_distortion_db",
    "modulation_spectrum_distance_db",
    "world_analysis",
    "world_synthesis",
    "AUDIBILITY_NMR_DB",
    "AliasingReport",
    "HarmonicAnalysis",
    "SineToneDataset",
    "ToneSet",
    "aliasing_metrics",
    "bandlimit",
    "chebyshev_spectrum",
    "chebyshev_window",
    "chromatic_test_set",
    "comparison_metrics",
    "crest_factor_db",
    "side_to_mid_db",
    "harmonic_analysis",
    "harmonic_esr",
    "hz_to_midi",
    "midi_to_hz",
    "parameter_error",
    "plot_aliasing_metrics",
    "plot_spectra",
    "plot_timbre_transfer",
    "plot_tone_spectrum",
    "random_training_tones",
    "rule_based_match",
    "self_metrics",
    "spectral_centroid_hz",
    "style_metrics",
    "synthesise_harmonics",
]
