"""Black-box effects: pedalboard plugins (built-in or VST3 / Audio Unit) as diffx Effects.

These effects run outside autograd, in numpy float32 on the CPU, one batch item at a time with
the plugin state reset before each item. They share the :class:`~diffx.effects.base.Effect`
interface (normalized parameters in [0, 1], :class:`~diffx.effects.base.ParamSpec` s mapping
them to physical units), so a config can swap a diffx effect for its pedalboard counterpart.
They have no gradient; train their parameters with SPSA (:class:`diffx.effects.SPSAChain`) or
a neural proxy, as DeepAFx-ST does (Steinmetz et al., JAES 2022).

pedalboard is imported when an effect is built, so diffx imports without it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from diffx.effects.base import Effect, ParamSpec
from diffx.effects.processors import Compressor, ParametricEQ

# Attack and release: diffx's compressor maps a time t to the pole exp(-ln 9 / (fs t)) (t is
# the 10%-90% rise time), JUCE's (pedalboard's) to exp(-2 pi / (fs t)). Writing
# t * 2 pi / ln 9 into pedalboard gives the same pole, so "attack_ms" means the same thing in
# PedalboardCompressor and diffx's Compressor (see diffx.functional.compressor).
_JUCE_TIME_SCALE = 2 * math.pi / math.log(9)
TIME_CONVENTIONS = ("diffx", "pedalboard")

# File name endings of plugin bundles pedalboard.load_plugin can open.
_PLUGIN_FILE_SUFFIXES = (".vst3", ".component")


def _import_pedalboard():
    try:
        import pedalboard
    except ImportError as error:
        raise ImportError(
            "diffx's pedalboard effects need the pedalboard package: pip install pedalboard"
        ) from error
    return pedalboard


def native_plugin_names() -> list[str]:
    """Names of pedalboard's built-in effect classes that :class:`PedalboardEffect` accepts."""
    pedalboard = _import_pedalboard()
    excluded = (pedalboard.PluginContainer, pedalboard.ExternalPlugin)
    return sorted(
        name
        for name in dir(pedalboard)
        if not name.startswith("_")
        and isinstance(cls := getattr(pedalboard, name), type)
        and issubclass(cls, pedalboard.Plugin)
        and cls is not pedalboard.Plugin
        and not issubclass(cls, excluded)
    )


def _is_plugin_file(plugin: str) -> bool:
    return plugin.lower().endswith(_PLUGIN_FILE_SUFFIXES) or os.sep in plugin or "/" in plugin


def _make_plugin(plugin: str, fixed: Mapping[str, Any]):
    """A fresh plugin instance: a built-in class by name, or a plugin file by path."""
    pedalboard = _import_pedalboard()
    if _is_plugin_file(plugin):
        if not os.path.exists(plugin):
            raise ValueError(f"PedalboardEffect: plugin file {plugin!r} does not exist")
        try:
            return pedalboard.load_plugin(plugin, parameter_values=dict(fixed))
        except Exception as error:  # pedalboard raises ImportError, ValueError, RuntimeError
            raise ValueError(
                f"PedalboardEffect: could not load plugin {plugin!r} with fixed={dict(fixed)}: "
                f"{error}"
            ) from error
    known = native_plugin_names()
    if plugin not in known:
        raise ValueError(
            f"PedalboardEffect: unknown pedalboard plugin {plugin!r}; give a VST3 / AU file "
            f"path or one of {known}"
        )
    cls = getattr(pedalboard, plugin)
    attributes = _native_attributes(cls)
    for name in fixed:
        if name not in attributes:
            raise ValueError(
                f"PedalboardEffect({plugin!r}): the plugin has no parameter {name!r}; its "
                f"parameters are {attributes}"
            )
    try:
        # Built-in constructors take their attributes as keyword arguments, including those
        # without a default (Convolution's impulse_response_filename).
        return cls(**fixed)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"PedalboardEffect: could not create pedalboard.{plugin} with fixed={dict(fixed)}: "
            f"{error}"
        ) from error


def _native_attributes(cls: type) -> list[str]:
    """Attributes of a built-in plugin class, read-only constructor arguments included."""
    return sorted(
        name
        for klass in cls.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, property) and name not in ("is_effect", "is_instrument")
    )


def plugin_parameter_names(plugin_instance) -> list[str]:
    """The attribute names a plugin instance lets you set (its automatable parameters)."""
    parameters = getattr(plugin_instance, "parameters", None)
    if isinstance(parameters, Mapping):  # VST3 / Audio Unit plugins
        return sorted(parameters)
    return sorted(
        name
        for klass in type(plugin_instance).__mro__
        for name, value in vars(klass).items()
        if isinstance(value, property) and value.fset is not None
    )


def _spec_from_list(owner: str, name: str, bounds: Sequence) -> ParamSpec:
    """``[minimum, maximum, default]``, optionally followed by ``unit`` and ``scale``."""
    if isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence):
        raise ValueError(
            f"{owner}: parameters[{name!r}] must be a list [minimum, maximum, default] or "
            f"[minimum, maximum, default, unit, scale], got {bounds!r}"
        )
    if len(bounds) not in (3, 4, 5):
        raise ValueError(
            f"{owner}: parameters[{name!r}] needs 3 to 5 entries [minimum, maximum, default"
            f"(, unit(, scale))], got {len(bounds)}: {list(bounds)!r}"
        )
    try:
        numbers = [float(v) for v in bounds[:3]]
    except (TypeError, ValueError):
        raise ValueError(
            f"{owner}: parameters[{name!r}] minimum, maximum and default must be numbers, got "
            f"{list(bounds[:3])!r}"
        ) from None
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{owner}: parameters[{name!r}] must be finite, got {numbers}")
    unit = str(bounds[3]) if len(bounds) > 3 else ""
    scale = str(bounds[4]) if len(bounds) > 4 else "linear"
    try:
        return ParamSpec(name, *numbers, unit, scale)
    except ValueError as error:
        raise ValueError(f"{owner}: parameters[{name!r}]: {error}") from None


class _PedalboardBoard(Effect):
    """Plugins in series, each parameter written to one plugin attribute per batch item.

    Subclasses set ``PARAMS`` and call :meth:`_setup` after ``Effect.__init__``.
    """

    # Read by tasks (getattr(effect, "differentiable", True)) to refuse autodiff training.
    differentiable = False

    def _setup(
        self,
        plugins: Sequence[tuple[str, Mapping[str, Any]]],
        targets: Mapping[str, tuple[int, str, float]],
    ) -> None:
        # (name or path, fixed attributes) per plugin: enough to rebuild the plugins in every
        # thread and after pickling (plugin objects themselves are neither shareable across
        # threads nor picklable).
        self._plugin_specs = [(name, dict(fixed)) for name, fixed in plugins]
        # parameter name -> (plugin index, attribute, factor applied to the physical value)
        self._targets = dict(targets)
        self._local = threading.local()

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_local", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._local = threading.local()

    def _board(self):
        """This thread's ``(Pedalboard, plugins)``, built once and reused for every call.

        One instance per thread: a pedalboard plugin holds its filter state and a lock, so
        threads sharing one would serialize, and building plugins per call costs more than
        processing short clips.
        """
        board = getattr(self._local, "board", None)
        if board is None:
            pedalboard = _import_pedalboard()
            plugins = [_make_plugin(name, fixed) for name, fixed in self._plugin_specs]
            board = (pedalboard.Pedalboard(plugins), plugins)
            self._local.board = board
        return board

    def process(self, x: torch.Tensor, **physical: torch.Tensor) -> torch.Tensor:
        """Run each batch item through the plugins.

        Args:
            x: ``(batch, channels, samples)`` audio, on any device, any float dtype (processed
                as float32, as pedalboard does).
            **physical: one ``(batch,)`` tensor per parameter, physical units.

        Returns:
            ``(batch, channels, samples)`` audio on ``x``'s device and dtype. Not
            differentiable.

        Raises:
            ValueError: if autograd would need a gradient (grad mode on and ``x`` or a
                parameter requires grad), or ``samples <= channels``.
        """
        owner = type(self).__name__
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in physical.values())
        ):
            raise ValueError(
                f"{owner} is not differentiable (pedalboard runs outside autograd) but x or "
                "params require grad: train its parameters with gradient 'spsa' "
                "(diffx.effects.SPSAChain) or 'proxy', or call it under torch.no_grad()"
            )
        B, C, T = x.shape  # batch, channels, samples
        if T <= C:
            # pedalboard infers the layout: the smaller dimension is the channels.
            raise ValueError(
                f"{owner}: x needs more samples than channels for pedalboard, got shape "
                f"{tuple(x.shape)}"
            )
        values = {
            name: (physical[name].detach().to("cpu", torch.float64) * factor).tolist()
            for name, (_, _, factor) in self._targets.items()
        }
        audio = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = np.empty_like(audio)
        board, plugins = self._board()
        for i in range(B):
            for name, (index, attribute, _) in self._targets.items():
                setattr(plugins[index], attribute, values[name][i])
            y = board.process(audio[i], self.sample_rate, reset=True)
            if y.shape != audio[i].shape:
                raise RuntimeError(
                    f"{owner}: pedalboard returned shape {y.shape} for input {audio[i].shape} "
                    "(a plugin with latency buffered part of the audio)"
                )
            out[i] = y
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


class PedalboardEffect(_PedalboardBoard):
    """One pedalboard plugin as a (non-differentiable) diffx Effect.

    Args:
        sample_rate: Hz.
        plugin: a pedalboard class name (``"Compressor"``, ``"PeakFilter"``, ``"Reverb"``,
            ``"Distortion"``, ... see :func:`native_plugin_names`) or the path of a VST3 /
            Audio Unit plugin file (opened with ``pedalboard.load_plugin``).
        parameters: ``{attribute: [minimum, maximum, default]}`` or
            ``{attribute: [minimum, maximum, default, unit, scale]}`` (``unit`` a display
            string, ``scale`` ``"linear"`` (default) or ``"log"``; ``scale`` may be left out):
            the plugin attributes the effect controls, in physical units, in this order; they
            become the effect's :class:`~diffx.effects.base.ParamSpec` s.
        fixed: other attributes, set once (constructor keywords for built-in plugins,
            ``parameter_values`` for plugin files).

    Example (YAML)::

        class_path: diffx.effects.PedalboardEffect
        init_args:
          sample_rate: 44100
          plugin: Reverb
          parameters: {room_size: [0.0, 1.0, 0.5], wet_level: [0.0, 1.0, 0.33]}
          fixed: {dry_level: 0.4}

    Raises:
        ImportError: without pedalboard.
        ValueError: for an unknown plugin, an attribute the plugin lacks (the message lists
            the plugin's parameters), an attribute both controlled and fixed, or a bad range.
    """

    def __init__(
        self,
        sample_rate: float,
        plugin: str,
        parameters: Mapping[str, Sequence],
        fixed: Mapping[str, Any] | None = None,
    ) -> None:
        fixed = dict(fixed or {})
        if not isinstance(plugin, str):
            raise ValueError(f"PedalboardEffect: plugin must be a string, got {plugin!r}")
        if not isinstance(parameters, Mapping) or not parameters:
            raise ValueError(
                "PedalboardEffect: parameters must be a non-empty mapping {attribute: "
                f"[minimum, maximum, default]}}, got {parameters!r}"
            )
        owner = f"PedalboardEffect({plugin!r})"
        instance = _make_plugin(plugin, fixed)
        if getattr(instance, "is_instrument", False) and not getattr(instance, "is_effect", True):
            raise ValueError(f"{owner}: the plugin is an instrument, not an audio effect")
        available = plugin_parameter_names(instance)
        # (fixed was checked when the plugin was made: built-in constructors also take
        # read-only attributes such as Convolution's impulse_response_filename.)
        for name in parameters:
            if name not in available:
                raise ValueError(
                    f"{owner}: the plugin has no parameter {name!r}; its parameters are {available}"
                )
        both = sorted(set(parameters) & set(fixed))
        if both:
            raise ValueError(f"{owner}: {both} appear in both parameters and fixed")
        self.PARAMS = tuple(_spec_from_list(owner, n, b) for n, b in parameters.items())
        for spec in self.PARAMS:
            # Fail now, naming the attribute, if the plugin refuses the range's ends (out of
            # its own range, or not a number: an enum or string parameter belongs in fixed).
            for value in (spec.minimum, spec.maximum, spec.default):
                try:
                    setattr(instance, spec.name, value)
                except Exception as error:  # pedalboard raises ValueError, TypeError, ...
                    raise ValueError(
                        f"{owner}: the plugin refuses {spec.name} = {value:g} from "
                        f"parameters[{spec.name!r}]: {error}"
                    ) from error
        super().__init__(sample_rate)
        self.plugin = plugin
        self._setup([(plugin, fixed)], {name: (0, name, 1.0) for name in parameters})
        # The instance used for validation serves the constructing thread.
        pedalboard = _import_pedalboard()
        self._local.board = (pedalboard.Pedalboard([instance]), [instance])

    def extra_repr(self) -> str:
        return f"plugin={self.plugin!r}, {super().extra_repr()}"


class PedalboardCompressor(_PedalboardBoard):
    """pedalboard's ``Compressor`` (JUCE) then ``Gain``, with diffx Compressor's parameters.

    Parameters (names and ranges as :class:`diffx.effects.Compressor`, which has a knee too):
    ``threshold_db`` -80..0 dB (-12), ``ratio`` 1..20 log (2), ``attack_ms`` 0.1..100 ms log
    (1), ``release_ms`` 5..1000 ms log (45), ``makeup_gain_db`` -24..24 dB (0, applied by
    ``pedalboard.Gain``). pedalboard has no knee, so ``knee_db`` is absent: a controller sized
    for diffx's Compressor has one output more.

    Args:
        sample_rate: Hz.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
        time_convention: ``"diffx"`` (default): attack and release are diffx's 10%-90% rise
            times, written to pedalboard as ``t * 2 pi / ln 9`` (2.86 t) so both compressors
            smooth with the same pole; ``"pedalboard"``: written unchanged (JUCE's time
            constant ``tau = t / (2 pi)``).

    The two compressors still differ on transients: JUCE smooths the peak level before a hard
    knee, per channel; diffx smooths the gain in dB, channels linked
    (see :func:`diffx.functional.compressor`).
    """

    def __init__(
        self,
        sample_rate: float,
        param_ranges: Mapping[str, Sequence[float]] | None = None,
        time_convention: str = "diffx",
    ) -> None:
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(
                f"time_convention must be one of {TIME_CONVENTIONS}, got {time_convention!r}"
            )
        self.PARAMS = tuple(spec for spec in Compressor.PARAMS if spec.name != "knee_db")
        super().__init__(sample_rate, param_ranges)
        self.time_convention = time_convention
        time_factor = _JUCE_TIME_SCALE if time_convention == "diffx" else 1.0
        self._setup(
            [("Compressor", {}), ("Gain", {})],
            {
                "threshold_db": (0, "threshold_db", 1.0),
                "ratio": (0, "ratio", 1.0),
                "attack_ms": (0, "attack_ms", time_factor),
                "release_ms": (0, "release_ms", time_factor),
                "makeup_gain_db": (1, "gain_db", 1.0),
            },
        )
        _import_pedalboard()  # fail at construction, not at the first batch


class PedalboardParametricEQ(_PedalboardBoard):
    """pedalboard's ``LowShelfFilter``, four ``PeakFilter`` s and ``HighShelfFilter`` in series.

    Same parameter names and ranges as ``diffx.effects.ParametricEQ(sample_rate, n_bands=4)``
    (``low_shelf_freq_hz``, ``low_shelf_gain_db``, ``low_shelf_q``, ``band{i}_freq_hz``,
    ``band{i}_gain_db``, ``band{i}_q`` for i = 1..4, ``high_shelf_*``), so the two are
    interchangeable in a config. pedalboard's filters (JUCE ``IIR::Coefficients``) are the same
    RBJ-cookbook designs as diffx's, with coefficients and state in float32 (diffx uses
    float64), which moves low-frequency shelves by up to a few tenths of a dB.

    Args:
        sample_rate: Hz.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    N_BANDS = 4

    def __init__(
        self, sample_rate: float, param_ranges: Mapping[str, Sequence[float]] | None = None
    ) -> None:
        # Reuse diffx's specs (including their cap at 0.45 * sample_rate), so the ranges can
        # never drift apart.
        self.PARAMS = ParametricEQ(sample_rate, n_bands=self.N_BANDS).PARAMS
        super().__init__(sample_rate, param_ranges)
        sections = ["low_shelf", *(f"band{i}" for i in range(1, self.N_BANDS + 1)), "high_shelf"]
        plugins = (
            [("LowShelfFilter", {})]
            + [("PeakFilter", {})] * self.N_BANDS
            + [("HighShelfFilter", {})]
        )
        targets = {}
        for index, section in enumerate(sections):
            targets[f"{section}_freq_hz"] = (index, "cutoff_frequency_hz", 1.0)
            targets[f"{section}_gain_db"] = (index, "gain_db", 1.0)
            targets[f"{section}_q"] = (index, "q", 1.0)
        self._setup(plugins, targets)
        _import_pedalboard()
