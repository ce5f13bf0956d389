"""Expander, noise gate and look-ahead limiter as effects (see :mod:`diffx.functional.gates`).

Each has a ``link`` constructor argument (``"mean"``, ``"max"`` or ``"none"``, see
:func:`diffx.functional.dynamics.run_linked`); the ParamSpecs' ``limits`` are the ranges the
functional ops accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from diffx.effects.base import Effect, ParamSpec
from diffx.functional import dynamics as _dynamics
from diffx.functional import gates as _gates

_THRESHOLD = _dynamics.THRESHOLD_RANGE_DB
_TIME = _dynamics.TIME_RANGE_MS
_MAKEUP = _dynamics.MAKEUP_RANGE_DB


class _Linked(Effect):
    """An effect whose functional op takes ``link``."""

    DEFAULT_LINK = "mean"

    def __init__(
        self,
        sample_rate: float,
        link: str | None = None,
        param_ranges: Mapping[str, Sequence[float]] | None = None,
    ):
        super().__init__(sample_rate, param_ranges)
        self.link = _dynamics.check_link(self.DEFAULT_LINK if link is None else link)


class Expander(_Linked):
    """Downward expander (:func:`diffx.functional.gates.expander`).

    Ranges: threshold -80..0 dB and times as the compressor's (DeepAFx-ST, ANCHORS.md); ratio
    1..10 (past 10 the expander acts as a gate, which :class:`NoiseGate` models with a floor).

    Args:
        sample_rate: Hz.
        link: stereo linking of the detector (default ``"mean"``).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    PARAMS = (
        ParamSpec("threshold_db", -80.0, 0.0, -40.0, "dB", limits=_THRESHOLD),
        ParamSpec("ratio", 1.0, 10.0, 2.0, "", "log", limits=_gates.EXPANDER_RATIO_RANGE),
        ParamSpec("attack_ms", 0.1, 100.0, 1.0, "ms", "log", limits=_TIME),
        ParamSpec("release_ms", 5.0, 1000.0, 100.0, "ms", "log", limits=_TIME),
        ParamSpec("knee_db", 0.0, 12.0, 6.0, "dB", limits=_dynamics.KNEE_RANGE_DB),
        ParamSpec("makeup_gain_db", -24.0, 24.0, 0.0, "dB", limits=_MAKEUP),
    )

    def process(self, x, **p):
        return _gates.expander(x, self.sample_rate, link=self.link, **p)


class NoiseGate(_Linked):
    """Noise gate with hold (:func:`diffx.functional.gates.noise_gate`).

    ``hold_ms`` is rounded to whole samples and gets no gradient (a controller learns nothing
    about it through autodiff; fix it with ``param_ranges`` or train it with SPSA).

    Args:
        sample_rate: Hz.
        link: stereo linking of the detector (default ``"mean"``).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    PARAMS = (
        ParamSpec("threshold_db", -80.0, -10.0, -50.0, "dB", limits=_THRESHOLD),
        ParamSpec("attack_ms", 0.1, 50.0, 1.0, "ms", "log", limits=_TIME),
        ParamSpec("hold_ms", 1.0, 500.0, 20.0, "ms", "log", limits=_gates.HOLD_RANGE_MS),
        ParamSpec("release_ms", 5.0, 1000.0, 100.0, "ms", "log", limits=_TIME),
        ParamSpec("range_db", -80.0, 0.0, -60.0, "dB", limits=_gates.RANGE_RANGE_DB),
        ParamSpec("ratio", 2.0, 100.0, 10.0, "", "log", limits=_gates.EXPANDER_RATIO_RANGE),
    )

    def process(self, x, **p):
        return _gates.noise_gate(x, self.sample_rate, link=self.link, **p)


class Limiter(_Linked):
    """Look-ahead peak limiter (:func:`diffx.functional.gates.limiter`).

    The look-ahead is a constructor argument, not a parameter: it sets the latency (the output
    is delayed by ``round(lookahead_ms * sample_rate / 1000)`` samples, see ``latency``) and
    gets no gradient.

    Args:
        sample_rate: Hz.
        lookahead_ms: look-ahead (and attack ramp) in ms, in [0, 1000].
        link: stereo linking of the detector (default ``"max"``: the ceiling holds on every
            channel).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    DEFAULT_LINK = "max"
    PARAMS = (
        ParamSpec("threshold_db", -24.0, 0.0, -1.0, "dB", limits=_THRESHOLD),
        ParamSpec("release_ms", 5.0, 1000.0, 100.0, "ms", "log", limits=_TIME),
        ParamSpec("makeup_gain_db", 0.0, 24.0, 0.0, "dB", limits=_MAKEUP),
    )

    def __init__(
        self,
        sample_rate: float,
        lookahead_ms: float = 5.0,
        link: str | None = None,
        param_ranges: Mapping[str, Sequence[float]] | None = None,
    ):
        low, high = _gates.LOOKAHEAD_RANGE_MS
        if not low <= float(lookahead_ms) <= high:
            raise ValueError(f"lookahead_ms must lie in [{low}, {high}], got {lookahead_ms!r}")
        super().__init__(sample_rate, link, param_ranges)
        self.lookahead_ms = float(lookahead_ms)

    @property
    def latency(self) -> int:
        """The delay of the output in samples."""
        return round(self.lookahead_ms * self.sample_rate * 1e-3)

    def process(self, x, **p):
        return _gates.limiter(
            x, self.sample_rate, lookahead_ms=self.lookahead_ms, link=self.link, **p
        )
