"""Load and save neural amp models in the formats their users already have.

- ``.nam``: Neural Amp Modeler's JSON export (WaveNet), see :mod:`diffx.io.nam`.
- ``.json``: GuitarML / Proteus LSTM (and GRU) models, see :mod:`diffx.io.guitarml`. A ``.json``
  file holding a NAM export (an ``"architecture"`` key) is read as NAM.

The model's sample rate, when the file gives one, is kept as ``model.sample_rate``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

MODEL_SUFFIXES = (".nam", ".json")


def _read_json(path: Path) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as err:
        raise ValueError(f"cannot read model file {path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"model file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model file {path} holds a JSON {type(data).__name__}, not an object")
    return data


def load_model(path: str | os.PathLike) -> nn.Module:
    """Load a NAM ``.nam`` or a GuitarML / Proteus ``.json`` model as a torch module.

    Args:
        path: the model file; the format is chosen by suffix and, for ``.json``, by content.

    Returns:
        The model (``diffx.nn.WaveNet`` or ``diffx.nn.LSTMAmp``) with ``sample_rate`` set from
        the file (``None`` where the file gives none).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise ValueError(f"unknown model format {path.name!r}; expected one of {MODEL_SUFFIXES}")
    if suffix == ".nam" or "architecture" in _read_json(path):
        from diffx.io.nam import load_nam

        return load_nam(path)
    from diffx.io.guitarml import load_guitarml

    return load_guitarml(path)


def save_model(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save ``model`` in the format its suffix names (``.nam`` for WaveNet, ``.json`` for LSTM).

    Returns:
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".nam":
        from diffx.io.nam import save_nam

        save_nam(model, path)
    elif suffix == ".json":
        from diffx.io.guitarml import save_guitarml

        save_guitarml(model, path)
    else:
        raise ValueError(f"unknown model format {path.name!r}; expected one of {MODEL_SUFFIXES}")
    return path
