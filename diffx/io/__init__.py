"""Reading and writing audio files, and the demo audio shipped with diffx."""

from diffx.io.audio import (
    DEMO_SAMPLE_RATES,
    demo_audio_files,
    load_audio,
    load_demo,
    save_audio,
)

__all__ = [
    "DEMO_SAMPLE_RATES",
    "demo_audio_files",
    "load_audio",
    "load_demo",
    "save_audio",
]
