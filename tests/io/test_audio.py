"""Audio I/O against soundfile and scipy, its errors, and the shipped demo audio."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

import diffx
from diffx.io.audio import (
    DEMO_SAMPLE_RATES,
    demo_audio_files,
    load_audio,
    load_demo,
    save_audio,
)

DEMO_DIR = Path(diffx.__file__).resolve().parent / "assets" / "demo"
ALLOWED_LICENCES = {"CC0-1.0", "MIT", "BSD-3-Clause", "CMU ARCTIC (free for any use)"}
# 24-bit PCM step. libsndfile scales by 2**23 - 1 on write and 2**23 on read, so a round trip
# through PCM_24 is exact to within one step (half a step of rounding plus the scale mismatch).
PCM24_STEP = 2.0**-23


def _noise(channels: int, samples: int, peak: float = 0.9, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-peak, peak, size=(channels, samples))


def _readme_rows() -> dict[str, dict[str, str]]:
    """Parse the table in the demo README into {file name: {column: value}}."""
    lines = (DEMO_DIR / "README.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {}
    for line in table[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        row = dict(zip(header, cells))
        rows[row["file"]] = row
    return rows


# --------------------------------------------------------------------------- writing, reading


@pytest.mark.parametrize("extension", [".wav", ".flac"])
@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip_matches_soundfile(tmp_path, extension, channels):
    x = _noise(channels, 1000)
    path = save_audio(tmp_path / f"a{extension}", torch.from_numpy(x), 44100)

    assert sf.info(path).subtype == "PCM_24"
    assert sf.info(path).samplerate == 44100
    # Oracle: soundfile writing the same samples gives the same decoded audio.
    sf.write(tmp_path / f"oracle{extension}", x.T, 44100, subtype="PCM_24")
    oracle, rate = sf.read(tmp_path / f"oracle{extension}", dtype="float32", always_2d=True)
    np.testing.assert_array_equal(sf.read(path, dtype="float32", always_2d=True)[0], oracle)
    np.testing.assert_allclose(oracle.T, x, rtol=0, atol=PCM24_STEP)

    audio, rate = load_audio(path)
    assert rate == 44100
    assert audio.dtype == torch.float32
    assert audio.shape == (channels, 1000)
    np.testing.assert_array_equal(audio.numpy(), oracle.T)


def test_save_accepts_1d_numpy_float32_and_grad_tensors(tmp_path):
    x = _noise(1, 500)[0]
    save_audio(tmp_path / "np.wav", x.astype(np.float32), 8000)
    t = torch.tensor(x, requires_grad=True)
    save_audio(tmp_path / "t.wav", t, 8000)
    for name in ("np.wav", "t.wav"):
        audio, rate = load_audio(tmp_path / name)
        assert audio.shape == (1, 500) and rate == 8000
        np.testing.assert_allclose(audio[0].numpy(), x, atol=PCM24_STEP)


def test_save_creates_parent_directories(tmp_path):
    path = tmp_path / "deep" / "er" / "x.flac"
    save_audio(path, torch.zeros(2, 10), 48000)
    assert path.is_file()


def test_save_subtype_override(tmp_path):
    save_audio(tmp_path / "a.wav", _noise(1, 100), 16000, subtype="PCM_16")
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"


def test_float_subtype_keeps_values_above_full_scale(tmp_path):
    x = np.array([[0.5, 1.5, -2.0, 0.0]])
    save_audio(tmp_path / "f.wav", x, 8000, subtype="FLOAT")
    audio, _ = load_audio(tmp_path / "f.wav")
    np.testing.assert_array_equal(audio.numpy(), x.astype(np.float32))


def test_exact_full_scale_is_written_without_error(tmp_path):
    save_audio(tmp_path / "fs.wav", np.array([1.0, -1.0, 0.0]), 8000)
    audio, _ = load_audio(tmp_path / "fs.wav")
    np.testing.assert_allclose(audio[0].numpy(), [1.0 - PCM24_STEP, -1.0, 0.0], atol=1e-9)


def test_above_full_scale_raises_unless_clip(tmp_path):
    x = np.array([[0.1, 1.2, -1.5, 0.3]])
    path = tmp_path / "loud.wav"
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        save_audio(path, x, 8000)
    assert "full scale" in str(err.value)
    assert not path.exists()

    with pytest.warns(UserWarning, match="clipping 2 samples"):
        save_audio(path, x, 8000, clip=True)
    audio, _ = load_audio(path)
    np.testing.assert_allclose(audio[0].numpy(), [0.1, 1.0 - PCM24_STEP, -1.0, 0.3], atol=1e-7)


def test_no_warning_when_clip_not_needed(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_audio(tmp_path / "q.wav", _noise(1, 50, peak=0.5), 8000, clip=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_save_refuses_non_finite(tmp_path, bad):
    x = torch.zeros(2, 20)
    x[1, 7] = bad
    path = tmp_path / "bad.wav"
    with pytest.raises(ValueError, match=r"bad\.wav.*NaN or Inf"):
        save_audio(path, x, 8000, clip=True)
    assert not path.exists()


@pytest.mark.parametrize(
    "audio, message",
    [
        (torch.zeros(1, 2, 10), "channels, samples"),
        (torch.zeros(1000, 2), "transposed"),
        (torch.zeros(2, 0), "no samples"),
    ],
)
def test_save_rejects_bad_shapes(tmp_path, audio, message):
    with pytest.raises(ValueError, match=message):
        save_audio(tmp_path / "s.wav", audio, 8000)


def test_save_rejects_unknown_extension(tmp_path):
    with pytest.raises(ValueError, match=r"x\.xyz"):
        save_audio(tmp_path / "x.xyz", torch.zeros(1, 10), 8000)


@pytest.mark.parametrize("rate", [0, -44100, 44100.0, True, None])
def test_bad_sample_rate_raises(tmp_path, rate):
    with pytest.raises(ValueError, match="sample_rate"):
        save_audio(tmp_path / "r.wav", torch.zeros(1, 10), rate)
    save_audio(tmp_path / "ok.wav", torch.zeros(1, 10), 8000)
    if rate is not None:
        with pytest.raises(ValueError, match="sample_rate"):
            load_audio(tmp_path / "ok.wav", sample_rate=rate)


def test_mono_averages_channels(tmp_path):
    x = _noise(3, 400)
    save_audio(tmp_path / "m.flac", x, 22050)
    stereo, _ = load_audio(tmp_path / "m.flac")
    mono, rate = load_audio(tmp_path / "m.flac", mono=True)
    assert mono.shape == (1, 400) and rate == 22050
    np.testing.assert_allclose(mono[0].numpy(), stereo.numpy().mean(axis=0), atol=1e-7)


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("file_rate, target_rate", [(44100, 48000), (48000, 16000), (8000, 44100)])
def test_resampling_preserves_a_sine(tmp_path, file_rate, target_rate):
    freq_hz = 440.0
    n = file_rate // 2
    t = np.arange(n) / file_rate
    save_audio(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * freq_hz * t), file_rate)

    audio, rate = load_audio(tmp_path / "sine.wav", sample_rate=target_rate)
    assert rate == target_rate
    assert audio.dtype == torch.float32
    assert audio.shape == (1, math.ceil(n * target_rate / file_rate))

    # Same result as scipy's polyphase resampler with the reduced exact ratio.
    g = math.gcd(file_rate, target_rate)
    original, _ = sf.read(tmp_path / "sine.wav", dtype="float64")
    expected = scipy.signal.resample_poly(original, target_rate // g, file_rate // g)
    np.testing.assert_allclose(audio[0].numpy(), expected, atol=1e-6)

    # Independent check: away from the edges (filter transients) the output is the same sine
    # sampled at the new rate, so frequency, amplitude and phase are all preserved.
    t_new = np.arange(audio.shape[-1]) / target_rate
    interior = slice(audio.shape[-1] // 10, -audio.shape[-1] // 10)
    analytic = 0.5 * np.sin(2 * np.pi * freq_hz * t_new)
    np.testing.assert_allclose(audio[0, interior].numpy(), analytic[interior], atol=2e-3)


def test_same_rate_is_not_resampled(tmp_path):
    x = _noise(2, 300)
    save_audio(tmp_path / "same.wav", x, 44100)
    a, _ = load_audio(tmp_path / "same.wav")
    b, rate = load_audio(tmp_path / "same.wav", sample_rate=44100)
    assert rate == 44100
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- read errors


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_audio(path)


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_audio(path)


def test_truncated_header_is_named(tmp_path):
    good = tmp_path / "good.wav"
    save_audio(good, _noise(1, 100), 8000)
    path = tmp_path / "truncated.wav"
    path.write_bytes(good.read_bytes()[:20])
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_audio(path)


def test_empty_file_is_named(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_audio(path)


def test_file_without_samples_is_named(tmp_path):
    path = tmp_path / "zero_frames.wav"
    sf.write(path, np.zeros((0, 1)), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*no samples"):
        load_audio(path)


def test_nan_content_is_named(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.zeros((50, 1))
    x[10] = np.nan
    sf.write(path, x, 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*NaN"):
        load_audio(path)


def test_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=re.escape(str(tmp_path))):
        load_audio(tmp_path)


# --------------------------------------------------------------------------- demo audio


def test_demo_files_are_the_shipped_ones():
    files = demo_audio_files()
    assert set(files) == set(DEMO_SAMPLE_RATES)
    shipped = {p.stem for p in DEMO_DIR.glob("*.flac")}
    assert shipped == set(files)
    for path in files.values():
        assert path.resolve().parent == DEMO_DIR


def test_demo_names_needed_downstream_exist():
    assert {"guitar_em9", "voice", "violin", "flute", "trumpet", "bass", "guitar_clean"} <= set(
        DEMO_SAMPLE_RATES
    )


@pytest.mark.parametrize("name", sorted(DEMO_SAMPLE_RATES))
def test_demo_file_loads_and_matches_readme(name):
    row = _readme_rows()[f"{name}.flac"]
    info = sf.info(demo_audio_files()[name])
    assert info.channels == 1
    assert info.subtype in ("PCM_16", "PCM_24")

    audio, rate = load_demo(name)
    assert rate == DEMO_SAMPLE_RATES[name] == int(row["sample rate (Hz)"])
    assert audio.shape[0] == 1
    assert audio.shape[-1] / rate == pytest.approx(float(row["duration (s)"]), abs=1e-3)
    assert bool(torch.isfinite(audio).all())
    peak = float(audio.abs().max())
    rms_db = 20 * math.log10(float(audio.pow(2).mean().sqrt()))
    assert 0.1 < peak <= 1.0
    assert rms_db > -40.0  # clearly non-silent


def test_load_demo_resamples():
    audio, rate = load_demo("voice", sample_rate=16000)
    native, native_rate = load_demo("voice")
    assert rate == 16000
    assert audio.shape[-1] == math.ceil(native.shape[-1] * 16000 / native_rate)


def test_load_demo_unknown_name_lists_names():
    with pytest.raises(ValueError, match="guitar_em9"):
        load_demo("kazoo")


def test_readme_lists_every_audio_file_with_a_free_licence():
    rows = _readme_rows()
    audio_files = {
        p.name for p in DEMO_DIR.iterdir() if p.suffix.lower() in {".flac", ".wav", ".ogg"}
    }
    assert set(rows) == audio_files
    for row in rows.values():
        assert row["licence"] in ALLOWED_LICENCES
        assert row["source package"] and row["original file"] and row["processing"]
    for licence_file in (
        "LICENSE-CC0.txt",
        "LICENSE-FluidR3-MIT.txt",
        "LICENSE-puredata-BSD-3-Clause.txt",
        "LICENSE-CMU-ARCTIC.txt",
    ):
        assert (DEMO_DIR / licence_file).is_file()


def test_cmu_arctic_clips_keep_the_notice():
    """The CMU ARCTIC licence asks to keep its notice, mark modifications and keep authors."""
    rows = _readme_rows()
    arctic = {name for name, row in rows.items() if row["licence"].startswith("CMU ARCTIC")}
    assert arctic == {"arctic_a0007.flac", "arctic_a0009.flac"}
    text = (DEMO_DIR / "LICENSE-CMU-ARCTIC.txt").read_text()
    for needed in (
        *arctic,
        "Carnegie Mellon University",
        "Copyright (c) 2003",
        "free for use for any purpose (commercial or otherwise)",
        "Any modifications must be clearly marked as such.",
        "Modifications:",
        "John Kominek and Alan W",
    ):
        assert needed in text
    for name in arctic:
        assert DEMO_SAMPLE_RATES[name.removesuffix(".flac")] == 16000
        assert rows[name]["processing"] == "lossless"


def test_demo_set_stays_small():
    total = sum(p.stat().st_size for p in DEMO_DIR.iterdir() if p.is_file())
    assert total < 6e6
