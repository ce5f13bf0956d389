"""The core effects as modules (normalized parameters in, physical units inside)."""

from __future__ import annotations

import torch

from diffx import functional as F
from diffx.effects.base import Effect, ParamSpec
from diffx.effects.base import frequency_spec as _freq_spec
from diffx.functional import distortion as _distortion
from diffx.functional import dynamics as _dynamics
from diffx.functional import filters as _filters
from diffx.functional import reverb as _reverb
from diffx.functional import utility as _utility

# The ranges the functional ops accept (ParamSpec.limits): every spec below, and every
# ``param_ranges`` override, must lie inside them.
_GAIN_LIMITS = (-_utility.MAX_ABS_GAIN_DB, _utility.MAX_ABS_GAIN_DB)
_EQ_GAIN_LIMITS = (-_filters.MAX_ABS_GAIN_DB, _filters.MAX_ABS_GAIN_DB)
_Q_LIMITS = (_filters.MIN_Q, _filters.MAX_Q)
_OPEN = (True, True)

# Frequency ranges of the parametric EQ bands, from DeepAFx-ST's PEQ (Steinmetz et al.,
# JAES 2022, processors/dsp/peq.py; see shared ANCHORS.md): low shelf, four peaking bands,
# high shelf. Gains +-24 dB and Q 0.1-10 come from the same source.
_PEQ_BAND_RANGES_HZ = ((200.0, 2000.0, 400.0), (800.0, 4000.0, 1000.0),
                       (2000.0, 8000.0, 4000.0), (4000.0, 10800.0, 8000.0))  # fmt: skip


class Gain(Effect):
    """Volume change in dB."""

    PARAMS = (ParamSpec("gain_db", -24.0, 24.0, 0.0, "dB", limits=_GAIN_LIMITS),)

    def process(self, x, gain_db):
        return F.gain(x, gain_db)


class Delay(Effect):
    """Exact fractional delay (band-limited, frequency domain)."""

    PARAMS = (ParamSpec("delay_ms", 0.0, 20.0, 0.0, "ms", limits=(0.0, _utility.MAX_DELAY_MS)),)

    def process(self, x, delay_ms):
        return F.fractional_delay(x, delay_ms, self.sample_rate)


class Compressor(Effect):
    """Feed-forward compressor with soft knee and attack/release ballistics on the gain (dB).

    ``link``: how channels share the detector (``"mean"`` power, the loudest ``"max"``, or
    ``"none"``: each channel compressed alone), see :func:`diffx.functional.compressor`.

    Ranges follow DeepAFx-ST (Steinmetz et al., JAES 2022; shared ANCHORS.md), except the
    make-up gain, narrowed from +-48 dB to +-24 dB so random parameters stay listenable
    (widen it with ``param_ranges``).
    """

    PARAMS = (
        ParamSpec("threshold_db", -80.0, 0.0, -12.0, "dB", limits=_dynamics.THRESHOLD_RANGE_DB),
        ParamSpec("ratio", 1.0, 20.0, 2.0, "", "log",
                  limits=(_dynamics.MIN_RATIO, _dynamics.MAX_RATIO)),
        ParamSpec("attack_ms", 0.1, 100.0, 1.0, "ms", "log", limits=_dynamics.TIME_RANGE_MS),
        ParamSpec("release_ms", 5.0, 1000.0, 45.0, "ms", "log", limits=_dynamics.TIME_RANGE_MS),
        ParamSpec("knee_db", 0.0, 12.0, 6.0, "dB", limits=_dynamics.KNEE_RANGE_DB),
        ParamSpec("makeup_gain_db", -24.0, 24.0, 0.0, "dB", limits=_dynamics.MAKEUP_RANGE_DB),
    )

    def __init__(self, sample_rate, link: str = "mean", param_ranges=None):
        super().__init__(sample_rate, param_ranges)
        # Stereo linking of the detector: "mean" power, the "max" channel, or "none".
        self.link = _dynamics.check_link(link)

    def process(self, x, **p):
        return F.compressor(x, self.sample_rate, **p, link=self.link)


DISTORTION_KINDS = {"tanh": F.tanh_distortion, "soft_clip": F.soft_clip}


class Distortion(Effect):
    """Drive into a saturating waveshaper, then output gain.

    Args:
        sample_rate: Hz.
        kind: ``"tanh"`` or ``"soft_clip"`` (cubic).
        antialiasing: ``None`` or ``"adaa1"`` (first-order antiderivative anti-aliasing; it
            delays the output by half a sample).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    PARAMS = (
        ParamSpec("drive_db", 0.0, 36.0, 0.0, "dB",
                  limits=(-_distortion.MAX_ABS_DRIVE_DB, _distortion.MAX_ABS_DRIVE_DB)),
        ParamSpec("output_gain_db", -24.0, 6.0, 0.0, "dB", limits=_GAIN_LIMITS),
    )

    def __init__(self, sample_rate, kind="tanh", antialiasing=None, param_ranges=None):
        if kind not in DISTORTION_KINDS:
            raise ValueError(f"kind must be one of {sorted(DISTORTION_KINDS)}, got {kind!r}")
        super().__init__(sample_rate, param_ranges)
        self.kind = kind
        self.antialiasing = antialiasing

    def process(self, x, drive_db, output_gain_db):
        shaped = DISTORTION_KINDS[self.kind](x, drive_db, antialiasing=self.antialiasing)
        return F.gain(shaped, output_gain_db)


class NoiseReverb(Effect):
    """Multiband noise-shaped reverb: an RT60 and a gain per band, and a wet/dry mix.

    Args:
        sample_rate: Hz.
        n_bands: filterbank bands of the impulse response.
        length_s: impulse response length in seconds (should exceed the longest RT60 / 2
            for the tail to decay by 30 dB before it is cut).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(self, sample_rate, n_bands: int = 6, length_s: float = 1.5, param_ranges=None):
        if n_bands < 1:
            raise ValueError(f"n_bands must be >= 1, got {n_bands}")
        self.n_bands = n_bands
        self.length_s = float(length_s)
        self.PARAMS = (
            *(ParamSpec(f"band{i}_rt60_s", 0.05, 3.0, 0.5, "s", "log",
                        limits=(_reverb.MIN_RT60_S, _reverb.MAX_RT60_S))
              for i in range(n_bands)),
            *(ParamSpec(f"band{i}_gain_db", -24.0, 0.0, 0.0, "dB",
                        limits=(-_reverb.MAX_ABS_BAND_GAIN_DB, _reverb.MAX_ABS_BAND_GAIN_DB))
              for i in range(n_bands)),
            ParamSpec("mix", 0.0, 1.0, 0.0, "", limits=(0.0, 1.0)),
        )
        super().__init__(sample_rate, param_ranges)

    def process(self, x, mix, **bands):
        rt60 = torch.stack([bands[f"band{i}_rt60_s"] for i in range(self.n_bands)], 1)
        gains = torch.stack([bands[f"band{i}_gain_db"] for i in range(self.n_bands)], 1)
        return F.noise_reverb(
            x, self.sample_rate, rt60, gains, mix, length_s=self.length_s, n_bands=self.n_bands
        )


class ParametricEQ(Effect):
    """Low shelf, ``n_bands`` peaking bands and high shelf (exact IIR, per batch item).

    Args:
        sample_rate: Hz.
        n_bands: number of peaking bands between the shelves (4 gives DeepAFx-ST's 6-band EQ).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.
    """

    def __init__(self, sample_rate: float, n_bands: int = 4, param_ranges=None) -> None:
        if n_bands < 0:
            raise ValueError(f"n_bands must be >= 0, got {n_bands}")
        self.n_bands = n_bands
        if n_bands == 4:
            band_ranges = _PEQ_BAND_RANGES_HZ
        else:
            # Geometric split of 200 Hz - 10.8 kHz, each band reaching an octave into its
            # neighbours so the bands can cover the spectrum together.
            edges = torch.logspace(
                torch.log10(torch.tensor(200.0)), torch.log10(torch.tensor(10800.0)), n_bands + 1
            ).tolist()
            band_ranges = [
                (edges[i] / 2, edges[i + 1] * 2, (edges[i] * edges[i + 1]) ** 0.5)
                for i in range(n_bands)
            ]
        sr = float(sample_rate)
        specs = [
            _freq_spec("low_shelf_freq_hz", 20.0, 200.0, 100.0, sr),
            ParamSpec("low_shelf_gain_db", -24.0, 24.0, 0.0, "dB", limits=_EQ_GAIN_LIMITS),
            ParamSpec("low_shelf_q", 0.1, 10.0, 0.707, "", "log", limits=_Q_LIMITS),
        ]
        for i, (lo, hi, default) in enumerate(band_ranges, start=1):
            specs += [
                _freq_spec(f"band{i}_freq_hz", lo, hi, default, sr),
                ParamSpec(f"band{i}_gain_db", -24.0, 24.0, 0.0, "dB", limits=_EQ_GAIN_LIMITS),
                ParamSpec(f"band{i}_q", 0.1, 10.0, 0.707, "", "log", limits=_Q_LIMITS),
            ]
        specs += [
            _freq_spec("high_shelf_freq_hz", 4000.0, 10800.0, 8000.0, sr),
            ParamSpec("high_shelf_gain_db", -24.0, 24.0, 0.0, "dB", limits=_EQ_GAIN_LIMITS),
            ParamSpec("high_shelf_q", 0.1, 10.0, 0.707, "", "log", limits=_Q_LIMITS),
        ]
        self.PARAMS = tuple(specs)
        super().__init__(sample_rate, param_ranges)

    def _eq_kwargs(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        def bands(suffix):
            return torch.stack([p[f"band{i}_{suffix}"] for i in range(1, self.n_bands + 1)], 1)

        return dict(
            low_shelf_freq_hz=p["low_shelf_freq_hz"],
            low_shelf_gain_db=p["low_shelf_gain_db"],
            low_shelf_q=p["low_shelf_q"],
            band_freqs_hz=bands("freq_hz"),
            band_gains_db=bands("gain_db"),
            band_qs=bands("q"),
            high_shelf_freq_hz=p["high_shelf_freq_hz"],
            high_shelf_gain_db=p["high_shelf_gain_db"],
            high_shelf_q=p["high_shelf_q"],
        )

    def process(self, x, **p):
        return F.parametric_eq(x, self.sample_rate, **self._eq_kwargs(p))

    def sos(self, params: torch.Tensor) -> torch.Tensor:
        """The ``(batch, n_bands + 2, 6)`` sections for normalized ``params`` (for plots)."""
        return F.parametric_eq_sos(self.sample_rate, **self._eq_kwargs(self.denormalize(params)))


class AllpassCascade(Effect):
    """Allpass cascade of Bargum et al.: phase changes only, magnitude untouched.

    Args:
        sample_rate: Hz.
        kind: one of :data:`diffx.functional.ALLPASS_KINDS`.
        n_second: second-order sections (pole radius and centre frequency each).
        n_first: first-order sections (one coefficient each).
        stretch: delay ``M`` of stretched first-order sections (``"warped_stretched"``).
        param_ranges: overrides, see :class:`~diffx.effects.base.Effect`.

    The ranges keep every pole strictly inside the unit circle (R <= 0.999, |a| <= 0.999).
    """

    def __init__(self, sample_rate, kind="second_order", n_second=4, n_first=0, stretch=None,
                 param_ranges=None):  # fmt: skip
        if kind not in F.ALLPASS_KINDS:
            raise ValueError(f"kind must be one of {F.ALLPASS_KINDS}, got {kind!r}")
        self.kind, self.n_second, self.n_first, self.stretch = kind, n_second, n_first, stretch
        sr = float(sample_rate)
        specs = []
        for i in range(n_second):
            specs += [
                ParamSpec(f"section{i}_pole_radius", 0.0, 0.999, 0.5, "", limits=(0.0, 1.0),
                          limits_open=(False, True)),
                _freq_spec(f"section{i}_freq_hz", 20.0, 20000.0, 1000.0, sr),
            ]
        specs += [ParamSpec(f"first{i}_coeff", -0.999, 0.999, 0.0, "", limits=(-1.0, 1.0),
                            limits_open=_OPEN) for i in range(n_first)]  # fmt: skip
        if kind.startswith("warped"):
            specs.append(ParamSpec("warp", -0.999, 0.999, 0.0, "", limits=(-1.0, 1.0),
                                   limits_open=_OPEN))  # fmt: skip
        self.PARAMS = tuple(specs)
        super().__init__(sample_rate, param_ranges)

    def _kwargs(self, p: dict[str, torch.Tensor]) -> dict:
        kwargs = {}
        if self.n_second:
            kwargs["pole_radius"] = torch.stack(
                [p[f"section{i}_pole_radius"] for i in range(self.n_second)], 1
            )
            kwargs["freq_hz"] = torch.stack(
                [p[f"section{i}_freq_hz"] for i in range(self.n_second)], 1
            )
        if self.n_first:
            kwargs["first_order_coeff"] = torch.stack(
                [p[f"first{i}_coeff"] for i in range(self.n_first)], 1
            )
        if "warp" in p:
            kwargs["warp"] = p["warp"]
        if self.stretch is not None:
            kwargs["stretch"] = self.stretch
        return kwargs

    def process(self, x, **p):
        return F.allpass_cascade(x, self.sample_rate, self.kind, **self._kwargs(p))

    def sos(self, params: torch.Tensor) -> torch.Tensor:
        """Sections in scipy's layout for normalized ``params`` (for plots and export)."""
        return F.allpass_sos(self.sample_rate, self.kind, **self._kwargs(self.denormalize(params)))
