"""Reading and writing audio files, neural amp models and phase alignments, and the demo audio
shipped with diffx."""

from diffx.io.audio import (
    DEMO_SAMPLE_RATES,
    demo_audio_files,
    load_audio,
    load_demo,
    save_audio,
)
from diffx.io.models import MODEL_SUFFIXES, load_model, save_model
from diffx.io.phase_alignment import (
    Alignment,
    load_alignment,
    load_alignments,
    save_alignment,
    save_alignments,
)
from diffx.io.players import audio_players, encode_audio

__all__ = [
    "Alignment",
    "audio_players",
    "encode_audio",
    "load_alignment",
    "load_alignments",
    "save_alignment",
    "save_alignments",
    "MODEL_SUFFIXES",
    "DEMO_SAMPLE_RATES",
    "demo_audio_files",
    "load_audio",
    "load_demo",
    "load_model",
    "save_audio",
    "save_model",
]
