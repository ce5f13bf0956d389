"""GuitarML / Proteus JSON: hand-written files against a NumPy recurrence, round trips, errors.

The hand-written files follow the layout CoreAudioML's ``SimpleRNN.save_model`` writes
(``model_data`` + ``state_dict`` with torch parameter names), with weights from a seeded NumPy
generator; the expected output is the LSTM / GRU recurrence written out in NumPy with torch's
gate order (LSTM: i, f, g, o; GRU: r, z, n), independent of torch.nn.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffx.io.guitarml import load_guitarml, read_guitarml, save_guitarml, to_guitarml
from diffx.nn.lstm import LSTMAmp


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _numpy_lstm_amp(sd: dict, u: np.ndarray, hidden: int, skip: bool) -> np.ndarray:
    """u: (samples, input_size) for one item; returns (samples,)."""
    w_ih, w_hh = np.asarray(sd["rec.weight_ih_l0"]), np.asarray(sd["rec.weight_hh_l0"])
    b = np.asarray(sd["rec.bias_ih_l0"]) + np.asarray(sd["rec.bias_hh_l0"])
    h, c = np.zeros(hidden), np.zeros(hidden)
    out = np.empty(len(u))
    for n, un in enumerate(u):
        z = w_ih @ un + w_hh @ h + b
        i, f = _sigmoid(z[:hidden]), _sigmoid(z[hidden : 2 * hidden])
        g, o = np.tanh(z[2 * hidden : 3 * hidden]), _sigmoid(z[3 * hidden :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[n] = np.asarray(sd["lin.weight"])[0] @ h + np.sum(sd.get("lin.bias", [0.0]))
    return out + (u[:, 0] if skip else 0.0)


def _numpy_gru_amp(sd: dict, u: np.ndarray, hidden: int, skip: bool) -> np.ndarray:
    w_ih, w_hh = np.asarray(sd["rec.weight_ih_l0"]), np.asarray(sd["rec.weight_hh_l0"])
    b_ih, b_hh = np.asarray(sd["rec.bias_ih_l0"]), np.asarray(sd["rec.bias_hh_l0"])
    h = np.zeros(hidden)
    out = np.empty(len(u))
    H = hidden
    for n, un in enumerate(u):
        gi, gh = w_ih @ un + b_ih, w_hh @ h + b_hh
        r = _sigmoid(gi[:H] + gh[:H])
        z = _sigmoid(gi[H : 2 * H] + gh[H : 2 * H])
        cand = np.tanh(gi[2 * H :] + r * gh[2 * H :])
        h = (1 - z) * cand + z * h
        out[n] = np.asarray(sd["lin.weight"])[0] @ h + np.sum(sd.get("lin.bias", [0.0]))
    return out + (u[:, 0] if skip else 0.0)


def _hand_written(unit_type="LSTM", input_size=1, hidden=5, skip=1, bias_fl=True, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    g = {"LSTM": 4, "GRU": 3}[unit_type] * hidden

    def arr(*shape):
        return rng.uniform(-0.8, 0.8, size=shape).tolist()

    state_dict = {
        "rec.weight_ih_l0": arr(g, input_size),
        "rec.weight_hh_l0": arr(g, hidden),
        "rec.bias_ih_l0": arr(g),
        "rec.bias_hh_l0": arr(g),
        "lin.weight": arr(1, hidden),
    }
    if bias_fl:
        state_dict["lin.bias"] = arr(1)
    return {
        "model_data": {
            "model": "SimpleRNN",
            "input_size": input_size,
            "skip": skip,
            "output_size": 1,
            "unit_type": unit_type,
            "num_layers": 1,
            "hidden_size": hidden,
            "bias_fl": bias_fl,
        },
        "state_dict": state_dict,
    }


def _write(tmp_path, data, name="model.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "unit_type, input_size, skip, bias_fl",
    [
        ("LSTM", 1, 1, True),
        ("LSTM", 3, 1, True),
        ("LSTM", 2, 0, False),
        ("GRU", 1, 1, True),
        ("GRU", 2, 1, False),
    ],
)
def test_hand_written_file_matches_numpy_recurrence(tmp_path, unit_type, input_size, skip, bias_fl):
    data = _hand_written(unit_type, input_size, hidden=5, skip=skip, bias_fl=bias_fl)
    model = load_guitarml(_write(tmp_path, data))
    assert isinstance(model, LSTMAmp) and model.sample_rate is None
    assert model.unit_type == unit_type and model.input_size == input_size
    assert model.skip == bool(skip) and model.bias == bias_fl

    u = np.random.default_rng(1).uniform(-1, 1, size=(2, 120, input_size))
    numpy_amp = _numpy_lstm_amp if unit_type == "LSTM" else _numpy_gru_amp
    expected = np.stack([numpy_amp(data["state_dict"], ui, 5, bool(skip)) for ui in u])

    # Weights are stored as float32 by the loader; run in float64 so only that rounding shows.
    y = model.double()(torch.from_numpy(u).transpose(1, 2))
    np.testing.assert_allclose(y[:, 0].detach().numpy(), expected, atol=1e-6)


def test_sample_rate_is_read_when_present(tmp_path):
    data = _hand_written()
    data["sample_rate"] = 48000
    assert load_guitarml(_write(tmp_path, data)).sample_rate == 48000.0


@pytest.mark.parametrize("unit_type", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("sample_rate", [None, 44100])
def test_round_trip_gives_identical_outputs(tmp_path, unit_type, sample_rate):
    torch.manual_seed(0)
    model = LSTMAmp(
        hidden_size=7, num_layers=2, input_size=2, unit_type=unit_type, sample_rate=sample_rate
    )
    path = save_guitarml(model, tmp_path / "m.json")
    loaded = load_guitarml(path)
    assert loaded.sample_rate == sample_rate
    assert (loaded.unit_type, loaded.num_layers, loaded.input_size, loaded.hidden_size) == (
        unit_type,
        2,
        2,
        7,
    )
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 2, 300)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)


def test_saved_file_has_guitarml_layout(tmp_path):
    torch.manual_seed(0)
    model = LSTMAmp(hidden_size=40)
    data = json.loads(save_guitarml(model, tmp_path / "m.json").read_text())
    assert data["model_data"] == {
        "model": "SimpleRNN",
        "input_size": 1,
        "skip": 1,
        "output_size": 1,
        "unit_type": "LSTM",
        "num_layers": 1,
        "hidden_size": 40,
        "bias_fl": True,
    }
    shapes = {k: np.asarray(v).shape for k, v in data["state_dict"].items()}
    assert shapes == {
        "rec.weight_ih_l0": (160, 1),
        "rec.weight_hh_l0": (160, 40),
        "rec.bias_ih_l0": (160,),
        "rec.bias_hh_l0": (160,),
        "lin.weight": (1, 40),
        "lin.bias": (1,),
    }
    assert "sample_rate" not in data


def test_minimal_proteus_fields_use_proteus_defaults():
    data = _hand_written()
    for key in ("model", "num_layers", "skip", "output_size", "bias_fl"):
        del data["model_data"][key]
    model = read_guitarml(data)
    assert model.skip and model.num_layers == 1 and model.bias


def test_float64_model_round_trips_exactly_through_dict():
    torch.manual_seed(0)
    model = LSTMAmp(hidden_size=4).double()
    loaded = read_guitarml(json.loads(json.dumps(to_guitarml(model))))
    x = torch.randn(1, 1, 50)
    # The loader gives float32; a float32 copy of the float64 model must match exactly.
    torch.testing.assert_close(loaded(x), model.float()(x), atol=0, rtol=0)


def _mutated(mutate):
    data = _hand_written()
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("state_dict"), r"missing key\(s\) \['state_dict'\]"),
        (lambda d: d["model_data"].pop("hidden_size"), r"missing field\(s\) \['hidden_size'\]"),
        (lambda d: d["model_data"].update(unit_type="Transformer"), "unknown .*'Transformer'"),
        (lambda d: d["model_data"].update(model="RecNet"), "SimpleRNN"),
        (lambda d: d["model_data"].update(output_size=2), "output_size"),
        (lambda d: d["model_data"].update(hidden_size="40"), "hidden_size"),
        (lambda d: d["model_data"].update(skip=2), "skip"),
        (lambda d: d["state_dict"].pop("rec.bias_hh_l0"), r"missing \['rec.bias_hh_l0'\]"),
        (lambda d: d["state_dict"].update(extra=[1.0]), r"unexpected entries \['extra'\]"),
        (
            lambda d: d["state_dict"].update({"rec.weight_hh_l0": np.zeros((20, 4)).tolist()}),
            r"'rec.weight_hh_l0'\] has shape \(20, 4\), expected \(20, 5\)",
        ),
        (
            lambda d: d["state_dict"].update({"lin.weight": [[1.0, 2.0], [3.0]]}),
            "not a numeric array",
        ),
        (lambda d: d["state_dict"]["lin.bias"].__setitem__(0, float("nan")), "NaN"),
        (lambda d: d.update(sample_rate=0), "sample_rate"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, mutate, match):
    path = _write(tmp_path, _mutated(mutate), name="bad_model.json")
    with pytest.raises(ValueError, match=match) as info:
        load_guitarml(path)
    assert "bad_model.json" in str(info.value)


def test_unreadable_files_are_named(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"model_data": ')
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        load_guitarml(broken)
    with pytest.raises(ValueError, match="absent.json"):
        load_guitarml(tmp_path / "absent.json")
    listed = _write(tmp_path, [1, 2], name="list.json")
    with pytest.raises(ValueError, match="list.json.*JSON list"):
        load_guitarml(listed)


def test_save_refuses_other_modules_and_nonfinite_weights(tmp_path):
    with pytest.raises(ValueError, match="LSTMAmp"):
        save_guitarml(torch.nn.Linear(2, 1), tmp_path / "x.json")
    model = LSTMAmp(hidden_size=3)
    with torch.no_grad():
        model.lin.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="lin.weight"):
        save_guitarml(model, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
