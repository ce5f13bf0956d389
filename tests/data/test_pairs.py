"""Audio-pair data: sources, segmenting, the train/validation split and bad input."""

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import lfilter

from diffx.data import AudioPairDataModule, SegmentDataset, expand_sources, normalize_peak
from diffx.io import load_demo


def _write_pair(tmp_path, seconds=1.0, sample_rate=44100):
    rng = np.random.default_rng(0)
    x = 0.3 * rng.standard_normal(int(seconds * sample_rate)).astype(np.float32)
    y = lfilter([0.5, 0.5], [1.0], np.tanh(3 * x)).astype(np.float32)  # a known "device"
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    sf.write(tmp_path / "in" / "a.wav", x, sample_rate, subtype="FLOAT")
    sf.write(tmp_path / "out" / "a.wav", y, sample_rate, subtype="FLOAT")
    return x, y


def test_expand_sources_names_demo_files_and_folders(tmp_path):
    _write_pair(tmp_path)
    resolved = expand_sources(["bass", str(tmp_path / "in"), str(tmp_path / "out" / "a.wav")])
    assert [name for name, _ in resolved] == ["bass", "a", "a"]
    with pytest.raises(ValueError, match="no_such_clip"):
        expand_sources(["no_such_clip"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        expand_sources([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="no audio sources"):
        expand_sources([])


def test_normalize_peak():
    x = torch.tensor([[0.1, -0.5, 0.25]])
    y = normalize_peak(x, -6.0)
    assert y.abs().max().item() == pytest.approx(10 ** (-6 / 20))
    assert torch.equal(normalize_peak(torch.zeros(1, 4), -6.0), torch.zeros(1, 4))
    assert normalize_peak(x, None) is x


def test_recorded_pairs_split_in_time_and_segment_exactly(tmp_path):
    x, y = _write_pair(tmp_path, seconds=1.0)
    dm = AudioPairDataModule(
        inputs=[str(tmp_path / "in")],
        targets=[str(tmp_path / "out")],
        segment_samples=4000,
        hop_samples=3000,
        val_fraction=0.25,
        val_segment_samples=5000,
        batch_size=2,
    )
    dm.setup("fit")
    split = int(round(len(x) * 0.75))
    # every training segment is the exact slice of the recordings, all before the split
    for i in range(len(dm.train_set)):
        item = dm.train_set[i]
        start = i * 3000
        assert start + 4000 <= split
        np.testing.assert_array_equal(item["input"][0].numpy(), x[start : start + 4000])
        np.testing.assert_array_equal(item["target"][0].numpy(), y[start : start + 4000])
    assert len(dm.train_set) == (split - 4000) // 3000 + 1
    # validation covers the held-out tail
    val = torch.cat([b["input"][0, 0] for b in dm.val_dataloader()])
    np.testing.assert_array_equal(val.numpy(), x[split : split + val.numel()])
    assert val.numel() >= len(x) - split - 5000 // 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (2, 1, 4000)


def test_effect_targets_come_from_the_effect():
    class Halve(torch.nn.Module):
        sample_rate = 44100

        def forward(self, x):
            return 0.5 * x

    dm = AudioPairDataModule(
        inputs=["guitar_harmonics"], effect=Halve(), input_peak_dbfs=-3.0, segment_samples=8192
    )
    dm.setup("fit")
    item = dm.train_set[3]
    torch.testing.assert_close(item["target"], 0.5 * item["input"])
    whole, _ = load_demo("guitar_harmonics", sample_rate=44100)
    peak = max(dm.clips[0][1].abs().max().item(), 0)
    assert peak == pytest.approx(10 ** (-3 / 20), rel=1e-6)
    assert dm.clips[0][1].shape == whole.shape


def test_bad_configuration_errors(tmp_path):
    _write_pair(tmp_path)
    with pytest.raises(ValueError, match="exactly one of targets"):
        AudioPairDataModule(inputs=["bass"])
    with pytest.raises(ValueError, match="val_fraction"):
        AudioPairDataModule(inputs=["bass"], effect=torch.nn.Identity(), val_fraction=1.0)

    class Slow(torch.nn.Module):
        sample_rate = 48000

    with pytest.raises(ValueError, match="48000"):
        AudioPairDataModule(inputs=["bass"], effect=Slow(), sample_rate=44100)
    # recorded pairs of different lengths name both files
    sf.write(tmp_path / "short.wav", np.zeros(100, np.float32), 44100)
    dm = AudioPairDataModule(
        inputs=[str(tmp_path / "in" / "a.wav")], targets=[str(tmp_path / "short.wav")]
    )
    with pytest.raises(ValueError, match="'a'.*'short'"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="segment_samples"):
        SegmentDataset([torch.zeros(1, 10)], [torch.zeros(1, 10)], 20, 5, ["tiny"])


def test_non_finite_effect_output_is_reported():
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x * float("nan")

    dm = AudioPairDataModule(inputs=["voice2"], effect=Broken(), segment_samples=1024)
    with pytest.raises(ValueError, match="Broken.*voice2"):
        dm.setup("fit")
