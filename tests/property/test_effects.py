"""Property tests of the effect modules: normalized parameters anywhere in [0, 1] (the ends
included), at the default ranges and at the widest ranges their functional ops accept.

* The output and the gradients with respect to the audio and the parameters are finite.
* A normalized parameter outside [0, 1], NaN or Inf raises ``ValueError`` naming it.
* Every parameter declares the range its op enforces (``ParamSpec.limits``), and an override
  beyond it is refused at construction, naming the parameter.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from diffx.effects import (
    AllpassCascade,
    AutoWah,
    Compressor,
    Delay,
    Distortion,
    EffectChain,
    Expander,
    FDNReverb,
    FeedbackDelay,
    Gain,
    Limiter,
    ModulatedFilter,
    NoiseGate,
    NoiseReverb,
    Pan,
    ParametricEQ,
    StereoWidth,
)
from diffx.functional import ALLPASS_KINDS
from tests.property.strategies import audio, sample_rate


def _allpass(sr: float, kind: str) -> AllpassCascade:
    return AllpassCascade(sr, kind, n_second=0 if kind == "first_order" else 2,
                          n_first=0 if kind == "second_order" else 2)  # fmt: skip


FACTORIES = {
    "auto_wah": lambda sr: AutoWah(sr),
    "modulated_filter_bandpass": lambda sr: ModulatedFilter(sr, mode="bandpass"),
    "modulated_filter_highpass": lambda sr: ModulatedFilter(sr, mode="highpass"),
    "gain": lambda sr: Gain(sr),
    "delay": lambda sr: Delay(sr),
    "compressor": lambda sr: Compressor(sr),
    "expander": lambda sr: Expander(sr),
    "expander_unlinked": lambda sr: Expander(sr, link="none"),
    "noise_gate": lambda sr: NoiseGate(sr),
    "noise_gate_max_link": lambda sr: NoiseGate(sr, link="max"),
    "limiter": lambda sr: Limiter(sr),
    "limiter_no_lookahead": lambda sr: Limiter(sr, lookahead_ms=0.0, link="mean"),
    "chain_gate_compressor_limiter": lambda sr: EffectChain([NoiseGate(sr), Compressor(sr),
                                                            Limiter(sr)]),
    "distortion_tanh": lambda sr: Distortion(sr, "tanh"),
    "distortion_soft_adaa": lambda sr: Distortion(sr, "soft_clip", antialiasing="adaa1"),
    "noise_reverb": lambda sr: NoiseReverb(sr, n_bands=3, length_s=0.05),
    "feedback_delay": lambda sr: FeedbackDelay(sr),
    "fdn_reverb": lambda sr: FDNReverb(sr, n_lines=4, n_bands=3),
    "fdn_reverb_stereo": lambda sr: FDNReverb(sr, n_lines=4, n_bands=2, output_channels=2),
    "parametric_eq": lambda sr: ParametricEQ(sr),
    "parametric_eq_1band": lambda sr: ParametricEQ(sr, n_bands=1),
    **{f"allpass_{kind}": functools.partial(_allpass, kind=kind) for kind in ALLPASS_KINDS},
    "chain_eq_compressor": lambda sr: EffectChain([ParametricEQ(sr), Compressor(sr)]),
    "pan": lambda sr: Pan(sr),
    "stereo_width": lambda sr: StereoWidth(sr),
    "chain_pan_width": lambda sr: EffectChain([Gain(sr), Pan(sr), StereoWidth(sr)]),
}  # fmt: skip


def _effects(module):
    return list(module.effects) if isinstance(module, EffectChain) else [module]


def _input_channels(module) -> tuple[int, ...]:
    """Channel counts the effect or chain takes: those of its first effect that names any
    (effects with ``CHANNELS = None`` keep the channel count)."""
    wanted = [e.CHANNELS for e in _effects(module) if e.CHANNELS is not None]
    return (wanted[0],) if wanted else (1, 2)


def _widest(module, sr: float):
    """The same effect with every range widened to the limits its op accepts."""
    rebuilt = []
    for effect in _effects(module):
        ranges = {}
        for spec in effect.param_specs:
            low, high = spec.limits
            low_open, high_open = spec.limits_open
            span = high - low
            low = low + 1e-6 * span if low_open else low
            high = high - 1e-6 * span if high_open else high
            if spec.scale == "log" and low <= 0:
                low = 1e-6 * high
            ranges[spec.name] = (low, high)
        kwargs = {k: getattr(effect, k) for k in ("kind", "antialiasing", "n_bands", "length_s",
                                                  "n_second", "n_first", "stretch", "mode")
                  if hasattr(effect, k)}  # fmt: skip
        rebuilt.append(type(effect)(sr, param_ranges=ranges, **kwargs))
    return rebuilt[0] if len(rebuilt) == 1 else EffectChain(rebuilt)


@st.composite
def normalized(draw, n_params: int, batch: int) -> torch.Tensor:
    """``(batch, n_params)`` in [0, 1]: the ends themselves or uniform."""
    values = draw(st.lists(st.one_of(st.sampled_from((0.0, 1.0)), st.floats(0.0, 1.0)),
                           min_size=n_params * batch, max_size=n_params * batch))  # fmt: skip
    return torch.tensor(values, dtype=torch.float64).reshape(batch, n_params)


def _run(effect, x: torch.Tensor, params: torch.Tensor):
    """Output and gradients (wrt audio, wrt parameters) of a weighted sum of the output."""
    x = x.detach().clone().requires_grad_(True)
    params = params.detach().clone().requires_grad_(True)
    y = effect(x, params)
    (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum().backward()
    return y.detach(), x.grad, params.grad


# float32 promises finite results where the exact values fit in float32: where the float64
# output or gradient comes within this factor of float32's largest value (a 300 dB signal
# through several +120 dB bands), float32 cannot represent the answer and is not judged.
FLOAT32_HEADROOM = 1e-3


@pytest.mark.parametrize("widest", [False, True], ids=["default_ranges", "widest_ranges"])
@pytest.mark.parametrize("name", FACTORIES)
@given(data=st.data())
def test_effect_output_and_gradients_are_finite(name, widest, data):
    sr = data.draw(sample_rate())
    effect = FACTORIES[name](sr)
    if widest:
        effect = _widest(effect, sr)
    signal = data.draw(audio(max_samples=4096, channels=_input_channels(effect)))
    x = signal.tensor()
    params = data.draw(normalized(effect.parameter_size(), signal.batch)).to(signal.dtype)
    if signal.dtype == torch.float32:
        exact = _run(effect, x.double(), params.double())
        assert all(bool(torch.isfinite(t).all()) for t in exact), f"{name}: non-finite in float64"
        largest = max(float(t.abs().max()) for t in exact)
        if not largest < torch.finfo(torch.float32).max * FLOAT32_HEADROOM:
            event("float32 not judged: the exact values exceed its range")
            return
    y, x_grad, params_grad = _run(effect, x, params)
    # Batch and length are kept; the channel count may change (a pan makes stereo).
    assert (y.shape[0], y.shape[-1]) == (x.shape[0], x.shape[-1]), f"{name}: {y.shape}"
    assert bool(torch.isfinite(y).all()), f"{name}: non-finite output"
    assert bool(torch.isfinite(x_grad).all()), f"{name}: non-finite gradient wrt x"
    assert bool(torch.isfinite(params_grad).all()), f"{name}: non-finite gradient wrt params"


@pytest.mark.parametrize("name", FACTORIES)
@given(data=st.data())
def test_normalized_parameter_outside_unit_interval_names_it(name, data):
    effect = FACTORIES[name](48000.0)
    params = effect.default_parameters(2, dtype=torch.float64).clone()
    column = data.draw(st.integers(0, effect.parameter_size() - 1))
    params[1, column] = data.draw(st.sampled_from((-1e-3, 1.001, 5.0, -math.inf, math.nan)))
    names = effect.param_names
    # The chain's names carry the effect's prefix; the effect names the bare parameter.
    bare = names[column].split(".")[-1]
    with pytest.raises(ValueError, match=bare if math.isfinite(params[1, column]) else "NaN|Inf"):
        effect(torch.zeros(2, _input_channels(effect)[0], 64, dtype=torch.float64), params)


@pytest.mark.parametrize("name", FACTORIES)
def test_every_parameter_declares_the_range_its_op_accepts(name):
    for effect in _effects(FACTORIES[name](44100.0)):
        for spec in effect.param_specs:
            assert spec.limits is not None, f"{type(effect).__name__}.{spec.name}"


@pytest.mark.parametrize(
    "factory, name, bounds",
    [(Compressor, "threshold_db", (-200.0, 0.0)), (Compressor, "knee_db", (0.0, 500.0)),
     (Expander, "ratio", (1.0, 200.0)), (NoiseGate, "range_db", (-300.0, 0.0)),
     (NoiseGate, "hold_ms", (1.0, 20_000.0)), (Limiter, "release_ms", (1e-4, 100.0)),
     (Gain, "gain_db", (-24.0, 300.0)), (ParametricEQ, "band1_q", (1e-4, 10.0)),
     (ParametricEQ, "high_shelf_freq_hz", (4000.0, 22050.0)), (Delay, "delay_ms", (-1.0, 5.0))],
)  # fmt: skip
def test_param_range_override_beyond_the_ops_limits_is_refused(factory, name, bounds):
    with pytest.raises(ValueError, match=rf"ParamSpec '{name}': range .* leaves the accepted"):
        factory(44100.0, param_ranges={name: bounds})
