"""Tests for diffx.io.nam: the .nam format, NAM's own identity models, and error handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffx.io.nam import load_nam, save_nam
from diffx.nn.wavenet import WaveNet

FIXTURES = Path(__file__).parent / "fixtures"
STANDARD = FIXTURES / "nam_wavenet_standard.nam"
MINIMAL = FIXTURES / "nam_wavenet_minimal.nam"


def random_standard(seed=0) -> WaveNet:
    torch.manual_seed(seed)
    model = WaveNet(sample_rate=48000)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def test_roundtrip_identical_outputs(tmp_path):
    model = random_standard()
    path = save_nam(model, tmp_path / "m.nam", metadata={"name": "test", "loudness": -12.5})
    loaded = load_nam(path)
    assert loaded.sample_rate == 48000
    assert loaded.metadata == {"name": "test", "loudness": -12.5}
    assert loaded.layer_configs == model.layer_configs
    assert loaded.head_scale == model.head_scale
    x = torch.rand(2, 1, 4500) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # Saving the loaded model again writes the same file.
    again = save_nam(loaded, tmp_path / "again.nam")
    assert json.loads(again.read_text()) == json.loads(path.read_text())


def test_file_layout(tmp_path):
    model = random_standard()
    data = json.loads(save_nam(model, tmp_path / "m.nam").read_text())
    assert data["architecture"] == "WaveNet" and data["sample_rate"] == 48000
    assert data["config"]["head"] is None and data["config"]["head_scale"] == 0.02
    layer0 = data["config"]["layers"][0]
    assert layer0 == {
        "input_size": 1,
        "condition_size": 1,
        "head_size": 8,
        "channels": 16,
        "kernel_size": 3,
        "dilations": [2**i for i in range(10)],
        "activation": "Tanh",
        "gated": False,
        "head_bias": False,
    }
    w = data["weights"]
    assert len(w) == 13802
    # NAM's order: rechannel (16x1x1), then layer 0's conv weight (16x16x3, row-major), conv
    # bias (16), mixer (16x1x1), 1x1 weight (16x16x1) and bias (16) ... and head_scale last.
    a0 = model.arrays[0]
    layer = a0.layers[0]
    expected = [a0.rechannel.weight, layer.conv.weight, layer.conv.bias, layer.input_mixer.weight]
    expected += [layer.layer1x1.weight, layer.layer1x1.bias]
    flat = torch.cat([t.detach().reshape(-1) for t in expected]).double()
    torch.testing.assert_close(torch.tensor(w[: flat.numel()], dtype=torch.float64), flat)
    assert flat.numel() == 16 + 768 + 16 + 16 + 256 + 16
    last_head = model.arrays[1].head_rechannel
    tail = torch.cat([last_head.weight.detach().reshape(-1), last_head.bias.detach()]).double()
    torch.testing.assert_close(torch.tensor(w[-10:-1], dtype=torch.float64), tail)
    assert w[-1] == pytest.approx(0.02)


def test_standard_identity_fixture_reproduces_input():
    model = load_nam(STANDARD)
    assert model.sample_rate == 48000
    assert model.receptive_field == 4093
    assert model.metadata["gain"] == 0.0
    x = torch.rand(2, 1, 6000) * 2 - 1  # NAM's identity models are exact on [-1, 1]
    torch.testing.assert_close(model(x), x, rtol=0, atol=1e-6)


def test_minimal_fixture_matches_its_formula():
    # Its nine weights give y = relu(x + 1) - 1: identity on [-1, inf), -1 below.
    model = load_nam(MINIMAL)
    assert model.receptive_field == 1
    x = torch.linspace(-3, 3, 601).view(1, 1, -1)
    torch.testing.assert_close(model(x), torch.relu(x + 1) - 1)


def test_loads_07_form_with_kernel_sizes(tmp_path):
    data = json.loads(STANDARD.read_text())
    layer = data["config"]["layers"][1]
    layer["kernel_sizes"] = [layer.pop("kernel_size")] * 10
    layer.update(bottleneck=8, groups_input=1, gating_mode=["none"] * 10)
    layer["layer1x1"] = {"active": True, "groups": 1}
    layer["head1x1"] = {"active": False, "out_channels": 1, "groups": 1}
    path = tmp_path / "new.nam"
    path.write_text(json.dumps(data))
    x = torch.rand(1, 1, 5000) * 2 - 1
    torch.testing.assert_close(load_nam(path)(x), load_nam(STANDARD)(x), rtol=0, atol=0)


def _write(tmp_path, data, name="bad.nam"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_wrong_weight_count(tmp_path):
    data = json.loads(MINIMAL.read_text())
    data["weights"] = data["weights"][:-2]
    path = _write(tmp_path, data)
    with pytest.raises(ValueError, match=r"bad\.nam has 7 weights; its config expects 9"):
        load_nam(path)


def test_unknown_architecture(tmp_path):
    path = _write(tmp_path, {"architecture": "LSTM", "config": {}, "weights": []})
    with pytest.raises(ValueError, match="architecture 'LSTM'"):
        load_nam(path)


def test_unreadable_json_names_file(tmp_path):
    path = _write(tmp_path, "{not json", name="broken.nam")
    with pytest.raises(ValueError, match="broken.nam is not valid JSON"):
        load_nam(path)
    with pytest.raises(ValueError, match="missing.nam"):
        load_nam(tmp_path / "missing.nam")


@pytest.mark.parametrize(
    "change, match",
    [
        ({"bottleneck": 4}, "bottleneck"),
        ({"film_params": {"conv_pre_film": {"active": True}}}, "FiLM"),
        ({"gating_mode": "blended"}, "gating_mode"),
        ({"surprise": 1}, "unknown keys"),
        ({"activation": "Nope"}, "unknown activation"),
    ],
)
def test_unsupported_config(tmp_path, change, match):
    data = json.loads(MINIMAL.read_text())
    data["config"]["layers"][0].update(change)
    with pytest.raises(ValueError, match=match):
        load_nam(_write(tmp_path, data))


def test_save_rejects_other_models(tmp_path):
    with pytest.raises(ValueError, match="WaveNet"):
        save_nam(torch.nn.Linear(1, 1), tmp_path / "x.nam")


def _nam07_standard(activation: str, gated: bool) -> dict:
    """NAM's standard config in the 0.7 form (what current NAM reads), random weights."""
    data = json.loads(STANDARD.read_text())
    count = 0
    for layer in data["config"]["layers"]:
        layer.pop("gated")
        layer["activation"] = [{"type": activation}] * 10
        layer["gating_mode"] = ["gated" if gated else "none"] * 10
        layer["secondary_activation"] = [{"type": "Sigmoid"} if gated else None] * 10
        c, inp, head = layer["channels"], layer["input_size"], layer["head"]
        mid = 2 * c if gated else c
        per_layer = mid * c * 3 + mid + mid + c * c + c
        count += c * inp + 10 * per_layer + head["out_channels"] * (c + head["bias"])
    torch.manual_seed(0)
    weights = (torch.randn(count + 1) * 0.3).tolist()
    weights[-1] = 0.02
    data["weights"] = weights
    return data


@pytest.mark.parametrize("activation, gated", [("Tanh", False), ("Tanh", True), ("ReLU", False)])
def test_matches_neural_amp_modeler_package(tmp_path, activation, gated):
    """Our output equals the neural-amp-modeler package's on the same file (random weights)."""
    pytest.importorskip("nam")
    from_nam = pytest.importorskip("nam.models._from_nam")  # NAM >= 0.10 reads .nam dicts

    data = _nam07_standard(activation, gated)
    path = tmp_path / "m.nam"
    path.write_text(json.dumps(data))
    theirs = from_nam.init_from_nam(json.loads(path.read_text()))
    ours = load_nam(path)
    x = torch.rand(1, 8000) * 2 - 1
    with torch.no_grad():
        expected = theirs(x, pad_start=True)  # NAM zero-pads the start as we do
        got = ours(x.view(1, 1, -1)).view(1, -1)
    assert expected.abs().max() > 1e-3  # a non-trivial output
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_loads_07_form_gated(tmp_path):
    path = tmp_path / "gated.nam"
    path.write_text(json.dumps(_nam07_standard("Tanh", gated=True)))
    model = load_nam(path)
    assert all(c.gated and c.activation == "Tanh" for c in model.layer_configs)
    # Gating doubles the dilated convs' outputs: 23882 weights instead of 13802.
    assert model.num_nam_weights() == 23882
