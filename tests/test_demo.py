"""``diffx demo`` writes listenable audio and plots for every effect."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from diffx.commands.demo import STEPS
from diffx.commands.main import main


def test_demo_writes_audio_and_plots(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--seconds", "1.0"]) == 0
    for name in STEPS:
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        audio, rate = sf.read(tmp_path / f"{name}_output.wav")
        assert rate == 44100
        assert np.isfinite(audio).all()
        peak = np.abs(audio).max()
        assert 0.5 < peak <= 1.0, (name, peak)  # peak-normalized to -1 dBFS, never clipped


def test_demo_changes_the_audio(tmp_path):
    main(["demo", "--out", str(tmp_path), "--seconds", "1.0"])
    for name in ("eq", "compressor", "allpass", "distortion"):
        dry, _ = sf.read(tmp_path / f"{name}_input.wav")
        wet, _ = sf.read(tmp_path / f"{name}_output.wav")
        dry = dry / np.abs(dry).max()
        wet = wet[: len(dry)] / np.abs(wet).max()
        assert np.abs(wet - dry).max() > 0.05, name


def test_demo_rejects_bad_length(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seconds", "0"]) == 2
    assert "--seconds must be a number >= 0.5, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
