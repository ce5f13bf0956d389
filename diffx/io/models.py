"""Load and save neural amp models in the formats their users already have.

- ``.nam``: Neural Amp Modeler's JSON export (WaveNet), see :mod:`diffx.io.nam`.
- ``.json``: GuitarML / Proteus LSTM (and GRU) models, see :mod:`diffx.io.guitarml`. A ``.json``
  file holding a NAM export (an ``"architecture"`` key) is read as NAM.

The model's sample rate, when the file gives one, is kept as ``model.sample_rate``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from diffx.io._json import read_json_object

MODEL_SUFFIXES = (".nam", ".json")


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
    data = read_json_object(path, "model")  # read once, then handed to the format's reader
    if suffix == ".nam" or "architecture" in data:
        from diffx.io.nam import read_nam

        return read_nam(data, path)
    from diffx.io.guitarml import read_guitarml

    return read_guitarml(data, path)


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
