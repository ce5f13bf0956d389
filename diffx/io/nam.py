"""Read and write Neural Amp Modeler ``.nam`` files (WaveNet architecture).

A ``.nam`` file is a JSON object (format of NAM's exporter, github.com/sdatkinson/
neural-amp-modeler, ``nam/models/exportable.py`` and ``nam/models/wavenet``)::

    {"version": "0.5.4", "architecture": "WaveNet",
     "config": {"layers": [...], "head": null, "head_scale": 0.02},
     "weights": [...], "sample_rate": 48000, "metadata": {...}}

Each entry of ``config["layers"]`` describes one layer array either in the 0.5 form
(``input_size, condition_size, channels, head_size, kernel_size, dilations, activation,
gated, head_bias``) or in the 0.7 form, where ``head_size``/``head_bias`` become
``"head": {"out_channels", "kernel_size", "bias"}`` and optional keys for newer features
(bottleneck, head/layer 1x1 options, grouped convolutions, FiLM, slimmable) may appear. Those
newer features are read only at their defaults (the classic architecture); any other value
raises ``ValueError``. Files are written in the 0.5 form, which every NAM player reads.

``weights`` is the flat vector documented in :meth:`diffx.nn.wavenet.WaveNet.nam_tensors`:
per layer array the input 1x1 weight, then per layer (dilated conv weight, its bias, condition
mixer weight, 1x1 weight, its bias), then the head convolution's weight (and bias); after all
arrays one last value, ``head_scale``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from diffx.io._json import read_json_object
from diffx.nn.wavenet import LayerArrayConfig, WaveNet

#: Version string written into saved files (the classic WaveNet config format).
NAM_FORMAT_VERSION = "0.5.4"

_LEGACY_KEYS = {
    "input_size",
    "condition_size",
    "channels",
    "head_size",
    "kernel_size",
    "kernel_sizes",
    "dilations",
    "activation",
    "gated",
    "head_bias",
    "head",
}
# 0.7-form keys accepted only with the value (or a value equivalent to it) that means
# "feature off"; checked in _check_default_features.
_FILM_KEYS = (
    "conv_pre_film",
    "conv_post_film",
    "input_mixin_pre_film",
    "input_mixin_post_film",
    "activation_pre_film",
    "activation_post_film",
    "layer1x1_post_film",
    "head1x1_post_film",
)
_FEATURE_KEYS = {
    "bottleneck",
    "head1x1",
    "head_1x1_config",
    "layer1x1",
    "layer_1x1_config",
    "groups_input",
    "groups_input_mixin",
    "gating_mode",
    "secondary_activation",
    "slimmable",
    "film_params",
    *_FILM_KEYS,
}


def _unsupported(path: Path, i: int, what: str) -> ValueError:
    return ValueError(f"{path}: layers[{i}] uses {what}, which diffx's WaveNet does not support")


def _check_default_features(path: Path, i: int, layer: dict) -> None:
    if layer.get("bottleneck", layer["channels"]) != layer["channels"]:
        raise _unsupported(path, i, "a bottleneck different from channels")
    for key in ("head1x1", "head_1x1_config"):
        if (layer.get(key) or {}).get("active", False):
            raise _unsupported(path, i, f"an active {key}")
    for key in ("layer1x1", "layer_1x1_config"):
        cfg = layer.get(key) or {}
        if not cfg.get("active", True) or cfg.get("groups", 1) != 1:
            raise _unsupported(path, i, f"{key}={cfg}")
    for key in ("groups_input", "groups_input_mixin"):
        if layer.get(key, 1) != 1:
            raise _unsupported(path, i, f"{key}={layer[key]}")
    if layer.get("slimmable"):
        raise _unsupported(path, i, "slimmable layers")
    film = dict(layer.get("film_params") or {})
    film.update({k: layer[k] for k in _FILM_KEYS if k in layer})
    if any((v or {}).get("active", False) for v in film.values()):
        raise _unsupported(path, i, "FiLM conditioning")


def _gated(path: Path, i: int, layer: dict) -> bool:
    if "gating_mode" not in layer:
        return bool(layer.get("gated", False))
    modes = layer["gating_mode"]
    modes = {modes} if isinstance(modes, str) else set(modes)
    secondary = layer.get("secondary_activation")
    secondary = secondary if isinstance(secondary, list) else [secondary]
    # Activations may be written as {"type": name} objects in the 0.7 form.
    names = {a.get("type") if isinstance(a, dict) and set(a) == {"type"} else a for a in secondary}
    if modes == {"none"}:
        return False
    if modes == {"gated"} and names <= {None, "Sigmoid"}:
        return True
    raise _unsupported(path, i, f"gating_mode={layer['gating_mode']!r}")


def _activation(path: Path, i: int, act):
    # The 0.7 form may write activations as {"type": name} dicts; only plain ones are read.
    def one(a):
        if isinstance(a, dict):
            if set(a) != {"type"}:
                raise _unsupported(path, i, f"activation {a}")
            return a["type"]
        return a

    return one(act) if not isinstance(act, list) else tuple(one(a) for a in act)


def _layer_config(path: Path, i: int, layer) -> LayerArrayConfig:
    if not isinstance(layer, dict):
        raise ValueError(f"{path}: config.layers[{i}] must be an object")
    unknown = set(layer) - _LEGACY_KEYS - _FEATURE_KEYS
    if unknown:
        raise ValueError(f"{path}: config.layers[{i}] has unknown keys {sorted(unknown)}")
    try:
        _check_default_features(path, i, layer)
        if "head" in layer:
            head = layer["head"]
            head_size, head_bias = head["out_channels"], head["bias"]
            head_kernel = head.get("kernel_size", 1)
        else:
            head_size, head_bias, head_kernel = layer["head_size"], layer["head_bias"], 1
        kernel = layer["kernel_sizes"] if "kernel_sizes" in layer else layer["kernel_size"]
        return LayerArrayConfig(
            input_size=layer["input_size"],
            condition_size=layer["condition_size"],
            channels=layer["channels"],
            head_size=head_size,
            kernel_size=kernel if isinstance(kernel, int) else tuple(kernel),
            dilations=tuple(layer["dilations"]),
            activation=_activation(path, i, layer["activation"]),
            gated=_gated(path, i, layer),
            head_bias=bool(head_bias),
            head_kernel_size=head_kernel,
        )
    except KeyError as err:
        raise ValueError(f"{path}: config.layers[{i}] lacks the key {err}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: config.layers[{i}] is invalid: {err}") from None


def load_nam(path: str | os.PathLike) -> WaveNet:
    """Load a NAM ``.nam`` WaveNet as a :class:`~diffx.nn.wavenet.WaveNet`.

    Args:
        path: the ``.nam`` file.

    Returns:
        The model in float32 with ``sample_rate`` (Hz, or ``None`` when the file has none) and
        ``metadata`` (the file's metadata object, or ``None``) set as attributes.

    Raises:
        ValueError: unreadable or invalid JSON, an architecture other than ``"WaveNet"``, an
            unsupported configuration, or a weight count that does not match the config.
    """
    path = Path(path)
    return read_nam(read_json_object(path, "NAM"), path)


def read_nam(data: dict, path: str | os.PathLike = "<data>") -> WaveNet:
    """The model of an already-parsed NAM export ``data``; ``path`` names it in errors."""
    arch = data.get("architecture")
    if arch != "WaveNet":
        raise ValueError(f"NAM file {path} has architecture {arch!r}; only 'WaveNet' is supported")
    config = data.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ValueError(f"NAM file {path} lacks config.layers")
    if config.get("head") is not None:
        raise ValueError(f"NAM file {path} has a post-head (config.head), which is unsupported")
    if config.get("condition_dsp") is not None:
        raise ValueError(f"NAM file {path} has a condition_dsp, which is unsupported")
    layers = [_layer_config(path, i, layer) for i, layer in enumerate(config["layers"])]
    head_scale = config.get("head_scale", 1.0)
    sample_rate = data.get("sample_rate")
    try:
        model = WaveNet(layers, head_scale=float(head_scale), sample_rate=sample_rate)
    except ValueError as err:
        raise ValueError(f"NAM file {path}: {err}") from None
    weights = data.get("weights")
    if not isinstance(weights, list):
        raise ValueError(f"NAM file {path} lacks a weights list")
    expected = model.num_nam_weights()
    if len(weights) != expected:
        raise ValueError(
            f"NAM file {path} has {len(weights)} weights; its config expects {expected}"
        )
    try:
        model.import_weights(weights)
    except (TypeError, ValueError) as err:
        raise ValueError(f"NAM file {path} has non-numeric weights: {err}") from None
    # NAM stores the trailing head_scale as float32; keep the config's exact value when they
    # agree to float32 precision so that re-export writes the same config.
    if math.isclose(model.head_scale, float(head_scale), rel_tol=1e-6, abs_tol=1e-9):
        model.head_scale = float(head_scale)
    model.metadata = data.get("metadata")
    return model


def _layer_to_json(cfg: LayerArrayConfig) -> dict:
    kernel = cfg.kernel_size
    act = cfg.activation
    out = {
        "input_size": cfg.input_size,
        "condition_size": cfg.condition_size,
        "head_size": cfg.head_size,
        "channels": cfg.channels,
        "kernel_size": kernel if isinstance(kernel, int) else list(kernel),
        "dilations": list(cfg.dilations),
        "activation": act if isinstance(act, str) else list(act),
        "gated": cfg.gated,
        "head_bias": cfg.head_bias,
    }
    if cfg.head_kernel_size != 1:
        # The 0.5 form has no head kernel; write the 0.7 head object instead.
        del out["head_size"], out["head_bias"]
        out["head"] = {
            "out_channels": cfg.head_size,
            "kernel_size": cfg.head_kernel_size,
            "bias": cfg.head_bias,
        }
    return out


def save_nam(model: WaveNet, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` as a NAM ``.nam`` file.

    Args:
        model: the WaveNet (any dtype or device).
        path: the file to write.
        metadata: NAM metadata object (e.g. ``{"name": ..., "loudness": ...}``); defaults to
            ``model.metadata`` when set, and is omitted when neither is given.

    Returns:
        The path written.
    """
    if not isinstance(model, WaveNet):
        raise ValueError(f"model must be a diffx WaveNet, got {type(model).__name__}")
    path = Path(path)
    if metadata is None:
        metadata = getattr(model, "metadata", None)
    data: dict = {"version": NAM_FORMAT_VERSION}
    if metadata is not None:
        data["metadata"] = metadata
    data["architecture"] = "WaveNet"
    data["config"] = {
        "layers": [_layer_to_json(c) for c in model.layer_configs],
        "head": None,
        "head_scale": model.head_scale,
    }
    data["weights"] = model.export_weights().tolist()
    if model.sample_rate is not None:
        data["sample_rate"] = model.sample_rate
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path
