"""Notebook audio players: what they embed decodes back to the signal at its level."""

import base64
import io
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from diffx.io import audio_players, encode_audio

pytest.importorskip("IPython")


def _decoded(html: str) -> list[tuple[np.ndarray, int]]:
    payloads = re.findall(r'src="data:audio/[a-z]+;base64,([A-Za-z0-9+/=]+)"', html)
    return [sf.read(io.BytesIO(base64.b64decode(p))) for p in payloads]


def _tone(rate=44100, seconds=1.0, amplitude=0.5, freq_hz=441.0):
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


def test_wav_round_trip_is_16_bit_exact():
    x = _tone()
    y, rate = sf.read(io.BytesIO(encode_audio(x, 44100, "wav")))
    assert rate == 44100
    np.testing.assert_allclose(y, x, atol=1 / 32768)


def test_mp3_keeps_rate_length_alignment_and_level():
    x = _tone(rate=48000)
    y, rate = sf.read(io.BytesIO(encode_audio(x, 48000, "mp3")))
    assert rate == 48000 and len(y) == len(x)
    # a perceptual codec: judged by the error against the signal (SNR), not sample equality
    core = slice(4800, -4800)
    snr_db = 10 * np.log10(np.sum(x[core] ** 2) / np.sum((y[core] - x[core]) ** 2))
    assert snr_db > 30
    assert abs(np.sqrt(np.mean(y[core] ** 2)) / np.sqrt(np.mean(x[core] ** 2)) - 1) < 0.01


def test_players_table_rows_levels_and_scaling():
    loud = torch.tensor(_tone(amplitude=2.0))[None, None]  # (1, 1, samples), +6 dBFS
    quiet = torch.tensor(_tone(amplitude=0.25))[None]  # (1, samples)
    html = audio_players({"loud <x>": loud, "quiet": quiet}, 44100, codec="wav").data
    assert html.count("<audio") == 2 and "loud &lt;x&gt;" in html
    assert "+6.0 dBFS (played -6.0 dB down)" in html and "-12.0 dBFS" in html
    (loud_out, _), (quiet_out, _) = _decoded(html)
    np.testing.assert_allclose(loud_out, _tone(amplitude=1.0), atol=1 / 32768)
    np.testing.assert_allclose(quiet_out, _tone(amplitude=0.25), atol=1 / 32768)


def test_channels_are_averaged():
    left, right = _tone(amplitude=0.5), np.zeros(44100)
    html = audio_players({"stereo": np.stack([left, right])}, 44100, codec="wav").data
    (out, _), = _decoded(html)
    np.testing.assert_allclose(out, 0.5 * left, atol=1 / 32768)


@pytest.mark.parametrize(
    "signals, rate, codec, match",
    [
        ({}, 44100, "mp3", "empty"),
        ({"a": np.array([])}, 44100, "mp3", "'a' is empty"),
        ({"nan": np.array([0.0, np.nan])}, 44100, "mp3", "'nan' contains NaN"),
        ({"a": _tone()}, 44100, "ogg", "codec"),
        ({"a": _tone()}, 44000, "mp3", "44000 Hz"),
    ],
)
def test_bad_input_is_named(signals, rate, codec, match):
    with pytest.raises(ValueError, match=match):
        audio_players(signals, rate, codec=codec)
