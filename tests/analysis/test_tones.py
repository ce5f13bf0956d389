"""Tests of diffx.analysis.tones against analytic values (equal temperament, numpy sines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader

from diffx.analysis.tones import (
    SineToneDataset,
    ToneSet,
    chromatic_test_set,
    hz_to_midi,
    midi_to_hz,
    random_training_tones,
)

FS = 44100


@pytest.fixture(scope="module")
def chromatic() -> ToneSet:
    return chromatic_test_set(FS)


def test_midi_conversion():
    assert float(midi_to_hz(69)) == 440.0
    assert float(midi_to_hz(21)) == pytest.approx(27.5, abs=1e-12)  # A0, four octaves down
    assert float(midi_to_hz(108)) == pytest.approx(4186.009044809578, abs=1e-9)  # C8
    assert float(midi_to_hz(127)) == pytest.approx(12543.853951415975, abs=1e-9)
    assert float(hz_to_midi(880.0)) == pytest.approx(81.0, abs=1e-12)


def test_chromatic_set_layout(chromatic):
    assert len(chromatic) == 88 * 3
    assert chromatic.audio.shape == (264, 1, round(1.2 * FS))
    assert chromatic.audio.dtype == torch.float64
    assert chromatic.discard_samples == round(0.2 * FS)
    assert chromatic.analysed_samples == FS  # 1 s, even
    expected_midi = np.tile(np.arange(21, 109), 3)
    np.testing.assert_array_equal(chromatic.midi.numpy(), expected_midi)
    np.testing.assert_array_equal(chromatic.level_dbfs.numpy()[::88], [-36.0, -18.0, -6.0])
    np.testing.assert_allclose(chromatic.f0_hz.numpy(), 440.0 * 2 ** ((expected_midi - 69) / 12))
    np.testing.assert_allclose(
        chromatic.amplitude.numpy(), 10 ** (np.repeat([-36, -18, -6], 88) / 20)
    )
    assert float(chromatic.phase.abs().max()) == 0.0


def test_chromatic_tones_are_the_stated_sines(chromatic):
    t = np.arange(chromatic.audio.shape[-1]) / FS
    for i in (0, 48, 88 + 87, 263):
        f0, amp = float(chromatic.f0_hz[i]), float(chromatic.amplitude[i])
        expected = amp * np.sin(2 * np.pi * f0 * t)
        # The oracle's own argument, up to ~3e4 rad, carries ~4e-12 rad of rounding.
        np.testing.assert_allclose(chromatic.audio[i, 0].numpy(), expected, rtol=0, atol=1e-10)
        # Peak level as stated, read off the samples (a 1.2 s sine hits its peak closely).
        peak_db = 20 * np.log10(np.abs(chromatic.audio[i, 0].numpy()).max())
        assert peak_db == pytest.approx(float(chromatic.level_dbfs[i]), abs=1e-3)
        # Frequency read off the spectrum: peak of the 64x zero-padded Hann-windowed DFT.
        segment = chromatic.audio[i, 0, chromatic.discard_samples :].numpy()
        pad = 64 * segment.size
        peak = np.argmax(np.abs(np.fft.rfft(segment * np.hanning(segment.size), pad)))
        assert peak * FS / pad == pytest.approx(f0, abs=0.02)


def test_chromatic_set_other_rates_and_options():
    tones = chromatic_test_set(
        48000, levels_dbfs=(-12,), midi_low=60, midi_high=62, dtype=torch.float32
    )
    assert len(tones) == 3
    assert tones.audio.dtype == torch.float32
    assert tones.discard_samples == 9600 and tones.analysed_samples == 48000
    sub = tones.subset([2, 0])
    assert sub.midi.tolist() == [62.0, 60.0]
    assert sub.audio.shape == (2, 1, 57600)
    torch.testing.assert_close(sub.audio[1], tones.audio[0])


def test_chromatic_set_errors():
    with pytest.raises(ValueError, match="even number"):
        chromatic_test_set(44101)  # 52921 - 8820 = 44101 samples, odd
    with pytest.raises(ValueError, match="midi_high.*Nyquist"):
        chromatic_test_set(8000)  # C8 = 4186 Hz > 4 kHz
    with pytest.raises(ValueError, match="levels_dbfs"):
        chromatic_test_set(FS, levels_dbfs=(-6, math.nan))
    with pytest.raises(ValueError, match="midi_low must be <= midi_high"):
        chromatic_test_set(FS, midi_low=80, midi_high=60)
    with pytest.raises(ValueError, match="sample_rate"):
        chromatic_test_set(0)


def test_random_tones_follow_the_stated_distributions():
    tones = random_training_tones(
        4000, FS, duration_s=0.02, discard_s=0.0, generator=torch.Generator().manual_seed(0)
    )
    assert tones.audio.shape == (4000, 1, 882)
    assert tones.audio.dtype == torch.float32
    midi, amp, phase = tones.midi.numpy(), tones.amplitude.numpy(), tones.phase.numpy()
    assert midi.min() >= 21 and midi.max() <= 127
    assert amp.min() > 0 and amp.max() <= 1
    assert phase.min() >= 0 and phase.max() < 2 * np.pi
    # Uniform in MIDI note (log-uniform f0), linear amplitude and phase.
    assert stats.kstest(midi, stats.uniform(21, 106).cdf).pvalue > 1e-3
    assert stats.kstest(amp, stats.uniform(0, 1).cdf).pvalue > 1e-3
    assert stats.kstest(phase, stats.uniform(0, 2 * np.pi).cdf).pvalue > 1e-3
    np.testing.assert_allclose(tones.f0_hz.numpy(), 440 * 2 ** ((midi - 69) / 12))
    np.testing.assert_allclose(tones.level_dbfs.numpy(), 20 * np.log10(amp))
    t = np.arange(882) / FS
    expected = amp[:, None] * np.sin(2 * np.pi * tones.f0_hz.numpy()[:, None] * t + phase[:, None])
    np.testing.assert_allclose(tones.audio[:, 0].numpy(), expected, rtol=0, atol=1e-6)


def test_random_tones_are_reproducible():
    a = random_training_tones(
        5, FS, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    b = random_training_tones(
        5, FS, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    c = random_training_tones(
        5, FS, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    torch.testing.assert_close(a.audio, b.audio, rtol=0, atol=0)
    assert not torch.equal(a.midi, c.midi)
    assert a.analysed_samples == FS


def test_random_tones_errors():
    with pytest.raises(ValueError, match="midi_high = 127 is 12543.9 Hz, not below Nyquist"):
        random_training_tones(4, 22050)
    random_training_tones(4, 22050, midi_high=100, duration_s=0.2, discard_s=0.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        random_training_tones(0, FS)
    with pytest.raises(ValueError, match="duration_s"):
        random_training_tones(2, FS, duration_s=-1)


def test_dataset_items():
    ds = SineToneDataset(8, FS, duration_s=0.1, discard_s=0.0, seed=5)
    assert len(ds) == 8
    item = ds[3]
    assert set(item) == {"input", "f0_hz", "amplitude", "phase", "midi"}
    assert item["input"].shape == (1, 4410) and item["input"].dtype == torch.float32
    assert item["f0_hz"].dtype == torch.float64 and item["f0_hz"].dim() == 0
    f0, amp, phase = float(item["f0_hz"]), float(item["amplitude"]), float(item["phase"])
    assert 21 <= float(item["midi"]) <= 127 and 0 < amp <= 1
    assert f0 == pytest.approx(440 * 2 ** ((float(item["midi"]) - 69) / 12), rel=1e-12)
    t = np.arange(4410) / FS
    np.testing.assert_allclose(
        item["input"][0].numpy(), amp * np.sin(2 * np.pi * f0 * t + phase), atol=1e-6
    )


def test_dataset_reproducibility_and_epochs():
    a = SineToneDataset(4, FS, duration_s=0.1, discard_s=0.0, seed=1)
    b = SineToneDataset(4, FS, duration_s=0.1, discard_s=0.0, seed=1)
    assert float(a[2]["f0_hz"]) == float(b[2]["f0_hz"])
    assert float(a[2]["f0_hz"]) != float(a[1]["f0_hz"])
    assert float(a[-1]["f0_hz"]) == float(a[3]["f0_hz"])
    before = float(a[2]["f0_hz"])
    a.set_epoch(1)
    assert float(a[2]["f0_hz"]) != before
    with pytest.raises(IndexError):
        a[4]


def test_dataset_batches_through_a_dataloader():
    ds = SineToneDataset(6, FS, duration_s=0.1, discard_s=0.0)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["input"].shape == (4, 1, 4410)
    assert batch["f0_hz"].shape == (4,) and batch["f0_hz"].dtype == torch.float64


def test_dataset_errors():
    with pytest.raises(ValueError, match="Nyquist"):
        SineToneDataset(4, 16000)
    with pytest.raises(ValueError, match="seed"):
        SineToneDataset(4, FS, seed=-1)
