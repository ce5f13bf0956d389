"""Echo and feedback-delay-network reverb as effects (normalized parameters in)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffx.effects.base import Effect, ParamSpec, frequency_spec
from diffx.functional import delay as _delay

_OPEN = (True, True)


class FeedbackDelay(Effect):
    """Echo: a fractional delay line with feedback through a low-pass and a high-pass filter
    (Butterworth) in the loop, mixed with the dry signal (:func:`diffx.functional.feedback_delay`).

    Every channel is delayed on its own (mono, stereo or more).

    Args:
        sample_rate: Hz.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(self, sample_rate: float, param_ranges=None) -> None:
        sr = float(sample_rate)
        self.PARAMS = (
            ParamSpec("delay_ms", 10.0, 1000.0, 250.0, "ms", "log",
                      limits=(_delay.MIN_ECHO_DELAY_MS, _delay.MAX_ECHO_DELAY_MS)),
            ParamSpec("feedback", 0.0, 0.9, 0.3, "", limits=(-1.0, 1.0), limits_open=_OPEN),
            frequency_spec("lowpass_hz", 1000.0, 16000.0, 6000.0, sr),
            frequency_spec("highpass_hz", 20.0, 1000.0, 50.0, sr),
            ParamSpec("mix", 0.0, 1.0, 0.0, "", limits=(0.0, 1.0)),
        )  # fmt: skip
        super().__init__(sample_rate, param_ranges)

    def process(self, x, delay_ms, feedback, lowpass_hz, highpass_hz, mix):
        return _delay.feedback_delay(x, self.sample_rate, delay_ms, feedback, mix,
                                     lowpass_hz=lowpass_hz, highpass_hz=highpass_hz)  # fmt: skip


class FDNReverb(Effect):
    """Feedback delay network reverb with an RT60 per band and a wet/dry mix
    (:func:`diffx.functional.fdn_reverb`).

    With ``output_channels=1`` every input channel is reverberated on its own. With
    ``output_channels=2`` (stereo reverb from two decorrelated output taps) the input must be
    mono or stereo: a stereo input is summed to mono for the reverb send and keeps its dry
    channels; other channel counts raise ``ValueError``.

    Args:
        sample_rate: Hz.
        n_lines: delay lines (default lengths: distinct primes of 10-30 ms,
            :func:`diffx.functional.fdn_delays`).
        n_bands: RT60 bands, 1 to 3 (low to high; shelving crossovers at 250 Hz and 4 kHz
            for 3, 1 kHz for 2), one ``band{i}_rt60_s`` parameter each.
        output_channels: 1 or 2.
        mixing: ``"householder"`` or ``"hadamard"`` (``n_lines`` a power of two).
        delays: line lengths in samples, instead of ``n_lines``.
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(
        self,
        sample_rate: float,
        n_lines: int = 8,
        n_bands: int = 3,
        output_channels: int = 1,
        mixing: str = "householder",
        delays: Sequence[int] | None = None,
        param_ranges=None,
    ) -> None:
        if isinstance(n_bands, bool) or n_bands not in range(1, _delay.MAX_BANDS + 1):
            raise ValueError(f"n_bands must be 1..{_delay.MAX_BANDS}, got {n_bands!r}")
        if output_channels not in (1, 2):
            raise ValueError(f"output_channels must be 1 or 2, got {output_channels!r}")
        if mixing not in _delay.MIXING:
            raise ValueError(f"mixing must be one of {_delay.MIXING}, got {mixing!r}")
        self.n_bands, self.output_channels, self.mixing = n_bands, output_channels, mixing
        self.delays = (list(delays) if delays is not None
                       else _delay.fdn_delays(n_lines, float(sample_rate)))  # fmt: skip
        if mixing == "hadamard":
            _delay.mixing_matrix(mixing, len(self.delays))  # raises for N not a power of 2
        rt60_limits = (_delay.MIN_FDN_RT60_S, _delay.MAX_FDN_RT60_S)
        self.PARAMS = (
            *(ParamSpec(f"band{i}_rt60_s", 0.1, 5.0, 1.0, "s", "log", limits=rt60_limits)
              for i in range(n_bands)),
            ParamSpec("mix", 0.0, 1.0, 0.0, "", limits=(0.0, 1.0)),
        )  # fmt: skip
        super().__init__(sample_rate, param_ranges)

    def process(self, x, mix, **bands):
        rt60 = torch.stack([bands[f"band{i}_rt60_s"] for i in range(self.n_bands)], dim=1)
        return _delay.fdn_reverb(
            x, self.sample_rate, rt60, mix, delays=self.delays, mixing=self.mixing,
            output_channels=self.output_channels,
        )  # fmt: skip
