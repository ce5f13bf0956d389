"""load_model / save_model choose the format by suffix and content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffx.io import load_model, save_model
from diffx.nn import LSTMAmp, WaveNet

FIXTURES = Path(__file__).parent / "fixtures"


def test_nam_fixture_loads_as_wavenet_and_round_trips(tmp_path):
    model = load_model(FIXTURES / "nam_wavenet_standard.nam")
    assert isinstance(model, WaveNet)
    x = torch.linspace(-1, 1, 2000).view(1, 1, -1)
    torch.testing.assert_close(model(x), x, atol=1e-6, rtol=0)  # NAM's identity test model
    copy = load_model(save_model(model, tmp_path / "copy.nam"))
    torch.testing.assert_close(copy(x), model(x), atol=0, rtol=0)
    assert copy.sample_rate == model.sample_rate


def test_nam_export_with_a_json_suffix_is_read_as_nam(tmp_path):
    data = json.loads((FIXTURES / "nam_wavenet_minimal.nam").read_text())
    path = tmp_path / "minimal.json"
    path.write_text(json.dumps(data))
    assert isinstance(load_model(path), WaveNet)


def test_lstm_round_trips_through_guitarml_json(tmp_path):
    torch.manual_seed(0)
    model = LSTMAmp(hidden_size=8, sample_rate=48000)
    copy = load_model(save_model(model, tmp_path / "amp.json"))
    assert isinstance(copy, LSTMAmp) and copy.sample_rate == 48000
    x = torch.randn(2, 1, 300) * 0.3
    torch.testing.assert_close(copy(x), model(x), atol=0, rtol=0)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown model format 'amp.onnx'"):
        load_model(tmp_path / "amp.onnx")
    with pytest.raises(ValueError, match="unknown model format"):
        save_model(LSTMAmp(hidden_size=2), tmp_path / "amp.pt")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_model(broken)
    with pytest.raises(ValueError, match="missing.json"):
        load_model(tmp_path / "missing.json")
