"""Time-varying filter effects: an envelope-controlled auto-wah and an LFO-modulated filter,
both on the TPT state-variable filter (:mod:`diffx.functional.varying`)."""

from __future__ import annotations

from diffx import functional as F
from diffx._validation import check_sample_rate
from diffx.effects.base import Effect, ParamSpec
from diffx.effects.base import frequency_spec as _freq_spec
from diffx.functional import dynamics as _dynamics
from diffx.functional import filters as _filters
from diffx.functional import varying as _varying

_Q_LIMITS = (_filters.MIN_Q, _filters.MAX_Q)


class AutoWah(Effect):
    """Envelope-following wah: a band-pass SVF whose centre rises with the input's level.

    The envelope (attack/release ballistics on the channel-linked RMS level) times the
    sensitivity moves the centre geometrically from ``min_freq_hz`` (silence) towards
    ``max_freq_hz`` (loud); see :func:`diffx.functional.auto_wah`. Mono or multichannel: the
    channels share one envelope and one sweep.

    Args:
        sample_rate: Hz.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(self, sample_rate: float, param_ranges=None) -> None:
        sr = check_sample_rate(sample_rate)  # before the ranges that depend on it
        time = _dynamics.TIME_RANGE_MS
        self.PARAMS = (
            _freq_spec("min_freq_hz", 100.0, 1000.0, 350.0, sr),
            _freq_spec("max_freq_hz", 1000.0, 5000.0, 2500.0, sr),
            ParamSpec("sensitivity_db", -12.0, 36.0, 12.0, "dB",
                      limits=(-_varying.MAX_ABS_SENSITIVITY_DB, _varying.MAX_ABS_SENSITIVITY_DB)),
            ParamSpec("q", 0.5, 10.0, 3.0, "", "log", limits=_Q_LIMITS),
            ParamSpec("attack_ms", 0.5, 50.0, 5.0, "ms", "log", limits=time),
            ParamSpec("release_ms", 10.0, 500.0, 80.0, "ms", "log", limits=time),
            ParamSpec("mix", 0.0, 1.0, 1.0, "", limits=(0.0, 1.0)),
        )  # fmt: skip
        super().__init__(sample_rate, param_ranges)

    def process(self, x, **p):
        return F.auto_wah(x, self.sample_rate, **p)


class ModulatedFilter(Effect):
    """A state-variable filter swept by a sine LFO, ``depth_octaves`` either side of
    ``freq_hz`` (:func:`diffx.functional.modulated_filter`).

    Args:
        sample_rate: Hz.
        mode: ``"lowpass"``, ``"bandpass"`` or ``"highpass"``.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(self, sample_rate: float, mode: str = "lowpass", param_ranges=None) -> None:
        if mode not in _varying.SVF_MODES:
            raise ValueError(f"mode must be one of {_varying.SVF_MODES}, got {mode!r}")
        self.mode = mode
        sr = check_sample_rate(sample_rate)
        self.PARAMS = (
            _freq_spec("freq_hz", 100.0, 5000.0, 1000.0, sr),
            ParamSpec("q", 0.5, 10.0, 0.7071067811865476, "", "log", limits=_Q_LIMITS),
            ParamSpec("rate_hz", 0.05, 10.0, 1.0, "Hz", "log", limits=(0.0, sr / 2)),
            ParamSpec("depth_octaves", 0.0, 3.0, 1.0, "octaves",
                      limits=(0.0, _varying.MAX_DEPTH_OCTAVES)),
        )  # fmt: skip
        super().__init__(sample_rate, param_ranges)

    def process(self, x, **p):
        return F.modulated_filter(x, self.sample_rate, mode=self.mode, **p)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, " + super().extra_repr()
