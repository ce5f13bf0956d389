"""Resolve audio sources named in configs: shipped demo clips, files and folders.

A config names its audio as a list of strings. Each string is one of:

* a demo clip name (``"guitar_em9"``, ``"bass"``, ...; see :func:`diffx.io.demo_audio_files`);
* a path to an audio file soundfile can read;
* a path to a folder: every audio file in it (sorted, not recursive).

Every clip is read as mono float32 and resampled to the requested rate with
``scipy.signal.resample_poly`` (through :func:`diffx.io.load_audio`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from diffx.io.audio import DEMO_SAMPLE_RATES, load_audio, load_demo

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aif", ".aiff", ".mp3")
"""File suffixes picked up from a folder."""

GUITAR_AND_BASS = (
    "guitar_em9",
    "guitar_e_fifths",
    "guitar_e_slide",
    "guitar_harmonics",
    "bass",
)
"""The shipped real guitar recordings plus the bass phrase: the quickstarts' "G+B" audio."""


def expand_sources(sources: list[str] | tuple[str, ...]) -> list[tuple[str, str | Path]]:
    """Turn source strings into ``(name, demo-name-or-path)`` pairs, checking that each exists.

    Raises:
        ValueError: ``sources`` is empty, or an entry is neither a demo clip nor an existing
            file or folder, or a folder holds no audio; the message names the entry.
    """
    if isinstance(sources, str):
        sources = [sources]
    if not sources:
        raise ValueError("no audio sources given (expected demo names, files or folders)")
    resolved: list[tuple[str, str | Path]] = []
    for entry in sources:
        if entry in DEMO_SAMPLE_RATES:
            resolved.append((entry, entry))
            continue
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                raise ValueError(f"audio folder {str(path)!r} holds no {AUDIO_SUFFIXES} files")
            resolved.extend((p.stem, p) for p in files)
        elif path.is_file():
            resolved.append((path.stem, path))
        else:
            raise ValueError(
                f"audio source {entry!r} is neither a demo clip "
                f"({', '.join(sorted(DEMO_SAMPLE_RATES))}) nor an existing file or folder"
            )
    return resolved


def load_sources(
    sources: list[str] | tuple[str, ...], sample_rate: int
) -> list[tuple[str, torch.Tensor]]:
    """Load every source as ``(name, audio)``, audio float32 ``(1, samples)`` at ``sample_rate``."""
    clips = []
    for name, where in expand_sources(sources):
        if isinstance(where, str):
            audio, _ = load_demo(where, sample_rate=sample_rate)
        else:
            audio, _ = load_audio(where, sample_rate=sample_rate, mono=True)
        clips.append((name, audio))
    return clips


def check_effect_rate(effect, sample_rate: int, name: str) -> None:
    """Raise ``ValueError`` when ``effect`` declares a ``sample_rate`` other than the data's."""
    effect_rate = getattr(effect, "sample_rate", None)
    if effect_rate is not None and effect_rate != sample_rate:
        raise ValueError(
            f"{name} runs at sample_rate={effect_rate} but the data is at {sample_rate}"
        )


def normalize_peak(audio: torch.Tensor, peak_dbfs: float | None) -> torch.Tensor:
    """Scale ``audio`` to an absolute peak of ``peak_dbfs`` (``None``: unchanged; silence stays)."""
    if peak_dbfs is None:
        return audio
    peak = audio.abs().max()
    if peak == 0:
        return audio
    return audio * (10.0 ** (peak_dbfs / 20.0) / peak)
