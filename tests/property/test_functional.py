"""Property tests of the functional ops: any finite input a user may pass.

For every op with physical parameters, over generated audio (silence, DC, impulse, noise, sine,
square; 1 sample up; float32/64; batch 1 and 7; 1-2 channels) and sample rates of 8-96 kHz:

* inside the documented ranges (the ends included) the output and the gradients with respect to
  the audio and every tensor parameter are finite;
* a parameter beyond its range, NaN or Inf raises ``ValueError`` naming the argument the user
  passed;
* a parameter given as a Python float, a 0-d tensor or a ``(batch,)`` tensor gives the same
  output (the documented broadcasting).

The ranges below are those each op documents (its docstring and module constants): a failure
here means the op and its documentation disagree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import diffx.functional as F
from diffx.functional import delay as delay_ops
from diffx.functional import (
    distortion,
    dynamics,
    filters,
    gates,
    reverb,
    stereo,
    utility,
    varying,
)
from tests.property.strategies import FORMS, as_form, audio, sample_rate, value_in


@dataclass(frozen=True)
class Param:
    """A parameter's documented range; ``high`` may depend on the sample rate (Hz)."""

    name: str
    low: float
    high: float | Callable[[float], float]
    log: bool = False
    # Exclusive ends are approached to within this relative margin (float32 must resolve it).
    open_low: bool = False
    open_high: bool = False

    def bounds(self, sr: float) -> tuple[float, float]:
        high = self.high(sr) if callable(self.high) else self.high
        low = self.low
        if self.open_low:
            low = low + max(abs(low), abs(high)) * 1e-5
        if self.open_high:
            high = high - max(abs(low), abs(high)) * 1e-5
        return low, high

    def beyond(self, sr: float) -> list[float]:
        """Values a user may pass by mistake: past each end, NaN and Inf."""
        high = self.high(sr) if callable(self.high) else self.high
        span = max(abs(self.low), abs(high), 1.0)
        out = [math.nan, math.inf, -math.inf]
        if math.isfinite(self.low):
            out += [self.low - span, self.low - 1e-3 * span] + ([self.low] * self.open_low)
        if math.isfinite(high):
            out += [high + span, high + 1e-3 * span] + ([high] * self.open_high)
        return out


def nyquist(sr: float) -> float:
    return sr / 2


@dataclass(frozen=True, repr=False)
class Op:
    """An op under test: ``call(x, sample_rate, options, **params)``; options are drawn once."""

    name: str
    call: Callable
    params: tuple[Param, ...]
    options: st.SearchStrategy = st.just({})
    max_samples: int | None = None
    differentiable: bool = True
    # Parameters the op ignores under the drawn options (they receive no gradient).
    ignores: Callable[[dict], tuple[str, ...]] = lambda options: ()

    def __repr__(self) -> str:
        return f"Op({self.name})"


def _peq(x, sr, opts, **p):
    n_bands = opts["n_bands"]

    def bands(v):
        # A float or 0-d value is shared by the batch: an (n_bands,) tensor; (batch,) values
        # become (batch, n_bands).
        if isinstance(v, torch.Tensor):
            return v[:, None].expand(-1, n_bands) if v.dim() == 1 else v.expand(n_bands)
        return torch.full((n_bands,), float(v), dtype=x.dtype)

    return F.parametric_eq(
        x, sr, p["low_shelf_freq_hz"], p["low_shelf_gain_db"], bands(p["band_freqs_hz"]),
        bands(p["band_gains_db"]), bands(p["band_qs"]), p["high_shelf_freq_hz"],
        p["high_shelf_gain_db"], p["low_shelf_q"], p["high_shelf_q"],
    )  # fmt: skip


def _fdn(x, sr, opts, rt60_s, mix):
    n_bands = opts["n_bands"]
    if n_bands > 1:  # the same value in every band, as (batch, n_bands) or (1, n_bands)
        if isinstance(rt60_s, torch.Tensor):
            rt60_s = rt60_s.reshape(-1, 1).expand(-1, n_bands)
        else:
            rt60_s = torch.full((1, n_bands), float(rt60_s), dtype=x.dtype)
    return F.fdn_reverb(x, sr, rt60_s, mix, n_lines=4)


def _biquad(x, sr, opts, **p):
    sos = F.biquad(opts["filter_type"], p["freq_hz"], p["q"], sr, p["gain_db"], dtype=x.dtype)
    return F.sosfilt(x, sos[:, None, :])  # one section per item


def _one_section(p):
    """Per-item values of a one-section cascade: ``(batch, 1)`` (a 1-d tensor means sections)."""
    return {k: v[:, None] if isinstance(v, torch.Tensor) and v.dim() == 1 and k != "warp" else v
            for k, v in p.items()}  # fmt: skip


def _shaper(fn):
    def call(x, sr, opts, **p):
        return fn(x, **p, antialiasing=opts["antialiasing"])

    return call


FREQ = {"low": 0.0, "high": nyquist, "log": False, "open_low": True, "open_high": True}
Q = {"low": filters.MIN_Q, "high": filters.MAX_Q, "log": True}
EQ_GAIN = {"low": -filters.MAX_ABS_GAIN_DB, "high": filters.MAX_ABS_GAIN_DB}
TIME = {"low": dynamics.TIME_RANGE_MS[0], "high": dynamics.TIME_RANGE_MS[1], "log": True}

OPS = [
    Op("sosfilt_varying",
       lambda x, sr, o, **p: F.sosfilt_varying(x, F.biquad_trajectory(
           o["filter_type"], p["freq_hz"], p["q"], sr, p["gain_db"], dtype=x.dtype)[:, None]),
       (Param("freq_hz", **FREQ), Param("q", **Q), Param("gain_db", **EQ_GAIN)),
       options=st.fixed_dictionaries({"filter_type": st.sampled_from(F.FILTER_TYPES)}),
       ignores=lambda o: () if o["filter_type"] in ("peaking", "low_shelf", "high_shelf")
       else ("gain_db",)),
    Op("state_variable_filter",
       lambda x, sr, o, **p: F.state_variable_filter(x, sample_rate=sr, mode=o["mode"], **p),
       (Param("cutoff_hz", **FREQ), Param("q", **Q)),
       options=st.fixed_dictionaries({"mode": st.sampled_from(varying.SVF_MODES)})),
    Op("modulated_filter",
       lambda x, sr, o, **p: F.modulated_filter(x, sr, mode=o["mode"], **p),
       (Param("freq_hz", **FREQ), Param("q", **Q), Param("rate_hz", 0.0, nyquist),
        Param("depth_octaves", 0.0, varying.MAX_DEPTH_OCTAVES)),
       options=st.fixed_dictionaries({"mode": st.sampled_from(varying.SVF_MODES)})),
    Op("auto_wah", lambda x, sr, o, **p: F.auto_wah(x, sr, **p),
       (Param("min_freq_hz", **FREQ), Param("max_freq_hz", **FREQ),
        Param("sensitivity_db", -varying.MAX_ABS_SENSITIVITY_DB,
              varying.MAX_ABS_SENSITIVITY_DB),
        Param("q", **Q), Param("attack_ms", **TIME), Param("release_ms", **TIME),
        Param("mix", 0.0, 1.0))),
    Op("gain", lambda x, sr, o, **p: F.gain(x, **p),
       (Param("gain_db", -utility.MAX_ABS_GAIN_DB, utility.MAX_ABS_GAIN_DB),)),
    # pan takes mono (the first channel), stereo_width stereo (a mono input duplicated); the
    # harness compares shapes with the input's, so the first C output channels are checked
    Op("pan", lambda x, sr, o, **p: F.pan(x[:, :1], **p)[:, : x.shape[1]],
       (Param("pan_position", -1.0, 1.0),)),
    Op("stereo_width",
       lambda x, sr, o, **p: F.stereo_width(x[:, [0, -1]], **p)[:, : x.shape[1]],
       (Param("width", 0.0, stereo.MAX_WIDTH),)),
    Op("fractional_delay", lambda x, sr, o, **p: F.fractional_delay(x, sample_rate=sr, **p),
       (Param("delay_ms", 0.0, utility.MAX_DELAY_MS),)),
    Op("compressor", lambda x, sr, o, **p: F.compressor(x, sr, **p, backend=o["backend"]),
       (Param("threshold_db", *dynamics.THRESHOLD_RANGE_DB),
        Param("ratio", dynamics.MIN_RATIO, dynamics.MAX_RATIO, log=True),
        Param("attack_ms", **TIME), Param("release_ms", **TIME),
        Param("knee_db", *dynamics.KNEE_RANGE_DB),
        Param("makeup_gain_db", *dynamics.MAKEUP_RANGE_DB)),
       options=st.fixed_dictionaries({"backend": st.sampled_from(("auto", "torch"))})),
    Op("expander",
       lambda x, sr, o, **p: F.expander(x, sr, **p, link=o["link"], backend=o["backend"]),
       (Param("threshold_db", *dynamics.THRESHOLD_RANGE_DB),
        Param("ratio", *gates.EXPANDER_RATIO_RANGE, log=True),
        Param("attack_ms", **TIME), Param("release_ms", **TIME),
        Param("knee_db", *dynamics.KNEE_RANGE_DB),
        Param("makeup_gain_db", *dynamics.MAKEUP_RANGE_DB)),
       options=st.fixed_dictionaries({"backend": st.sampled_from(("auto", "torch")),
                                      "link": st.sampled_from(dynamics.LINKS)})),
    Op("noise_gate",
       lambda x, sr, o, **p: F.noise_gate(x, sr, **p, link=o["link"], backend=o["backend"]),
       (Param("threshold_db", *dynamics.THRESHOLD_RANGE_DB),
        Param("attack_ms", **TIME), Param("hold_ms", *gates.HOLD_RANGE_MS),
        Param("release_ms", **TIME), Param("range_db", *gates.RANGE_RANGE_DB),
        Param("ratio", *gates.EXPANDER_RATIO_RANGE, log=True),
        Param("knee_db", *dynamics.KNEE_RANGE_DB),
        Param("makeup_gain_db", *dynamics.MAKEUP_RANGE_DB)),
       options=st.fixed_dictionaries({"backend": st.sampled_from(("auto", "torch")),
                                      "link": st.sampled_from(dynamics.LINKS)}),
       max_samples=2**13),
    Op("limiter",
       lambda x, sr, o, **p: F.limiter(x, sr, **p, link=o["link"], backend=o["backend"]),
       (Param("threshold_db", *dynamics.THRESHOLD_RANGE_DB),
        Param("release_ms", **TIME), Param("lookahead_ms", *gates.LOOKAHEAD_RANGE_MS),
        Param("makeup_gain_db", *dynamics.MAKEUP_RANGE_DB)),
       options=st.fixed_dictionaries({"backend": st.sampled_from(("auto", "torch")),
                                      "link": st.sampled_from(dynamics.LINKS)})),
    Op("parametric_eq", _peq,
       (Param("low_shelf_freq_hz", **FREQ), Param("low_shelf_gain_db", **EQ_GAIN),
        Param("low_shelf_q", **Q), Param("band_freqs_hz", **FREQ),
        Param("band_gains_db", **EQ_GAIN), Param("band_qs", **Q),
        Param("high_shelf_freq_hz", **FREQ), Param("high_shelf_gain_db", **EQ_GAIN),
        Param("high_shelf_q", **Q)),
       options=st.fixed_dictionaries({"n_bands": st.integers(0, 3)}),
       ignores=lambda o: () if o["n_bands"] else ("band_freqs_hz", "band_gains_db", "band_qs")),
    Op("biquad+sosfilt", _biquad,
       (Param("freq_hz", **FREQ), Param("q", **Q), Param("gain_db", **EQ_GAIN)),
       options=st.fixed_dictionaries({"filter_type": st.sampled_from(F.FILTER_TYPES)}),
       ignores=lambda o: () if o["filter_type"] in ("peaking", "low_shelf", "high_shelf")
       else ("gain_db",)),
    Op("tanh_distortion", _shaper(F.tanh_distortion),
       (Param("drive_db", -distortion.MAX_ABS_DRIVE_DB, distortion.MAX_ABS_DRIVE_DB),),
       options=st.fixed_dictionaries({"antialiasing": st.sampled_from(distortion.ANTIALIASING)})),
    Op("soft_clip", _shaper(F.soft_clip),
       (Param("drive_db", -distortion.MAX_ABS_DRIVE_DB, distortion.MAX_ABS_DRIVE_DB),),
       options=st.fixed_dictionaries({"antialiasing": st.sampled_from(distortion.ANTIALIASING)})),
    Op("hard_clip", _shaper(F.hard_clip),
       (Param("threshold_db", distortion.MIN_THRESHOLD_DB, distortion.MAX_THRESHOLD_DB),),
       options=st.fixed_dictionaries({"antialiasing": st.sampled_from(distortion.ANTIALIASING)})),
    Op("allpass_cascade",
       lambda x, sr, o, **p: F.allpass_cascade(x, sr, "warped", **_one_section(p)),
       (Param("pole_radius", 0.0, 1.0, open_high=True), Param("freq_hz", 0.0, nyquist),
        Param("warp", -1.0, 1.0, open_low=True, open_high=True))),
    Op("convolution_reverb",
       lambda x, sr, o, **p: F.convolution_reverb(
           x, torch.linspace(1.0, 0.0, 64, dtype=x.dtype)[None, None], **p),
       (Param("mix", 0.0, 1.0),)),
    Op("feedback_delay", lambda x, sr, o, **p: F.feedback_delay(x, sr, **p),
       (Param("delay_ms", delay_ops.MIN_ECHO_DELAY_MS, delay_ops.MAX_ECHO_DELAY_MS, log=True),
        Param("feedback", -1.0, 1.0, open_low=True, open_high=True), Param("mix", 0.0, 1.0),
        Param("lowpass_hz", **FREQ), Param("highpass_hz", **FREQ))),
    Op("fdn_reverb", _fdn,
       (Param("rt60_s", delay_ops.MIN_FDN_RT60_S, delay_ops.MAX_FDN_RT60_S, log=True),
        Param("mix", 0.0, 1.0)),
       options=st.fixed_dictionaries({"n_bands": st.integers(1, delay_ops.MAX_BANDS)})),
    Op("noise_reverb",
       lambda x, sr, o, **p: F.noise_reverb(
           x, sr, **p, length_s=0.05, generator=torch.Generator().manual_seed(0)),
       (Param("rt60_s", reverb.MIN_RT60_S, reverb.MAX_RT60_S, log=True),
        Param("band_gains_db", -reverb.MAX_ABS_BAND_GAIN_DB, reverb.MAX_ABS_BAND_GAIN_DB),
        Param("mix", 0.0, 1.0)),
       max_samples=2**15),
]  # fmt: skip
OPS_BY_NAME = {op.name: op for op in OPS}


def _representable(value: float, dtype: torch.dtype, low: float, high: float) -> float:
    """``value`` rounded to ``dtype``, stepping back inside ``[low, high]`` if rounding left it."""
    t = torch.tensor(value, dtype=dtype)
    if float(t) > high:
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=dtype))
    if float(t) < low:
        t = torch.nextafter(t, torch.tensor(math.inf, dtype=dtype))
    return float(t)


@st.composite
def case(draw, op: Op, forms: bool = True):
    """Audio, sample rate, options and in-range parameter values (one per batch item)."""
    signal = draw(audio(max_samples=op.max_samples))
    sr = draw(sample_rate())
    options = draw(op.options)
    values = {}
    for p in op.params:
        low, high = p.bounds(sr)
        per_item = draw(st.lists(value_in(low, high, p.log), min_size=1, max_size=1))
        if draw(st.booleans()):  # differing per item
            per_item += draw(st.lists(value_in(low, high, p.log), min_size=signal.batch - 1,
                                      max_size=signal.batch - 1))  # fmt: skip
        else:
            per_item = per_item * signal.batch
        # Values the audio's dtype represents exactly, so a Python float and a tensor agree.
        values[p.name] = [_representable(v, signal.dtype, low, high) for v in per_item]
    chosen = {p.name: draw(st.sampled_from(FORMS)) for p in op.params} if forms else {}
    return signal, sr, options, values, chosen


def _build(values, forms, dtype, requires_grad=False):
    out = {}
    for name, vals in values.items():
        form = forms.get(name, "batch")
        if form != "batch" and len(set(vals)) > 1:
            form = "batch"  # values that differ per item can only be passed per item
        v = as_form(vals, form, dtype)
        if requires_grad and isinstance(v, torch.Tensor):
            v.requires_grad_(True)
        out[name] = v
    return out


@pytest.mark.parametrize("name", OPS_BY_NAME)
@given(data=st.data())
def test_in_range_finite_output_and_gradients(name, data):
    op = OPS_BY_NAME[name]
    signal, sr, options, values, forms = data.draw(case(op))
    x = signal.tensor().requires_grad_(op.differentiable)
    params = _build(values, forms, signal.dtype, requires_grad=op.differentiable)
    y = op.call(x, sr, options, **params)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool(torch.isfinite(y).all()), f"{op.name}: non-finite output"
    if not op.differentiable:
        return
    weights = torch.linspace(-1.0, 1.0, y.shape[-1], dtype=y.dtype)
    (y * weights).sum().backward()
    assert bool(torch.isfinite(x.grad).all()), f"{op.name}: non-finite gradient wrt x"
    for arg, v in params.items():
        if isinstance(v, torch.Tensor) and arg not in op.ignores(options):
            assert v.grad is not None, f"{op.name}: no gradient reaches {arg}"
            assert bool(torch.isfinite(v.grad).all()), f"{op.name}: non-finite gradient wrt {arg}"


def _as_seen(value: float, dtype: torch.dtype) -> float:
    return float(torch.tensor(value, dtype=dtype)) if math.isfinite(value) else value


def _inside(p: Param, value: float, sr: float) -> bool:
    """Whether ``value`` is inside ``p``'s documented range (its ends as documented)."""
    high = p.high(sr) if callable(p.high) else p.high
    above_low = value > p.low if p.open_low else value >= p.low
    below_high = value < high if p.open_high else value <= high
    return above_low and below_high


@pytest.mark.parametrize("name", OPS_BY_NAME)
@given(data=st.data())
def test_beyond_range_names_the_argument(name, data):
    op = OPS_BY_NAME[name]
    signal, sr, options, values, forms = data.draw(case(op))
    bad = data.draw(st.sampled_from(op.params))
    bad_value = data.draw(st.sampled_from(bad.beyond(sr)))
    assume(not (bad.name.startswith("band_") and options.get("n_bands") == 0))  # no bands
    # The value as the op sees it: a float32 tensor may round back onto a range end.
    assume(not _inside(bad, _as_seen(bad_value, signal.dtype), sr))
    values[bad.name] = [bad_value] * signal.batch
    params = _build(values, forms, signal.dtype)
    with pytest.raises(ValueError, match=bad.name):
        op.call(signal.tensor(), sr, options, **params)


@pytest.mark.parametrize("name", OPS_BY_NAME)
@given(data=st.data())
def test_float_0d_and_batch_parameters_agree(name, data):
    op = OPS_BY_NAME[name]
    signal, sr, options, values, forms = data.draw(case(op))
    x = signal.tensor()
    reference = op.call(x, sr, options, **_build(values, {}, signal.dtype))
    mixed = op.call(x, sr, options, **_build(values, forms, signal.dtype))
    torch.testing.assert_close(mixed, reference, rtol=0, atol=0, equal_nan=False)
