"""GuitarML / Proteus JSON recurrent amp models.

The format is the one GuitarML's CoreAudioML ``SimpleRNN.save_model`` writes and the Proteus
plug-in reads (with RTNeural); Carson et al. (DAFx 2025) publish their LSTM weights in it. A
file is a JSON object::

    {
      "model_data": {"model": "SimpleRNN", "input_size": 1, "skip": 1, "output_size": 1,
                     "unit_type": "LSTM", "num_layers": 1, "hidden_size": 40, "bias_fl": true},
      "state_dict": {"rec.weight_ih_l0": [[...], ...],   # (G*hidden, input_size)
                     "rec.weight_hh_l0": [[...], ...],   # (G*hidden, hidden)
                     "rec.bias_ih_l0": [...],            # (G*hidden,)
                     "rec.bias_hh_l0": [...],            # (G*hidden,)
                     "lin.weight": [[...]],              # (1, hidden)
                     "lin.bias": [...]}                  # (1,), only when bias_fl
    }

with PyTorch's parameter names and layouts (gates stacked as torch orders them: G = 4 for an
LSTM, 3 for a GRU, 1 for an Elman RNN; layers ``l1``, ``l2``... for stacked models, whose
``weight_ih`` is ``(G*hidden, hidden)``). ``skip`` is the number of input channels added to the
output (1: the audio; 0: none). Conditioned models have ``input_size`` 2 or 3, the knobs being
the inputs after the audio.

Fields Proteus itself does not read are optional here, with the values Proteus assumes:
``model`` ("SimpleRNN"), ``num_layers`` (1), ``skip`` (1), ``output_size`` (1) and ``bias_fl``
(true). ``unit_type``, ``input_size`` and ``hidden_size`` are required.

Sample rate: the format has no sample-rate field; GuitarML trains at 44.1 kHz and Proteus
resamples its input to 44.1 kHz (:data:`GUITARML_SAMPLE_RATE`). A top-level ``"sample_rate"``
(Hz), when present, is read into ``model.sample_rate``; otherwise ``model.sample_rate`` is
``None`` and the caller should assume :data:`GUITARML_SAMPLE_RATE`. :func:`save_guitarml` writes
``"sample_rate"`` at the top level when the model has one; readers that do not know the key
(Proteus, CoreAudioML) ignore it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from diffx._validation import check_sample_rate
from diffx.io._json import read_json_object
from diffx.nn.lstm import UNIT_TYPES, LSTMAmp

GUITARML_SAMPLE_RATE = 44100
"""Hz; the rate GuitarML models are trained at and Proteus runs them at."""

_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_REQUIRED_FIELDS = ("unit_type", "input_size", "hidden_size")
_OPTIONAL_FIELDS = {"model": "SimpleRNN", "num_layers": 1, "skip": 1, "output_size": 1}


def _int_field(model_data: dict, key: str, path: Path, minimum: int) -> int:
    value = model_data[key]
    # bool is an int in Python; JSON true/false here means a corrupt file, not 1/0.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{path}: model_data[{key!r}] must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _expected_shapes(unit_type: str, input_size: int, hidden: int, layers: int, bias_fl: bool):
    g = _GATES[unit_type] * hidden
    shapes = {}
    for k in range(layers):
        shapes[f"rec.weight_ih_l{k}"] = (g, input_size if k == 0 else hidden)
        shapes[f"rec.weight_hh_l{k}"] = (g, hidden)
        shapes[f"rec.bias_ih_l{k}"] = (g,)
        shapes[f"rec.bias_hh_l{k}"] = (g,)
    shapes["lin.weight"] = (1, hidden)
    if bias_fl:
        shapes["lin.bias"] = (1,)
    return shapes


def read_guitarml(data: dict, path: str | os.PathLike = "<data>") -> LSTMAmp:
    """Build an :class:`~diffx.nn.lstm.LSTMAmp` from an already parsed GuitarML JSON object.

    Args:
        data: the JSON object (see the module docstring for its layout).
        path: the file it came from, used in error messages only.

    Returns:
        The model, float32, ``stateful=False``, with ``sample_rate`` from the data or ``None``.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    missing = [k for k in ("model_data", "state_dict") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a GuitarML model, missing key(s) {missing}")
    model_data, state = data["model_data"], data["state_dict"]
    if not isinstance(model_data, dict) or not isinstance(state, dict):
        raise ValueError(f"{path}: 'model_data' and 'state_dict' must be JSON objects")
    missing = [k for k in _REQUIRED_FIELDS if k not in model_data]
    if missing:
        raise ValueError(f"{path}: model_data is missing field(s) {missing}")
    model_data = {**_OPTIONAL_FIELDS, **model_data}

    if model_data["model"] != "SimpleRNN":
        raise ValueError(
            f"{path}: model_data['model'] is {model_data['model']!r}; only GuitarML's "
            "'SimpleRNN' (one recurrent unit + linear layer) is supported"
        )
    unit_type = model_data["unit_type"]
    if not isinstance(unit_type, str) or unit_type.upper() not in UNIT_TYPES:
        raise ValueError(
            f"{path}: unknown model_data['unit_type'] {unit_type!r}; expected one of {UNIT_TYPES}"
        )
    unit_type = unit_type.upper()
    input_size = _int_field(model_data, "input_size", path, 1)
    hidden_size = _int_field(model_data, "hidden_size", path, 1)
    num_layers = _int_field(model_data, "num_layers", path, 1)
    if _int_field(model_data, "output_size", path, 1) != 1:
        raise ValueError(
            f"{path}: model_data['output_size'] is {model_data['output_size']}; only mono "
            "output (1) is supported"
        )
    # skip counts the input channels added to the (single) output; only 0 or 1 make sense.
    skip = model_data["skip"]
    if skip not in (0, 1):
        raise ValueError(f"{path}: model_data['skip'] must be 0, 1 or a bool, got {skip!r}")
    bias_fl = model_data.get("bias_fl", True)
    if bias_fl not in (0, 1):
        raise ValueError(f"{path}: model_data['bias_fl'] must be a bool, got {bias_fl!r}")
    bias_fl = bool(bias_fl)

    sample_rate = data.get("sample_rate")
    if sample_rate is not None:
        try:
            sample_rate = check_sample_rate(sample_rate)
        except ValueError as err:
            raise ValueError(f"{path}: 'sample_rate': {err}") from None

    shapes = _expected_shapes(unit_type, input_size, hidden_size, num_layers, bias_fl)
    missing = [k for k in shapes if k not in state]
    if missing:
        raise ValueError(f"{path}: state_dict is missing {missing}")
    unexpected = [k for k in state if k not in shapes]
    if unexpected:
        raise ValueError(
            f"{path}: state_dict has unexpected entries {unexpected} for a {num_layers}-layer "
            f"{unit_type} with bias_fl={bias_fl}"
        )
    tensors = {}
    for key, shape in shapes.items():
        try:
            t = torch.tensor(state[key], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: state_dict[{key!r}] is not a numeric array") from None
        if tuple(t.shape) != shape:
            raise ValueError(
                f"{path}: state_dict[{key!r}] has shape {tuple(t.shape)}, expected {shape} "
                f"(unit_type={unit_type}, input_size={input_size}, hidden_size={hidden_size})"
            )
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: state_dict[{key!r}] contains NaN or Inf")
        tensors[key] = t.to(torch.float32)

    model = LSTMAmp(
        hidden_size=hidden_size,
        num_layers=num_layers,
        input_size=input_size,
        skip=bool(skip),
        unit_type=unit_type,
        bias=bias_fl,
        sample_rate=sample_rate,
    )
    model.load_state_dict(tensors)
    return model


def load_guitarml(path: str | os.PathLike) -> LSTMAmp:
    """Load a GuitarML / Proteus JSON model.

    Args:
        path: the ``.json`` file.

    Returns:
        An :class:`~diffx.nn.lstm.LSTMAmp` (float32, ``stateful=False``; set ``stateful=True``
        to stream) with ``sample_rate`` from the file, or ``None`` when the file has none (the
        GuitarML convention is :data:`GUITARML_SAMPLE_RATE`, 44.1 kHz).

    Raises:
        ValueError: the file cannot be read or is not JSON (naming the file), a required field
            or weight is missing (naming it), a weight has the wrong shape (expected vs got),
            or the unit type is not LSTM, GRU or RNN.
    """
    path = Path(path)
    return read_guitarml(read_json_object(path, "GuitarML model"), path)


def to_guitarml(model: LSTMAmp) -> dict:
    """The GuitarML JSON object for ``model`` (what :func:`save_guitarml` writes)."""
    if not isinstance(model, LSTMAmp):
        raise ValueError(f"model must be a diffx.nn.lstm.LSTMAmp, got {type(model).__name__}")
    data = {
        "model_data": {
            "model": "SimpleRNN",
            "input_size": model.input_size,
            "skip": int(model.skip),
            "output_size": 1,
            "unit_type": model.unit_type,
            "num_layers": model.num_layers,
            "hidden_size": model.hidden_size,
            "bias_fl": model.bias,
        },
        "state_dict": {},
    }
    for key, value in model.state_dict().items():
        # float64 lists keep float32 weights exactly (and float64 ones too).
        values = value.detach().cpu().to(torch.float64)
        if not bool(torch.isfinite(values).all()):
            raise ValueError(f"model weight {key!r} contains NaN or Inf; refusing to save it")
        data["state_dict"][key] = values.tolist()
    if model.sample_rate is not None:
        data["sample_rate"] = model.sample_rate
    return data


def save_guitarml(model: LSTMAmp, path: str | os.PathLike) -> Path:
    """Save ``model`` as a GuitarML / Proteus JSON file.

    Proteus loads single-layer LSTMs with ``input_size`` 1 to 3 and the hidden sizes its
    build supports (40 for the released plug-in); other models are written in the same format
    for CoreAudioML / Automated-GuitarAmpModelling and for :func:`load_guitarml`.

    Args:
        model: the :class:`~diffx.nn.lstm.LSTMAmp` to save.
        path: the file to write.

    Returns:
        The path written.
    """
    data = to_guitarml(model)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=False)
        # Write then rename, so an interrupted save never leaves a truncated model behind.
        os.replace(tmp, path)
    except OSError as err:
        raise ValueError(f"cannot write GuitarML model file {path}: {err}") from None
    return path
