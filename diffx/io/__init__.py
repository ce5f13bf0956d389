"""Reading and writing audio files and neural amp models, and the demo audio shipped with diffx."""

from diffx.io.audio import (
    DEMO_SAMPLE_RATES,
    demo_audio_files,
    load_audio,
    load_demo,
    save_audio,
)
from diffx.io.models import MODEL_SUFFIXES, load_model, save_model

__all__ = [
    "MODEL_SUFFIXES",
    "DEMO_SAMPLE_RATES",
    "demo_audio_files",
    "load_audio",
    "load_demo",
    "load_model",
    "save_audio",
    "save_model",
]
