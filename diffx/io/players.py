"""Audio players for notebooks: a table of named signals, each with its peak level and a player.

IPython's ``Audio`` embeds uncompressed 16-bit WAV, about 250 KiB for 3 s at 44.1 kHz, so a
notebook with a dozen stored players weighs megabytes. These players embed MP3 (libsndfile's
LAME encoder, through soundfile; every browser plays it) at its highest quality setting,
about 130 kbit/s: a fifth of the size.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping

import numpy as np
import soundfile as sf
import torch

from diffx._validation import check_sample_rate

CODECS = {"mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"), "wav": ("WAV", "PCM_16", "audio/wav")}
# libsndfile's MP3 writer accepts these rates only (MPEG-1/2/2.5 layer III).
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


def _as_mono_array(audio: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    samples = (
        audio.detach().to("cpu", torch.float64).numpy()
        if isinstance(audio, torch.Tensor)
        else np.asarray(audio, dtype=np.float64)
    )
    if samples.size == 0:
        raise ValueError(f"signal {name!r} is empty")
    if not np.isfinite(samples).all():
        raise ValueError(f"signal {name!r} contains NaN or Inf")
    if samples.ndim >= 2 and samples.shape[-2] > 1:
        # (..., channels, samples): several channels are mixed down; a player is mono here
        samples = samples.mean(axis=-2)
    return samples.reshape(-1)


def _check_codec(codec: str) -> tuple[str, str, str]:
    """``(file format, subtype, MIME type)`` of a codec name."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    return CODECS[codec]


def encode_audio(samples: np.ndarray, sample_rate: int, codec: str = "mp3") -> bytes:
    """``(samples,)`` float audio in [-1, 1] as the bytes of an MP3 or 16-bit WAV file."""
    file_format, subtype, _ = _check_codec(codec)
    if codec == "mp3" and sample_rate not in MP3_RATES:
        raise ValueError(
            f"MP3 cannot store {sample_rate} Hz (it takes {', '.join(map(str, MP3_RATES))}); "
            "resample the signal or use codec='wav'"
        )
    buffer = io.BytesIO()
    extra = {"compression_level": 0.0} if codec == "mp3" else {}
    sf.write(buffer, samples, sample_rate, format=file_format, subtype=subtype, **extra)
    return buffer.getvalue()


def audio_players(
    signals: Mapping[str, torch.Tensor | np.ndarray],
    sample_rate: float,
    codec: str = "mp3",
):
    """A table of players, one row per named signal, for display in a notebook.

    Levels are kept as they are (no per-player normalization, so the loudness differences
    between, say, a dry and a compressed signal are heard); a signal peaking above full scale
    is scaled down to play and its row says by how much.

    Args:
        signals: name -> audio, any shape ending in ``(channels, samples)`` or ``(samples,)``
            (channels are averaged; a batch is played one item after the other).
        sample_rate: Hz, shared by every signal.
        codec: ``"mp3"`` (small; rates of :data:`MP3_RATES`) or ``"wav"`` (exact, 16-bit).

    Returns:
        An ``IPython.display.HTML`` object (shown when it is a cell's last value, or with
        ``display``).

    Raises:
        ValueError: no signals, an empty or non-finite signal, an unknown codec, or a rate MP3
            cannot store.
    """
    from IPython.display import HTML

    rate = int(round(check_sample_rate(sample_rate)))
    if not signals:
        raise ValueError("signals is empty: give at least one name -> audio entry")
    _, _, mime = _check_codec(codec)
    rows = []
    for name, audio in signals.items():
        samples = _as_mono_array(audio, name)
        peak = float(np.abs(samples).max())
        scale = 1.0 / peak if peak > 1.0 else 1.0
        payload = base64.b64encode(encode_audio(samples * scale, rate, codec)).decode("ascii")
        level = f"{20 * math.log10(peak):+.1f} dBFS" if peak > 0 else "silent"
        if scale != 1.0:
            level += f" (played {20 * math.log10(scale):.1f} dB down)"
        rows.append(
            f"<tr><td>{html.escape(str(name))}</td><td>{level}</td><td>"
            f'<audio controls preload="none" src="data:{mime};base64,{payload}"></audio>'
            "</td></tr>"
        )
    header = "<tr><th>signal</th><th>peak</th><th>player</th></tr>"
    return HTML(f"<table>{header}{''.join(rows)}</table>")
