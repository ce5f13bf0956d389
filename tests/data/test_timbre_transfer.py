"""Timbre-transfer data: shipped phrases, feature caching, clip datasets and splits."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import diffx.data.timbre_transfer as timbre
from diffx.data import TimbreDataModule, shipped_instruments
from diffx.data.timbre_transfer import FixedClips, RandomClips, Track, instrument_files
from diffx.losses import a_weighting_db

SR = 16000
HOP = 64


def melody(path, notes_hz=(220.0, 330.0, 262.0), note_seconds=1.0, amplitude=0.3):
    """A file of harmonic notes (three partials) back to back; returns the per-sample f0."""
    f0 = np.repeat(notes_hz, round(note_seconds * SR))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    audio = amplitude * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)) / 1.75
    sf.write(path, audio, SR, subtype="PCM_16")
    return f0


def test_the_three_instruments_ship_with_held_out_phrases():
    assert {"violin", "flute", "trumpet"} <= set(shipped_instruments())
    for name in ("violin", "flute", "trumpet"):
        splits = {s: instrument_files(name, s) for s in ("train", "valid", "test")}
        assert len(splits["train"]) >= 4 and splits["valid"] and splits["test"]
        assert not set(splits["train"]) & (set(splits["valid"]) | set(splits["test"]))
        info = sf.info(splits["train"][0])
        assert info.samplerate == SR and info.channels == 1
    with pytest.raises(ValueError, match="cello"):
        TimbreDataModule(instrument="cello")


def test_features_of_a_melody_follow_its_notes(tmp_path):
    f0_true = melody(tmp_path / "melody.wav")
    data = TimbreDataModule(audio=[str(tmp_path)], crepe_model="tiny",
                            cache_dir=str(tmp_path / "c"), clip_seconds=0.5)  # fmt: skip
    data.setup()
    whole = {s: data.splits[s][0] for s in ("train", "test", "valid")}
    frames = sum(t.frames for t in whole.values())
    assert frames == -(-f0_true.size // HOP)
    # Held out: the last 10 % for validation, the 10 % before it for testing.
    assert whole["valid"].frames == whole["test"].frames == round(frames * 0.1)
    track = whole["train"]
    frame_f0 = f0_true[: track.frames * HOP : HOP]
    steady = np.abs(np.diff(np.r_[frame_f0[0], frame_f0])) == 0  # away from note changes
    steady &= np.convolve(steady, np.ones(9), "same") == 9
    error = np.abs(1200 * np.log2(track.f0_hz[steady] / frame_f0[steady]))
    assert np.median(error) < 10 and np.percentile(error, 95) < 30
    assert track.confidence[steady].min() > 0.6
    # Loudness: the three partials' A-weighted power, sum of a_k^2 / 2 * A(k f0).
    partials = 0.3 * np.array([1.0, 0.5, 0.25]) / 1.75
    # Frames whose 2048-sample window (16 frames either side) holds one note, not the edge.
    change = np.r_[True, np.diff(frame_f0) != 0]
    inside = np.convolve(change, np.ones(33), "same") == 0
    weights = 10 ** (a_weighting_db(np.outer(frame_f0[inside], [1, 2, 3])) / 10)
    expected_db = 10 * np.log10((weights * partials**2 / 2).sum(axis=1))
    np.testing.assert_allclose(track.loudness_db[inside], expected_db, atol=0.05)
    # Statistics: the training part is 1 s at 220 Hz, 1 s at 330 Hz, 0.4 s at 262 Hz.
    stats = data.statistics()
    assert stats["loudness_quantiles_db"].shape == (101,)
    midi = 69 + 12 * np.log2(np.array([220.0, 330.0, 262.0]) / 440)
    assert stats["mean_pitch_midi"] == pytest.approx(np.average(midi, weights=[1, 1, 0.4]), abs=0.3)


def test_features_are_cached_and_recomputed_when_a_setting_changes(tmp_path, monkeypatch):
    melody(tmp_path / "a.wav", notes_hz=(440.0,))
    cache = tmp_path / "cache"
    calls = []
    real = timbre.compute_features

    def counting(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(timbre, "compute_features", counting)
    audio = torch.tensor(sf.read(tmp_path / "a.wav", dtype="float32")[0])
    first = timbre.cached_features(audio, SR, 250, "tiny", cache)
    second = timbre.cached_features(audio, SR, 250, "tiny", cache)
    assert len(calls) == 1 and len(list(cache.glob("*.npz"))) == 1
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    timbre.cached_features(audio, SR, 200, "tiny", cache)  # another frame rate
    timbre.cached_features(audio * 0.5, SR, 250, "tiny", cache)  # other samples
    assert len(calls) == 3
    # A damaged entry is recomputed, not trusted.
    for path in cache.glob("*.npz"):
        path.write_bytes(b"not a zip")
    timbre.cached_features(audio, SR, 250, "tiny", cache)
    assert len(calls) == 4


def make_track(frames, name="t"):
    t = np.arange(frames, dtype=np.float32)
    return Track(name, np.arange(frames * HOP, dtype=np.float32), 100 + t, t / frames, -t)


def test_random_clips_keep_audio_and_features_aligned():
    torch.manual_seed(0)
    clips = RandomClips([make_track(300), make_track(20)], clip_frames=50, hop=HOP, length=40)
    assert len(clips) == 40 and len(clips.tracks) == 1  # the short track cannot hold a clip
    for i in range(40):
        item = clips[i]
        start = int(item["f0_hz"][0] - 100)
        assert item["audio"].shape == (1, 50 * HOP)
        assert float(item["audio"][0, 0]) == start * HOP  # sample of the first frame
        torch.testing.assert_close(item["loudness_db"], -(start + torch.arange(50.0)))
    with pytest.raises(ValueError, match="clip_seconds"):
        RandomClips([make_track(20)], clip_frames=50, hop=HOP, length=1)


def test_fixed_clips_cover_every_frame():
    clips = FixedClips([make_track(130), make_track(30)], clip_frames=50, hop=HOP)
    starts = [int(clips[i]["f0_hz"][0] - 100) for i in range(len(clips))]
    assert starts == [0, 50, 80, 0]  # 0-50, 50-100, then 80-130 for the remainder; padded
    short = clips[3]
    assert short["audio"].shape == (1, 50 * HOP) and float(short["audio"][0, -1]) == 0.0
    assert float(short["loudness_db"][-1]) == -120.0


def test_unreadable_or_too_short_recordings_are_named(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    data = TimbreDataModule(audio=[str(tmp_path / "broken.wav")], crepe_model="tiny",
                            cache_dir="")  # fmt: skip
    with pytest.raises(ValueError, match="broken.wav"):
        data.setup()
    sf.write(tmp_path / "tiny.wav", np.zeros(100), SR)
    data = TimbreDataModule(audio=[str(tmp_path / "tiny.wav")], crepe_model="tiny", cache_dir="")
    with pytest.raises(ValueError, match="tiny"):
        data.setup()
